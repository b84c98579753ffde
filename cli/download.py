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
@click.option("--frozen", is_flag=True, help="Use only the lock file's commits; fail if it is missing or stale.")
@click.option("--workers", type=click.IntRange(1, 64), help="Files fetched at once (default: 16).")
@click.option("--connections", type=click.IntRange(1, 64), help="Connections per large file (default: 8).")
@options.common_options
@options.handle_errors
def command(
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
    reporter = make_reporter(json_output, quiet, verbose)
    selection = (models, all_projects, project_names, source, revision, include, exclude)
    specs = options.model_specs(*selection, reporter, verb="download")
    cache = options.open_cache(cache_dir, reporter, create=not dry_run)
    manager = options.manager(cache, token, lock_file, frozen, reporter, workers, connections)
    try:
        results = manager.download(specs, dry_run=dry_run, force=force)
    finally:
        reporter.close()
    _print_results(results, dry_run, json_output, quiet)
    sys.exit(options.EXIT_FAILED if any(r.status == "failed" for r in results) else options.EXIT_OK)


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
