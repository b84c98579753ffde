"""`download-models` (also `python download_models.py`): dispatches to the commands in cli/.

`download-models org/name` and `download-models --all` mean `download-models download ...`. A command's
module is imported only when it runs (or --help lists it), so start-up stays fast.
"""

from __future__ import annotations

import importlib

import click

# command name -> module of cli/ that defines it as `command`
COMMANDS = {name: f"cli.{name}" for name in ("download", "list", "env", "lock", "verify", "push")}
DEFAULT_COMMAND = "download"


class Dispatcher(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        return importlib.import_module(COMMANDS[name]).command

    def parse_args(self, ctx, args):
        if args and args[0] not in COMMANDS and args[0] not in ("--help", "-h", "--version"):
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


@click.group(cls=Dispatcher, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="runpod-model-manager")
def cli():
    """Download the models of your projects (or any model by ID) from Hugging Face and ModelScope into one
    cache, in each library's native layout, ready to load offline on RunPod pods and Serverless workers.

    \b
    download-models --all                      every model of every project
    download-models --project NAME             one project's models
    download-models org/name [hf:|ms:]id@rev   one-off models
    download-models push --to s3://VOLUME_ID --datacenter EU-RO-1 --all   fill a network volume, no pod
    """


def main():
    cli(prog_name="download-models")


if __name__ == "__main__":
    main()
