"""models.lock: every project model pinned to an exact commit with each file's path, size and checksum.

JSON with one key per line, sorted, so that `git diff` shows what an upgrade changed. With a lock present a
download uses the locked commits and needs no resolution request; a frozen run refuses a missing or stale lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from runpod_model_manager.errors import UserError
from runpod_model_manager.layout import atomic_write_text
from runpod_model_manager.remote import RemoteFile, ResolvedModel
from runpod_model_manager.specs import ModelSpec

FORMAT_VERSION = 1
DEFAULT_NAME = "models.lock"


def _key(spec: ModelSpec) -> tuple[str, str, str | None]:
    return spec.source, spec.repo_id, spec.revision


@dataclass
class LockFile:
    path: Path
    entries: dict[tuple[str, str, str | None], dict]

    @classmethod
    def load(cls, path: Path) -> LockFile | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"unsupported version {data.get('version')}")
            entries = {(m["source"], m["id"], m["revision"]): m for m in data["models"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(
                f"{path} is not a valid lock file ({exc}); recreate it with `download-models lock`."
            ) from None
        return cls(path, entries)

    @classmethod
    def empty(cls, path: Path) -> LockFile:
        return cls(path, {})

    def pinned(self, spec: ModelSpec, file_url) -> ResolvedModel | None:
        """The locked commit of `spec`, with URLs built by `file_url(repo_id, commit, path)`."""
        entry = self.entries.get(_key(spec))
        if entry is None:
            return None
        files = tuple(
            RemoteFile(f["path"], f["size"], file_url(spec.repo_id, entry["commit"], f["path"]), f.get("checksum"))
            for f in entry["files"]
        )
        return ResolvedModel(spec, entry["commit"], files)

    def missing(self, specs) -> list[ModelSpec]:
        return [spec for spec in specs if _key(spec) not in self.entries]

    def put(self, model: ResolvedModel) -> None:
        spec = model.spec
        self.entries[_key(spec)] = {
            "source": spec.source,
            "id": spec.repo_id,
            "revision": spec.revision,
            "commit": model.commit,
            "files": [{"path": f.path, "size": f.size, "checksum": f.checksum} for f in model.files],
        }

    def save(self) -> None:
        models = [self.entries[k] for k in sorted(self.entries, key=lambda k: (k[0], k[1], k[2] or ""))]
        text = json.dumps({"version": FORMAT_VERSION, "models": models}, indent=2, sort_keys=True, ensure_ascii=False)
        atomic_write_text(self.path, text + "\n")
