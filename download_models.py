"""`download-models` (also `python download_models.py`): dispatches to the commands in cli/.

`download-models org/name` and `download-models --all` mean `download-models download ...`. A command's
module is imported only when it runs (or --help lists it), so start-up stays fast.
"""

from __future__ import annotations

import importlib
import sys

import click

# command name -> module of cli/ that defines it as `command`
COMMANDS = {name: f"cli.{name}" for name in ("download", "list", "env", "lock", "verify", "push", "rm", "prune")}
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
            args = self._with_command(ctx, args)
        return super().parse_args(ctx, args)

    def _with_command(self, ctx, args: list[str]) -> list[str]:
        """`--cache-dir X lock` runs `lock --cache-dir X`; anything else is a download, unless a bare word
        there is a command name or one typo away from one (`lst`), which is refused with what to type."""
        takes_value = {
            name
            for param in self.get_command(ctx, DEFAULT_COMMAND).params
            if isinstance(param, click.Option) and not param.is_flag
            for name in param.opts
        }
        words, skip = [], False
        for i, arg in enumerate(args):
            if skip or arg.startswith("-"):
                skip = not skip and arg in takes_value
                continue
            if arg in COMMANDS and not words:
                return [arg, *args[:i], *args[i + 1 :]]
            words.append(arg)
        for word in words:
            near = next((name for name in COMMANDS if _one_edit(word, name)), None)
            if word in COMMANDS or near:
                hint = f"`{word}` is a command: put it first" if word in COMMANDS else f"did you mean `{near}`?"
                click.echo(f"error: {hint} (to download a model named '{word}', write hf:{word})", err=True)
                sys.exit(2)
        return [DEFAULT_COMMAND, *args]


def _one_edit(word: str, name: str) -> bool:
    """`word` differs from `name` by one inserted, deleted, replaced or swapped character."""
    if word == name or abs(len(word) - len(name)) > 1:
        return False
    if len(word) == len(name):
        diff = [i for i, (a, b) in enumerate(zip(word, name, strict=True)) if a != b]
        return len(diff) == 1 or (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and word[diff[0]] == name[diff[1]]
            and word[diff[1]] == name[diff[0]]
        )
    short, long = sorted((word, name), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


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
    download-models list | rm MODEL | prune    what the cache holds; free space
    """


def main():
    cli(prog_name="download-models")


if __name__ == "__main__":
    main()
