"""`download-models prune [--older-than 7d]`: remove what no model needs any more, with the bytes freed by kind."""

from __future__ import annotations

import json
import re
import sys

import click

from cli import options
from runpod_model_manager.cache import resolve_cache_root
from runpod_model_manager.errors import UserError
from runpod_model_manager.reporting import Reporter, human_bytes

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _age(ctx, param, value: str) -> float:
    match = _AGE.match(value.strip().lower())
    if match is None:
        raise click.BadParameter(f"{value!r} is not an age: give a number and s, m, h, d or w, e.g. 7d or 12h.")
    return float(match[1]) * _UNIT[match[2]]


@click.command()
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    callback=_age,
    help="Partial, unreferenced and lock files untouched for this long go (s, m, h, d, w).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (asked only on a terminal).")
@options.local_options
@options.handle_errors
def command(older_than, dry_run, yes, cache_dir, lock_file, json_output, quiet, verbose):
    """Remove Hugging Face revisions no ref, lock file entry or project points to, blobs no revision uses,
    partial downloads (ours, huggingface_hub's, ModelScope's) and lock files nobody holds, and our records
    of models no longer present. What another process is downloading is left alone."""
    from runpod_model_manager.lockfile import LockFile
    from runpod_model_manager.volume import KINDS

    cache = resolve_cache_root(cache_dir)
    if not cache.path.is_dir():
        raise UserError(f"there is no cache at {cache.path}; give the right one with --cache-dir or MODEL_CACHE_DIR.")
    volume = options.volume(cache)
    lock = LockFile.load(lock_file)
    keep = lock.commits() if lock else set()
    for project in options.projects((), Reporter()):
        keep |= {(s.source, s.repo_id, s.revision) for s in project.model_specs() if s.revision}
    freed = volume.prune(older_than, keep, dry_run=True)
    if not dry_run and freed.total and not yes:
        options.confirm(_lines(freed, KINDS, "would free", quiet=False), "Remove them?")
    if not dry_run:
        freed = volume.prune(older_than, keep)
    if json_output:
        kinds = {kind: {"count": freed.count.get(kind, 0), "bytes": freed.bytes.get(kind, 0)} for kind in KINDS}
        click.echo(
            json.dumps({"dry_run": dry_run, "freed": kinds, "total_bytes": freed.total, "skipped": freed.skipped})
        )
    else:
        for line in _lines(freed, KINDS, "would free" if dry_run else "freed", quiet):
            options.emit(line)
    sys.exit(options.EXIT_OK)


def _lines(freed, kinds, verb: str, quiet: bool) -> list[str]:
    lines = []
    if not quiet:
        for kind in kinds:
            count, size = freed.count.get(kind, 0), human_bytes(freed.bytes.get(kind, 0))
            lines.append(f"{kind:<20} {count:>6} {size:>10}")
        lines += [f"left alone: {line}" for line in freed.skipped]
    return [*lines, f"{verb} {human_bytes(freed.total)}"]
