"""What the commands share: common options, one-line errors, and building a manager for a cache."""

from __future__ import annotations

import functools
import logging
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import click

from runpod_model_manager.cache import CacheRoot, resolve_cache_root
from runpod_model_manager.errors import UserError
from runpod_model_manager.layout import UnsafePathError, inside
from runpod_model_manager.reporting import Reporter, fit, printable
from runpod_model_manager.specs import ModelSpec, normalize_source, parse_model_spec

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# they log retries and warnings through handlers of their own; our one-line errors already say what matters
LIBRARY_LOGGERS = ("huggingface_hub", "modelscope", "modelscope_hub", "urllib3", "filelock")


def handle_errors(func):
    """Every error a user can cause ends as one sentence and exit code 2; -v adds the traceback and the
    libraries' own log lines, which are silent otherwise."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).disabled = not kwargs.get("verbose")
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            if kwargs.get("verbose"):
                logging.exception("details")
            click.echo(f"error: {printable(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted; run the same command again to resume.", err=True)
            sys.exit(130)
        except BrokenPipeError:  # the reader went away (`| head`): nothing more to say, as other tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            sys.exit(EXIT_FAILED)
        except Exception as exc:  # a bug: still one line, with the traceback behind -v
            if kwargs.get("verbose"):
                logging.exception("details")
            click.echo(
                f"error: unexpected {type(exc).__name__}: {printable(str(exc))} (run with -v for details)", err=True
            )
            sys.exit(EXIT_FAILED)

    return wrapper


_CACHE_DIR = click.option("--cache-dir", type=click.Path(path_type=Path), help="Cache root (default: see README).")
_TOKEN = click.option("--token", help="Hub token (default: HF_TOKEN, MODELSCOPE_API_TOKEN). Never printed.")
_LOCK_FILE = click.option(
    "--lock-file", type=click.Path(path_type=Path), default=Path("models.lock"), show_default=True
)
_OUTPUT = [
    click.option("--json", "json_output", is_flag=True, help="Print a machine-readable result on stdout."),
    click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary."),
    click.option("-v", "--verbose", is_flag=True, help="Retries, waits and tracebacks too."),
]


def _apply(func, options):
    for option in reversed(options):
        func = option(func)
    return func


def common_options(func):
    """--cache-dir, --token, --lock-file, --json, -q, -v: for commands that talk to a hub."""
    return _apply(func, [_CACHE_DIR, _TOKEN, _LOCK_FILE, *_OUTPUT])


def local_options(func):
    """--cache-dir, --lock-file, --json, -q, -v: for commands that only read or change the cache."""
    return _apply(func, [_CACHE_DIR, _LOCK_FILE, *_OUTPUT])


def emit(line: str = "", err: bool = False) -> None:
    """Print one line of a command's result: names escaped, folded to the terminal's width on a terminal."""
    click.echo(fit(line, sys.stderr if err else sys.stdout), err=err)


def confirm(plan: list[str], question: str) -> None:
    """On a terminal, show the plan and ask (on stderr); without one (scripts, CI) the command goes ahead."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return
    for line in plan:
        emit(line, err=True)
    if not click.confirm(question, default=False, err=True):
        raise UserError("nothing was removed.")


@dataclass(frozen=True)
class Selection:
    """What MODEL... | --all | --project NAME select, and what applies to the given IDs."""

    models: tuple[str, ...]
    all_projects: bool
    project_names: tuple[str, ...]
    source: str
    revision: str | None
    include: tuple[str, ...]
    exclude: tuple[str, ...]

    def specs(self, reporter: Reporter, verb: str) -> list[ModelSpec]:
        """The specs selected, their sources checked; none selected is a usage error."""
        if not (self.models or self.all_projects or self.project_names):
            raise UserError(f"nothing to {verb}: give model IDs, --all or --project NAME (see --help).")
        source = normalize_source(self.source)
        specs: list[ModelSpec] = []
        if self.all_projects or self.project_names:
            for project in projects(self.project_names, reporter):
                specs.extend(project.model_specs())
        for text in self.models:
            specs.append(parse_model_spec(text, source).with_overrides(self.revision, self.include, self.exclude))
        check_sources({source} - {"auto"} | {spec.source for spec in specs})
        return specs


