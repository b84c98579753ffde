"""What a source resolves a model to: an exact commit and the files it holds, as the core uses them."""

from __future__ import annotations

from dataclasses import dataclass

from runpod_model_manager.specs import ModelSpec


@dataclass(frozen=True)
class RemoteFile:
    """One file of a resolved commit."""

    path: str  # POSIX path inside the repo, as the hub lists it
    size: int
    url: str  # GET-able with HTTP Range
    checksum: str | None = None  # "sha256:<hex>" or "git-sha1:<hex>", as published by the hub


@dataclass(frozen=True)
class ResolvedModel:
    """A model pinned to an exact commit, with every file of that commit."""

    spec: ModelSpec
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def selected(self) -> tuple[RemoteFile, ...]:
        """The files that pass the spec's include/exclude patterns."""
        return tuple(f for f in self.files if self.spec.wants(f.path))
