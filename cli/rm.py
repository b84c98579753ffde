"""`download-models rm MODEL... [--revision R]`: remove models (or one revision) from the cache."""

from __future__ import annotations

import json
import sys

import click

from cli import options
from runpod_model_manager.cache import resolve_cache_root
from runpod_model_manager.errors import ModelError, UserError
from runpod_model_manager.reporting import human_bytes
from runpod_model_manager.specs import parse_model_spec


@click.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--revision", help="Only this revision (commit, branch or tag) and the blobs no other revision uses.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (asked only on a terminal).")
@options.local_options
@options.handle_errors
def command(models, revision, dry_run, yes, cache_dir, lock_file, json_output, quiet, verbose):
    """Remove models from the cache, in any hub's layout, with the bytes freed.

    A model another process is downloading is refused (its lock is held); nothing being written is removed.
    """
    cache = resolve_cache_root(cache_dir)
    if not cache.path.is_dir():
        raise UserError(f"there is no cache at {cache.path}; give the right one with --cache-dir or MODEL_CACHE_DIR.")
    specs = [parse_model_spec(text) for text in models]
    options.check_sources({spec.source for spec in specs})
    volume = options.volume(cache)
    targets = [(spec, revision or spec.revision) for spec in specs]
    plan, failed = _run(volume, targets, dry_run=True)
    if not dry_run and plan and not yes:
        lines = [f"will remove {label} ({human_bytes(size)})" for label, size in plan]
        options.confirm(lines, f"Remove {'it' if len(plan) == 1 else 'them'} ({human_bytes(sum(s for _, s in plan))})?")
    if not dry_run:
        plan, failed = _run(volume, targets, dry_run=False)
    verb = "would remove" if dry_run else "removed"
    if json_output:
        removed = [{"model": label, "bytes": size} for label, size in plan]
        click.echo(json.dumps({"dry_run": dry_run, "removed": removed, "failed": failed}, indent=2))
    else:
        for label, size in plan:
            if not quiet:
                options.emit(f"{verb} {label} ({human_bytes(size)})")
        freed = "would free" if dry_run else "freed"
        options.emit(f"{freed} {human_bytes(sum(s for _, s in plan))} ({len(plan)} of {len(targets)} removed)")
        for line in failed:
            options.emit(f"FAILED {line}", err=True)
    sys.exit(options.EXIT_FAILED if failed else options.EXIT_OK)


def _run(volume, targets, dry_run: bool) -> tuple[list[tuple[str, int]], list[str]]:
    done, failed = [], []
    for spec, revision in targets:
        label = f"{spec.source}:{spec.repo_id}" + (f"@{revision}" if revision else "")
        try:
            done.append((label, volume.rm(spec.source, spec.repo_id, revision, dry_run=dry_run)))
        except ModelError as exc:
            failed.append(str(exc))
    return done, failed
