"""The contract every source (Hugging Face, ModelScope, third-party) implements.

A downloader knows its hub's metadata API and its library's native cache layout. It never moves bytes
itself: `resolve()` lists the files of an exact commit, the shared transfer engine fetches them to
`blob_path()`, and `link()` makes the native layout point at them, so that the hub library finds the
model offline with no help from us.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from runpod_model_manager.inventory import CachedModel
from runpod_model_manager.remote import RemoteFile, ResolvedModel
from runpod_model_manager.settings import MetadataLimits
from runpod_model_manager.specs import ModelSpec


class Downloader(ABC):
    """Base class of a source. Subclasses set the class attributes and implement the methods."""

    source: ClassVar[str]  # name used in specs and projects, e.g. "huggingface"
    module: ClassVar[str]  # the hub library it imports, checked by is_available()
    package: ClassVar[str]  # the pip distribution that provides it
    default_revision: ClassVar[str]  # branch used when a spec names none
    token_env: ClassVar[tuple[str, ...]] = ()  # environment variables holding a token

    def __init__(self, cache_root: Path, token: str | None = None, limits: MetadataLimits | None = None):
        self.cache_root = Path(cache_root)
        self.token = token
        self.limits = limits or MetadataLimits()  # for metadata requests: fetch them with hub_http.fetch

    @classmethod
    def is_available(cls) -> bool:
        return importlib.util.find_spec(cls.module) is not None

    @classmethod
    def install_hint(cls) -> str:
        return f"the '{cls.source}' source needs the {cls.package} package: pip install '{cls.package}'"

    @classmethod
    @abstractmethod
    def env(cls, cache_root: Path) -> dict[str, str]:
        """Environment variables that make the hub library read this cache (what `env` prints)."""

    @abstractmethod
    def file_url(self, repo_id: str, commit: str, path: str) -> str:
        """The URL of one file at a commit (built without a request, so locked models need no resolution)."""

    @abstractmethod
    def resolve(self, spec: ModelSpec, exact: bool = False) -> ResolvedModel:
        """List the files of the spec's revision (network; raises ModelError, or MalformedMetadata naming what
        is wrong with the hub's answer; the core checks every path, size and checksum of the result).

        `commit` is the exact commit where the hub tells it in the same request; a source whose listing does
        not (ModelScope) may return the branch or tag name instead, unless `exact` asks it to spend another
        request on pinning it (as the lock file does).
        """

    @abstractmethod
    def blob_path(self, model: ResolvedModel, file: RemoteFile) -> Path:
        """Where the finished bytes of `file` live. The engine only ever renames a checked file here."""

    @abstractmethod
    def link(self, model: ResolvedModel, files: tuple[RemoteFile, ...]) -> None:
        """Make the native layout expose `files` (all present in blob_path) for `model`'s revision."""

    @abstractmethod
    def model_path(self, model: ResolvedModel) -> Path:
        """The directory a consumer loads the model from."""

    def layout_files(self, model: ResolvedModel) -> tuple[Path, ...]:
        """Files of the native layout besides the model's own that a consumer needs to find it (Hugging Face:
        refs/<revision>); `push` copies them after the model's files."""
        return ()

    def request_headers(self) -> dict[str, str]:
        """Headers for file GETs (authentication)."""
        return {}

    # -- the volume: what `list`, `rm` and `prune` see (no network) ---------------------------------
    def model_dirs(self, repo_id: str) -> tuple[Path, ...]:
        """Every folder that can hold files of this model in the native layout (no I/O)."""
        return ()

    def cached(self, repo_id: str | None = None) -> list[CachedModel]:
        """The models of this source in the cache (only `repo_id` when given), whoever downloaded them."""
        return []

    def lock_folders(self) -> tuple[Path, ...]:
        """Where the hub library keeps its lock files (`prune` removes those nobody holds)."""
        return ()
