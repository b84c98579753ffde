"""`download-models list`: projects, their models and whether each is complete in the cache (no network)."""

from __future__ import annotations

import json
import sys

import click

from cli import options
from runpod_model_manager.cache import resolve_cache_root
from runpod_model_manager.reporting import Reporter, human_bytes


@click.command("list")
@options.common_options
@options.handle_errors
def command(cache_dir, token, lock_file, json_output, quiet, verbose):
    """Projects, their models, and whether each is complete in the cache (no network)."""
    reporter = Reporter()
    cache = resolve_cache_root(cache_dir)
    manager = options.manager(cache, None, lock_file, False, reporter)
    rows = []
    for project in options.projects((), reporter):
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
