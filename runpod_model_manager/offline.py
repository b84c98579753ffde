"""Find downloaded models the way a consumer does: through the hub libraries' own offline lookup."""

from __future__ import annotations

from pathlib import Path

from .cache import resolve_cache_root
from .specs import ModelSpec


def local_model_path(spec: ModelSpec, cache_root: Path | None = None) -> Path:
    """Directory of a downloaded model, found with the hub library in offline mode (no network)."""
    root = Path(cache_root) if cache_root else resolve_cache_root().path
    if spec.source == "huggingface":
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                spec.repo_id,
                revision=spec.revision,
                cache_dir=root / "huggingface" / "hub",
                local_files_only=True,
            )
        )
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
