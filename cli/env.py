"""`download-models env`: the export lines a consumer needs to load this cache offline."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from cli import options
from runpod_model_manager.cache import resolve_cache_root


@click.command()
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Cache root (default: see README).")
@options.handle_errors
def command(cache_dir):
    """Print the `export` lines a consumer needs to load this cache offline."""
    from downloaders.factory import downloader_classes

    cache = resolve_cache_root(cache_dir)
    click.echo(f"# cache root: {cache.path} ({cache.reason})")
    click.echo(f"export MODEL_CACHE_DIR={shlex.quote(str(cache.path))}")
    for cls in downloader_classes().values():
        for name, value in cls.env(cache.path).items():
            click.echo(f"export {name}={shlex.quote(str(value))}")
    click.echo("export HF_HUB_OFFLINE=1")
    from runpod_model_manager.offline import runpod_hf_cache

    click.echo("# RunPod's cached model (a Serverless endpoint's \"Model\" setting, one model per endpoint) is in")
    click.echo(f"# {runpod_hf_cache()}: handler.py looks there after this cache; other code can set")
    click.echo(f"# HF_HUB_CACHE={runpod_hf_cache()} to load it (see SERVERLESS_DEPLOYMENT.md)")
