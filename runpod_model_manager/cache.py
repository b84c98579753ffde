"""The one cache root every source shares, and where each source's native cache lives under it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

# Mount points of a RunPod network volume: on Pods and on Serverless workers.
POD_VOLUME = Path("/workspace")
SERVERLESS_VOLUME = Path("/runpod-volume")

STATE_DIR = ".runpod-model-manager"


@dataclass(frozen=True)
class CacheRoot:
    path: Path
    reason: str  # how it was chosen, printed at start

    @property
    def huggingface(self) -> Path:
        """HF_HOME; the hub cache is <HF_HOME>/hub."""
        return self.path / "huggingface"

    @property
    def modelscope(self) -> Path:
        """MODELSCOPE_CACHE."""
        return self.path / "modelscope"

    @property
    def state(self) -> Path:
        """Our own bookkeeping: partial downloads, locks, completion records."""
        return self.path / STATE_DIR

    def model_lock(self, source: str, repo_id: str) -> Path:
        """The lock that downloads of a model share and that `rm` and `prune` take alone."""
        return self.state / "locks" / "models" / source / f"{repo_id.replace('/', '--')}.lock"


def _is_mounted_volume(path: Path) -> bool:
    return path.is_dir() and os.path.ismount(path)


def resolve_cache_root(cli_value: str | os.PathLike | None = None) -> CacheRoot:
    """--cache-dir, $MODEL_CACHE_DIR, $RUNPOD_VOLUME_PATH/models, /workspace/models (mounted volume),
    /runpod-volume/models, else ./models. Refuses a root that is not UTF-8 (it goes into HF_HOME and
    MODELSCOPE_CACHE, and into every line we print) or that exists and is not a folder."""
    cache = _choose(cli_value)
    try:
        str(cache.path).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(
            f"the cache directory from {cache.reason} is not a UTF-8 path; choose another with --cache-dir."
        ) from None
    try:
        is_file = cache.path.exists() and not cache.path.is_dir()
    except OSError:  # unreadable: the command that needs it says so
        is_file = False
    if is_file:
        raise UserError(
            f"the cache directory {cache.path} (from {cache.reason}) is a file, not a folder; "
            "choose another with --cache-dir or MODEL_CACHE_DIR."
        )
    return cache


def _choose(cli_value: str | os.PathLike | None) -> CacheRoot:
    if cli_value:
        return CacheRoot(Path(cli_value).expanduser().absolute(), "--cache-dir")
    if os.environ.get("MODEL_CACHE_DIR"):
        return CacheRoot(Path(os.environ["MODEL_CACHE_DIR"]).expanduser().absolute(), "$MODEL_CACHE_DIR")
    if os.environ.get("RUNPOD_VOLUME_PATH"):
        volume = Path(os.environ["RUNPOD_VOLUME_PATH"]).expanduser().absolute()
        return CacheRoot(volume / "models", "$RUNPOD_VOLUME_PATH")
    if _is_mounted_volume(POD_VOLUME):
        return CacheRoot(POD_VOLUME / "models", "network volume mounted at /workspace")
    if SERVERLESS_VOLUME.is_dir():
        return CacheRoot(SERVERLESS_VOLUME / "models", "network volume at /runpod-volume")
    return CacheRoot(Path("models").absolute(), "default ./models")
