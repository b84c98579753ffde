"""`download-models [download] MODEL... | --all | --project NAME`: the default command."""

from __future__ import annotations

import json
import logging
import sys

import click

from cli import options
from runpod_model_manager.reporting import human_bytes, make_reporter


@click.command()
@options.selection_options
@click.option("--dry-run", is_flag=True, help="Show what would be downloaded (files, bytes); write nothing.")
@click.option("--force", is_flag=True, help="Download again even what is complete.")
@click.option(
    "--verify", is_flag=True, help="Re-hash the files already on disk first; fetch again those that fail the check."
)
@click.option("--frozen", is_flag=True, help="Use only the lock file's commits; fail if it is missing or stale.")
@click.option(
    "--workers", type=click.IntRange(1, 64), help="Files fetched at once (default: adapts to the files, up to 64)."
)
@click.option("--connections", type=click.IntRange(1, 64), help="Connections per large file (default: 8).")
@options.common_options
@options.handle_errors
def command(
    selection,
    dry_run,
    force,
    verify,
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
    reporter = make_reporter(json_output, quiet, verbose)
    specs = selection.specs(reporter, verb="download")
    cache = options.open_cache(cache_dir, reporter, create=not dry_run)
    manager = options.manager(cache, token, lock_file, frozen, reporter, workers, connections)
    if manager.lock is not None and (pinned := len(specs) - len(manager.lock.missing(specs))):
        reporter.info(f"pinned by {lock_file} ({pinned} models); `download-models lock --upgrade` to move")
    try:
        results = manager.download(specs, dry_run=dry_run, force=force, verify=verify)
    finally:
        reporter.close()
    if verbose and (breakdown := manager.times.summary()):
        click.echo(breakdown, err=True)
    _print_results(results, dry_run, json_output, quiet)
    sys.exit(options.EXIT_FAILED if any(r.status == "failed" for r in results) else options.EXIT_OK)


def _name(r) -> str:
    """The spec, and the commit it resolved to when that says more than the spec itself."""
    return f"{r.spec} @ {r.commit[:12]}" if r.commit and r.commit != r.spec.revision else str(r.spec)


def _print_results(results, dry_run, json_output, quiet):
    if json_output:
        click.echo(json.dumps({"dry_run": dry_run, "models": [r.as_json() for r in results]}, indent=2))
        return
    failed = [r for r in results if r.status == "failed"]
    for r in results:
        if quiet or r.status == "failed":
            continue
        size = f"{r.files} files, {human_bytes(r.total_bytes)}"
        if dry_run and r.missing_files:
            what = f"{len(r.missing_files)} of {r.files} files, {human_bytes(r.missing_bytes)}"
            options.emit(f"would download {_name(r)}: {what}")
            for path in r.missing_files:
                options.emit(f"    {path}")
        elif dry_run:
            options.emit(f"complete       {_name(r)} ({size})")
        else:
            verb = "downloaded" if r.status == "downloaded" else "complete  "
            options.emit(f"{verb} {_name(r)} ({size}) -> {r.path}")
    options.emit(_summary(results, dry_run))
    for r in failed:
        options.emit(f"FAILED {r.spec}: {r.error}", err=True)
    if failed:
        options.emit(f"{len(failed)} of {len(results)} models failed.", err=True)


def _summary(results, dry_run) -> str:
    ok = [r for r in results if r.status != "failed"]
    models = f"{len(results)} model{'' if len(results) == 1 else 's'}"
    failed = f", {len(results) - len(ok)} failed" if len(ok) < len(results) else ""
    if dry_run:
        todo = [r for r in ok if r.missing_files]
        total = human_bytes(sum(r.missing_bytes for r in todo))
        return f"{models}: {len(ok) - len(todo)} complete, {len(todo)} to download ({total}){failed}"
    fetched = [r for r in ok if r.status == "downloaded"]
    moved = human_bytes(sum(r.transferred_bytes for r in fetched))
    return f"{models}: {len(ok) - len(fetched)} complete, {len(fetched)} downloaded ({moved}){failed}"
