"""The `download-models` command (also `python download_models.py`): thin click commands over ModelManager.

Heavy hub libraries are imported only when a command talks to a hub, so `--help`, `list` and `env` start fast.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from runpod_model_manager.cache import CacheRoot, resolve_cache_root
from runpod_model_manager.errors import UserError
from runpod_model_manager.reporting import Reporter, human_bytes, make_reporter
from runpod_model_manager.specs import ModelSpec, normalize_source, parse_model_spec

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class DefaultToDownload(click.Group):
    """`download-models org/name` and `download-models --all` mean `download-models download ...`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["download", *args]
        return super().parse_args(ctx, args)


def handle_errors(func):
    """Every error a user can cause ends as one sentence and exit code 2; -v adds the traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            if kwargs.get("verbose"):
                logging.exception("details")
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted; run the same command again to resume.", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug: still one line, with the traceback behind -v
            if kwargs.get("verbose"):
                logging.exception("details")
            click.echo(f"error: unexpected {type(exc).__name__}: {exc} (run with -v for details)", err=True)
            sys.exit(EXIT_FAILED)

    return wrapper


def common_options(func):
    options = [
        click.option("--cache-dir", type=click.Path(path_type=Path), help="Cache root (default: see README)."),
        click.option("--token", help="Hub token (default: HF_TOKEN, MODELSCOPE_API_TOKEN). Never printed."),
        click.option("--lock-file", type=click.Path(path_type=Path), default=Path("models.lock"), show_default=True),
        click.option("--json", "json_output", is_flag=True, help="Print a machine-readable result on stdout."),
        click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary."),
        click.option("-v", "--verbose", is_flag=True, help="Retries, waits and tracebacks too."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _projects(names: tuple[str, ...], reporter: Reporter):
    from projects.loader import load_projects

    projects = load_projects(warn=reporter.warn)
    unknown = [n for n in names if n not in projects]
    if unknown:
        raise UserError(f"unknown project '{unknown[0]}': registered projects are {', '.join(projects) or 'none'}.")
    return [projects[n] for n in names] if names else list(projects.values())


def _open_cache(cache_dir: Path | None, reporter: Reporter, create: bool = True) -> CacheRoot:
    cache = resolve_cache_root(cache_dir)
    reporter.info(f"cache: {cache.path} ({cache.reason})")
    if create:
        try:
            cache.state.mkdir(parents=True, exist_ok=True)
            probe = cache.state / ".write-test"
            probe.write_text("")
            probe.unlink(missing_ok=True)  # another run on the same cache may have removed it
        except OSError as exc:
            raise UserError(
                f"cannot write to the cache directory {cache.path} ({exc.strerror}); "
                "choose another with --cache-dir or MODEL_CACHE_DIR."
            ) from None
    return cache


def _manager(cache, token, lock_file, frozen, reporter, workers=None, connections=None):
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
    return ModelManager(cache, token=token, lock=lock, frozen=frozen, settings=settings, progress=reporter, **tuning)


@click.group(cls=DefaultToDownload, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="runpod-model-manager")
def cli():
    """Download the models of your projects (or any model by ID) from Hugging Face and ModelScope into one
    cache, in each library's native layout, ready to load offline on RunPod pods and Serverless workers.

    \b
    download-models --all                      every model of every project
    download-models --project NAME             one project's models
    download-models org/name [hf:|ms:]id@rev   one-off models
    """


@cli.command()
@click.argument("models", nargs=-1)
@click.option("--all", "all_projects", is_flag=True, help="Every model of every registered project.")
@click.option("--project", "project_names", multiple=True, help="Only this project's models (repeatable).")
@click.option(
    "--source", default="auto", show_default=True, help="Hub for model IDs: auto, huggingface (hf), modelscope (ms)."
)
@click.option("--revision", help="Branch, tag or commit for the given models.")
@click.option("--include", multiple=True, help="Only files matching this glob (repeatable).")
@click.option("--exclude", multiple=True, help="Skip files matching this glob (repeatable).")
@click.option("--dry-run", is_flag=True, help="Show what would be downloaded (files, bytes); write nothing.")
@click.option("--force", is_flag=True, help="Download again even what is complete.")
@click.option("--frozen", is_flag=True, help="Use only the lock file's commits; fail if it is missing or stale.")
@click.option("--workers", type=click.IntRange(1, 64), help="Files fetched at once (default: 16).")
@click.option("--connections", type=click.IntRange(1, 64), help="Connections per large file (default: 8).")
@common_options
@handle_errors
def download(
    models,
    all_projects,
    project_names,
    source,
    revision,
    include,
    exclude,
    dry_run,
    force,
    frozen,
    workers,
    connections,
    cache_dir,
    token,
    lock_file,
    json_output,
    quiet,
    verbose,
):
    """Download models (the default command)."""
    if verbose:
        logging.basicConfig(level=logging.INFO)
    if not (models or all_projects or project_names):
        raise UserError("nothing to download: give model IDs, --all or --project NAME (see --help).")
    source = normalize_source(source)
    reporter = make_reporter(json_output, quiet, verbose)
    specs: list[ModelSpec] = []
    if all_projects or project_names:
        for project in _projects(project_names, reporter):
            specs.extend(project.model_specs())
    for text in models:
        specs.append(parse_model_spec(text, source).with_overrides(revision, include, exclude))
    _check_sources({source} - {"auto"} | {spec.source for spec in specs})
    cache = _open_cache(cache_dir, reporter, create=not dry_run)
    manager = _manager(cache, token, lock_file, frozen, reporter, workers, connections)
    try:
        results = manager.download(specs, dry_run=dry_run, force=force)
    finally:
        reporter.close()
    _print_results(results, dry_run, json_output, quiet)
    sys.exit(EXIT_FAILED if any(r.status == "failed" for r in results) else EXIT_OK)


def _check_sources(sources: set[str]) -> None:
    from downloaders.factory import get_downloader_class

    for name in sorted(sources):
        get_downloader_class(name)


def _print_results(results, dry_run, json_output, quiet):
    if json_output:
        click.echo(json.dumps({"dry_run": dry_run, "models": [r.as_json() for r in results]}, indent=2))
        return
    failed = [r for r in results if r.status == "failed"]
    for r in results:
        if r.status == "failed":
            continue
        if dry_run:
            what = f"{len(r.missing_files)} of {r.files} files, {human_bytes(r.missing_bytes)} to download"
            if not quiet:
                click.echo(f"would download {r.spec} @ {r.commit[:12]}: {what}")
                for path in r.missing_files:
                    click.echo(f"    {path}")
        elif not quiet:
            verb = "downloaded" if r.status == "downloaded" else "complete  "
            click.echo(f"{verb} {r.spec} @ {r.commit[:12]} ({r.files} files, {human_bytes(r.total_bytes)}) -> {r.path}")
    if dry_run and not quiet:
        total = sum(r.missing_bytes for r in results if r.status != "failed")
        click.echo(f"total to download: {human_bytes(total)}")
    for r in failed:
        click.echo(f"FAILED {r.spec}: {r.error}", err=True)
    if failed:
        click.echo(f"{len(failed)} of {len(results)} models failed.", err=True)


@cli.command("list")
@common_options
@handle_errors
def list_command(cache_dir, token, lock_file, json_output, quiet, verbose):
    """Projects, their models, and whether each is complete in the cache (no network)."""
    from runpod_model_manager.lockfile import LockFile
    from runpod_model_manager.manager import ModelManager

    reporter = Reporter()
    cache = resolve_cache_root(cache_dir)
    manager = ModelManager(cache, lock=LockFile.load(lock_file))
    rows = []
    for project in _projects((), reporter):
        for spec in project.model_specs():
            model, missing, on_disk = manager.local_state(spec)
            if model is None:
                state = "not downloaded"
            elif missing:
                state = f"incomplete ({len(missing)} of {len(model.selected)} files missing)"
            else:
                state = "complete"
            rows.append(
                {
                    "project": project.name,
                    "source": spec.source,
                    "model": spec.repo_id,
                    "revision": spec.revision,
                    "commit": model.commit if model else None,
                    "status": state,
                    "bytes_on_disk": on_disk,
                }
            )
    if json_output:
        click.echo(json.dumps({"cache": str(cache.path), "models": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cache: {cache.path} ({cache.reason})")
    for column in ("project", "source", "model", "revision", "status", "on disk"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["project"],
            row["source"],
            row["model"],
            row["revision"] or "default",
            row["status"],
            human_bytes(row["bytes_on_disk"]),
        )
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


@cli.command()
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Cache root (default: see README).")
def env(cache_dir):
    """Print the `export` lines a consumer needs to load this cache offline."""
    from downloaders.factory import downloader_classes

    cache = resolve_cache_root(cache_dir)
    click.echo(f"# cache root: {cache.path} ({cache.reason})")
    click.echo(f"export MODEL_CACHE_DIR={cache.path}")
    for cls in downloader_classes().values():
        for name, value in cls.env(cache.path).items():
            click.echo(f"export {name}={value}")
    click.echo("export HF_HUB_OFFLINE=1")


@cli.command()
@click.option("--project", "project_names", multiple=True, help="Only this project's models (repeatable).")
@click.option("--upgrade", is_flag=True, help="Re-resolve every model, even those already locked.")
@common_options
@handle_errors
def lock(project_names, upgrade, cache_dir, token, lock_file, json_output, quiet, verbose):
    """Pin every project model to an exact commit in the lock file."""
    from runpod_model_manager.lockfile import LockFile

    reporter = make_reporter(json_output, quiet, verbose)
    specs = [s for p in _projects(project_names, reporter) for s in p.model_specs()]
    cache = resolve_cache_root(cache_dir)
    manager = _manager(cache, token, lock_file, False, reporter)
    current = manager.lock or LockFile.empty(lock_file)
    manager.lock = None if upgrade else current
    failed = []
    for resolved in manager.resolve_all(specs, exact=True):
        if isinstance(resolved, Exception):
            failed.append(resolved)
        else:
            current.put(resolved)
    current.save()
    for exc in failed:
        click.echo(f"FAILED {exc}", err=True)
    if not quiet:
        click.echo(f"locked {len(specs) - len(failed)} models in {lock_file}")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@cli.command()
@click.argument("models", nargs=-1)
@click.option("--project", "project_names", multiple=True, help="Only this project's models (repeatable).")
@click.option("--repair", is_flag=True, help="Download again only the files that fail the check.")
@common_options
@handle_errors
def verify(models, project_names, repair, cache_dir, token, lock_file, json_output, quiet, verbose):
    """Re-hash downloaded files against the hub's checksums (default: every project model)."""
    from runpod_model_manager.verify import verify_models

    reporter = make_reporter(json_output, quiet, verbose)
    specs = [parse_model_spec(text) for text in models]
    if project_names or not models:
        specs += [s for p in _projects(project_names, reporter) for s in p.model_specs()]
    cache = _open_cache(cache_dir, reporter)
    manager = _manager(cache, token, lock_file, False, reporter)
    reports = verify_models(manager, specs)
    bad = [r for r in reports if r.problems]
    if repair and bad:
        for report in bad:
            report.remove_bad_files()
        results = manager.download([r.spec for r in bad])
        for report, result in zip(bad, results, strict=True):
            report.repaired = result.status != "failed"
            report.repair_error = result.error
    reporter.close()
    if json_output:
        click.echo(json.dumps({"models": [r.as_json() for r in reports]}, indent=2))
    else:
        for report in reports:
            click.echo(report.summary())
    unresolved = [r for r in bad if not r.repaired]
    sys.exit(EXIT_FAILED if unresolved else EXIT_OK)


def main():
    cli(prog_name="download-models")
