"""What we know about downloaded revisions, kept under <root>/.runpod-model-manager so that `list` and warm
re-runs need no network: which commit each requested revision resolved to, and each commit's file manifest.

A manifest is written (atomically) only after every selected file of the model is in place; it is never
trusted alone: completeness is always checked against the files on disk. A record that does not pass the
checks hub answers pass (it lies on a shared volume that anyone may write) is ignored, as if absent.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from runpod_model_manager import remote, validate
from runpod_model_manager.inventory import entries
from runpod_model_manager.layout import atomic_write_text, inside
from runpod_model_manager.remote import RemoteFile, ResolvedModel
from runpod_model_manager.specs import ModelSpec


class Records:
    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir)

    def model_dir(self, source: str, repo_id: str) -> Path:
        return self.dir / "models" / source / repo_id

    def known(self) -> list[tuple[str, str]]:
        """(source, repo_id) of every model with records."""
        base = self.dir / "models"
        return sorted(
            (source.name, folder.relative_to(source).as_posix())
            for source in entries(base)
            for folder in [*entries(source), *(f for o in entries(source) for f in entries(o))]
            if (folder / "refs").is_dir() or (folder / "manifests").is_dir()
        )

    def refs(self, source: str, repo_id: str) -> dict[str, tuple[str, Path]]:
        """Revision name -> (commit, the file that records it)."""
        folder = self.model_dir(source, repo_id) / "refs"
        found = {}
        for ref in sorted(folder.rglob("*")):
            if ref.is_file() and not ref.is_symlink():
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    found[ref.relative_to(folder).as_posix()] = (ref.read_text(encoding="utf-8").strip(), ref)
        return found

    def manifests(self, source: str, repo_id: str) -> dict[str, Path]:
        """Commit -> its manifest file."""
        folder = self.model_dir(source, repo_id) / "manifests"
        return {p.name.removesuffix(".json"): p for p in entries(folder) if p.name.endswith(".json")}

    def commit_for(self, spec: ModelSpec, default_revision: str) -> str | None:
        ref = self.model_dir(spec.source, spec.repo_id) / "refs" / (spec.revision or default_revision)
        try:
            return validate.commit(ref.read_text().strip())
        except (OSError, ValueError):
            return None

    def manifest(self, spec: ModelSpec, commit: str) -> ResolvedModel | None:
        try:
            path = self.model_dir(spec.source, spec.repo_id) / "manifests" / f"{validate.commit(commit)}.json"
            data = json.loads(path.read_text())
            files = tuple(RemoteFile(f["path"], f["size"], f["url"], f.get("checksum")) for f in data["files"])
            return remote.check(ResolvedModel(spec, commit, files))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None

    def paths(self, model: ResolvedModel, default_revision: str) -> tuple[Path, Path]:
        """The record of `model`: its manifest, and the ref naming its commit."""
        spec = model.spec
        base = self.model_dir(spec.source, spec.repo_id)
        manifest = base / "manifests" / f"{validate.commit(model.commit)}.json"
        return inside(self.dir, manifest), inside(self.dir, base / "refs" / (spec.revision or default_revision))

    def record(self, model: ResolvedModel, default_revision: str) -> None:
        manifest, ref = self.paths(model, default_revision)
        files = [{"path": f.path, "size": f.size, "url": f.url, "checksum": f.checksum} for f in model.files]
        atomic_write_text(manifest, json.dumps({"files": files}, indent=1))
        atomic_write_text(ref, model.commit)