def selection_options(func):
    """MODEL... | --all | --project NAME, --source, --revision, --include, --exclude, as `download` takes
    them: handed to the command as one `selection` (a Selection)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        selection = Selection(**{f.name: kwargs.pop(f.name) for f in fields(Selection)})
        return func(*args, selection=selection, **kwargs)

    return _apply(
        wrapper,
        [
            click.argument("models", nargs=-1),
            click.option("--all", "all_projects", is_flag=True, help="Every model of every registered project."),
            click.option("--project", "project_names", multiple=True, help="Only this project's models (repeatable)."),
            click.option(
                "--source",
                default="auto",
                show_default=True,
                help="Hub for model IDs: auto, huggingface (hf), modelscope (ms).",
            ),
            click.option("--revision", help="Branch, tag or commit for the given models."),
            click.option("--include", multiple=True, help="Only files matching this glob (repeatable)."),
            click.option("--exclude", multiple=True, help="Skip files matching this glob (repeatable)."),
        ],
    )


def projects(names: tuple[str, ...], reporter: Reporter):
    """The registered projects called `names` (all of them when none is named)."""
    from projects.loader import load_projects

    found = load_projects(warn=reporter.warn)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise UserError(f"unknown project '{unknown[0]}': registered projects are {', '.join(found) or 'none'}.")
    return [found[n] for n in names] if names else list(found.values())


def check_sources(sources: set[str]) -> None:
    """A clear error for an unknown source or one whose hub library is not installed."""
    from downloaders.factory import get_downloader_class

    for name in sorted(sources):
        get_downloader_class(name)


def open_cache(cache_dir: Path | None, reporter: Reporter, create: bool = True) -> CacheRoot:
    cache = resolve_cache_root(cache_dir)
    reporter.info(f"cache: {cache.path} ({cache.reason})")
    if create:
        try:
            cache.state.mkdir(parents=True, exist_ok=True)
            probe = inside(cache.path, cache.state / ".write-test")
            probe.write_text("")
            probe.unlink(missing_ok=True)  # another run on the same cache may have removed it
        except UnsafePathError as exc:
            raise UserError(f"{exc}; remove the symlink or choose another cache with --cache-dir.") from None
        except OSError as exc:
            raise UserError(
                f"cannot write to the cache directory {cache.path} ({exc.strerror}); "
                "choose another with --cache-dir or MODEL_CACHE_DIR."
            ) from None
    return cache


def manager(cache, token, lock_file, frozen, reporter, workers=None, connections=None):
    """A ModelManager over `cache` with the registered sources and the lock file, if there is one."""
    from downloaders.factory import get_downloader_class
    from runpod_model_manager.lockfile import LockFile
    from runpod_model_manager.manager import ModelManager
    from runpod_model_manager.transfer import EngineSettings

    lock = LockFile.load(lock_file)
    if frozen and lock is None:
        raise UserError(
            f"--frozen needs a lock file and {lock_file} does not exist; create it with `download-models lock`."
        )
    tuning = {"workers": workers} if workers else {}
    settings = EngineSettings(connections=connections) if connections else EngineSettings()
    return ModelManager(
        cache,
        get_downloader_class,
        token=token,
        lock=lock,
        frozen=frozen,
        settings=settings,
        progress=reporter,
        **tuning,
    )


def volume(cache: CacheRoot):
    """The Volume of `cache`, seen through every registered source."""
    from downloaders.factory import downloader_classes
    from runpod_model_manager.records import Records
    from runpod_model_manager.transfer import TransferEngine
    from runpod_model_manager.volume import Volume

    downloaders = [cls(cache.path) for cls in downloader_classes().values()]
    return Volume(cache, downloaders, Records(cache.state), TransferEngine(cache.state, root=cache.path))
