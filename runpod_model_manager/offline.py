"""Find downloaded models the way a consumer does: through the hub libraries' own offline lookup.

A Hugging Face model is looked up in our cache root first, then in RunPod's model cache: a Serverless
endpoint with a "Model" set gets that model (one per endpoint) from RunPod on the worker's disk at
/runpod-volume/huggingface-cache/hub, in the standard Hugging Face layout. RPMM_RUNPOD_HF_CACHE moves that
location (for tests, or a platform that puts it elsewhere).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .cache import resolve_cache_root
from .specs import ModelSpec

RUNPOD_HF_CACHE = Path("/runpod-volume/huggingface-cache/hub")


def runpod_hf_cache() -> Path:
    """Where RunPod puts an endpoint's cached model (a Hugging Face hub cache)."""
    return Path(os.environ.get("RPMM_RUNPOD_HF_CACHE") or RUNPOD_HF_CACHE)


def local_model_path(spec: ModelSpec, cache_root: Path | None = None) -> Path:
    """Directory of a downloaded model, found with the hub library in offline mode (no network)."""
    root = Path(cache_root) if cache_root else resolve_cache_root().path
    if spec.source == "huggingface":
        try:
            return _huggingface(spec, root / "huggingface" / "hub")
        except (OSError, ValueError):  # not in our cache: RunPod's, else this error
            if runpod_hf_cache().is_dir():
                with contextlib.suppress(OSError, ValueError):
                    return _runpod(spec)
            raise
    if spec.source == "modelscope":
        import modelscope_patch

        modelscope_patch.apply()
        from modelscope import snapshot_download

        return Path(
            snapshot_download(
                spec.repo_id,
                revision=spec.revision,
                cache_dir=str(root / "modelscope"),
                local_files_only=True,
            )
        )
    raise ValueError(f"no offline lookup for source '{spec.source}'")


def _huggingface(spec: ModelSpec, hub: Path) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(spec.repo_id, revision=spec.revision, cache_dir=hub, local_files_only=True))


def _runpod(spec: ModelSpec) -> Path:
    """RunPod's cache may hold the snapshot without a ref naming it: its one snapshot is the model."""
    hub = runpod_hf_cache()
    try:
        return _huggingface(spec, hub)
    except (OSError, ValueError):
        snapshots = hub / f"models--{spec.repo_id.replace('/', '--')}" / "snapshots"
        found = sorted(p for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
        if spec.revision is None and len(found) == 1:
            return found[0]
        raise
