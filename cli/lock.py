"""`download-models lock`: pin every project model to an exact commit in models.lock."""

from __future__ import annotations

import sys

import click

from cli import options
from runpod_model_manager.cache import resolve_cache_root
from runpod_model_manager.reporting import make_reporter


@click.command()
@click.option("--project", "project_names", multiple=True, help="Only this project's models (repeatable).")
@click.option("--upgrade", is_flag=True, help="Re-resolve every model, even those already locked.")
@options.common_options
@options.handle_errors
def command(project_names, upgrade, cache_dir, token, lock_file, json_output, quiet, verbose):
    """Pin every project model to an exact commit in the lock file."""
    from runpod_model_manager.lockfile import LockFile

    reporter = make_reporter(json_output, quiet, verbose)
    specs = [s for p in options.projects(project_names, reporter) for s in p.model_specs()]
    cache = resolve_cache_root(cache_dir)
    manager = options.manager(cache, token, lock_file, False, reporter)
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
        options.emit(f"FAILED {exc}", err=True)
    click.echo(f"locked {len(specs) - len(failed)} models in {lock_file}")  # the summary, also with -q
    sys.exit(options.EXIT_FAILED if failed else options.EXIT_OK)
