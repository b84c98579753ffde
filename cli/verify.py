"""`download-models verify [--repair]`: re-hash what is on disk against the hub's checksums."""

from __future__ import annotations

import json
import sys

import click

from cli import options
from runpod_model_manager.reporting import make_reporter
from runpod_model_manager.specs import parse_model_spec


@click.command()
@click.argument("models", nargs=-1)
@click.option("--project", "project_names", multiple=True, help="Only this project's models (repeatable).")
@click.option("--repair", is_flag=True, help="Download again only the files that fail the check.")
@options.common_options
@options.handle_errors
def command(models, project_names, repair, cache_dir, token, lock_file, json_output, quiet, verbose):
    """Re-hash downloaded files against the hub's checksums (default: every project model)."""
    from runpod_model_manager.verify import verify_models

    reporter = make_reporter(json_output, quiet, verbose)
    specs = [parse_model_spec(text) for text in models]
    if project_names or not models:
        specs += [s for p in options.projects(project_names, reporter) for s in p.model_specs()]
    cache = options.open_cache(cache_dir, reporter, create=repair)  # checking only reads: a read-only cache will do
    manager = options.manager(cache, token, lock_file, False, reporter)
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
            for line in report.summary().splitlines():
                options.emit(line)
    unresolved = [r for r in bad if not r.repaired]
    sys.exit(options.EXIT_FAILED if unresolved else options.EXIT_OK)
