"""`download-models list`: every model in the cache and every project model, its state and its size (no network)."""

from __future__ import annotations

import json
import shutil
import sys

import click

from cli import options
from runpod_model_manager.cache import resolve_cache_root
from runpod_model_manager.reporting import Reporter, human_bytes, printable
from runpod_model_manager.specs import ModelSpec

SIZES_ONLY = (
    "complete: every file is there with the size the hub published (contents not re-hashed: "
    "`download-models verify` checks them, `download --verify` re-hashes before trusting them)"
)


@click.command("list")
@options.local_options
@options.handle_errors
def command(cache_dir, lock_file, json_output, quiet, verbose):
    """Projects' models and every other model in the cache: state, size on disk, the total and the free space."""
    reporter = Reporter()
    cache = resolve_cache_root(cache_dir)
    manager = options.manager(cache, None, lock_file, False, reporter)
    volume = options.volume(cache)
    on_disk = {(m.source, m.repo_id): m for m in volume.models()}
    rows = []

    def add(project, spec: ModelSpec, size: int) -> None:
        model, missing, present = manager.local_state(spec)
        if model is None:
            state = "not downloaded"
        elif missing:
            state = f"incomplete ({len(missing)} of {len(model.selected)} files missing)"
        else:
            state = "complete"
        row = _row(project, spec.source, spec.repo_id, spec.revision, model and model.commit, state)
        rows.append(row | {"bytes_on_disk": present, "size_bytes": size})

    for project in options.projects((), reporter):
        for spec in project.model_specs():
            cached = on_disk.get((spec.source, spec.repo_id))
            add(project.name, spec, volume.size(cached) if cached else 0)
    listed = {(r["source"], r["model"]) for r in rows}
    for (source, repo_id), cached in sorted(on_disk.items()):
        if (source, repo_id) in listed:
            continue
        recorded = manager.records.refs(source, repo_id)  # the revisions this tool downloaded
        for name in recorded:
            add(None, ModelSpec(source, repo_id, name), volume.size(cached))
        if not recorded:  # another tool's download (hf download, modelscope download): sizes only
            revisions = ",".join(r.name[:12] for r in cached.revisions) or None
            rows.append(_row(None, source, repo_id, revisions, None, "no record: not checked"))
            rows[-1] |= {"bytes_on_disk": None, "size_bytes": volume.size(cached)}
    sizes = {(r["source"], r["model"]): r["size_bytes"] for r in rows}
    total = sum(sizes.values())
    partial = volume.partial_bytes()
    free = shutil.disk_usage(cache.path).free if cache.path.is_dir() else None
    if json_output:
        summary = {"total_bytes": total, "partial_bytes": partial, "free_bytes": free}
        click.echo(json.dumps({"cache": str(cache.path), "models": rows, **summary}, indent=2))
        return
    _table(cache, rows)
    free_text = f"{human_bytes(free)} free on its filesystem" if free is not None else "the cache does not exist"
    options.emit(
        f"total {human_bytes(total)} in {len(sizes)} models, partial downloads {human_bytes(partial)}; {free_text}"
    )
    if not quiet:
        options.emit(SIZES_ONLY)


def _row(project, source, model, revision, commit, status) -> dict:
    return {
        "project": project,
        "source": source,
        "model": model,
        "revision": revision,
        "commit": commit,
        "status": status,
    }


def _table(cache, rows) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=printable(f"cache: {cache.path} ({cache.reason})"))
    for column in ("project", "source", "model", "revision", "status", "size"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["project"] or "-",
            row["source"],
            row["model"],
            printable(row["revision"] or "default"),
            row["status"],
            human_bytes(row["size_bytes"]),
        )
    Console(width=200 if not sys.stdout.isatty() else None).print(table)
