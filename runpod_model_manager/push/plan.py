"""Which objects a complete model maps to: under the prefix, the same relative paths as in the local cache.

- the model's files at the path a consumer opens (Hugging Face: snapshots/<commit>/<file>, whose content
  lives in blobs/ behind a symlink; the store has no links, so the snapshot gets the real bytes and blobs/ is
  never uploaded: volume space is billed);
- then what announces the model, once all its files are there: the layout files a consumer looks up first
  (Hugging Face: refs/<revision>) and our completion record, so that `list` and `verify` on a pod know what
  "complete" means without asking the hub. Partial downloads, locks and push records stay local.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runpod_model_manager.errors import ModelError
from runpod_model_manager.records import Records
from runpod_model_manager.remote import ResolvedModel
from runpod_model_manager.source import Downloader

from .target import Target

_REPAIR = "run `download-models verify --repair`, then push again."


@dataclass(frozen=True)
class PushObject:
    key: str
    path: Path  # the local file, links resolved
    size: int
    sha256: str | None  # hex digest the hub published, checked against the local bytes on upload
    label: str  # "<model>: <path>", for progress and errors


@dataclass(frozen=True)
class ModelObjects:
    folder: str  # key of the folder a consumer loads the model from
    files: list[PushObject]
    announce: list[PushObject]  # uploaded only after every file is there


def model_objects(
    model: ResolvedModel, downloader: Downloader, records: Records, cache_root: Path, target: Target
) -> ModelObjects:
    root = cache_root.resolve()

    def one(path: Path, size: int | None, sha256: str | None = None, name: str | None = None) -> PushObject:
        """The object for the local file `path`; a file that is missing, or resolves outside the cache, fails."""
        relative = path.relative_to(cache_root).as_posix()
        try:
            real = path.resolve(strict=True)
            actual = real.stat().st_size
        except OSError as exc:
            raise ModelError(str(model.spec), f"cannot read {relative} ({exc.strerror}); {_REPAIR}") from None
        if not real.is_relative_to(root):
            raise ModelError(str(model.spec), f"refused to upload {relative}: it leads to {real}, outside the cache.")
        if size is not None and actual != size:
            raise ModelError(str(model.spec), f"{relative} has {actual} bytes instead of {size}; {_REPAIR}")
        return PushObject(target.key(relative), real, actual, sha256, f"{model.spec.repo_id}: {name or relative}")

    folder = downloader.model_path(model)
    files = [one(folder / f.path, f.size, _sha256(f.checksum), f.path) for f in model.selected]
    extra = (*downloader.layout_files(model), *records.paths(model, downloader.default_revision))
    announce = [one(path, None) for path in extra]
    return ModelObjects(target.key(folder.relative_to(cache_root).as_posix()), files, announce)


def _sha256(checksum: str | None) -> str | None:
    algorithm, _, digest = (checksum or "").partition(":")
    return digest if algorithm == "sha256" else None
