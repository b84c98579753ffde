"""Hugging Face Hub: metadata through huggingface_hub, files into the native hub cache (HF_HOME=<root>/huggingface).

Layout written, as huggingface_hub itself writes it:
    hub/models--{org}--{name}/blobs/{etag}                  file content (etag: LFS sha256, else git blob sha1)
    hub/models--{org}--{name}/snapshots/{commit}/{path}    relative symlink to the blob
    hub/models--{org}--{name}/refs/{revision}              the commit a branch or tag resolved to
A snapshot may also hold real files instead of symlinks (copied from an object store, where there are no links):
those count as present, as huggingface_hub reads them too.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from runpod_model_manager.errors import ModelError
from runpod_model_manager.layout import atomic_write_text, relative_symlink
from runpod_model_manager.remote import RemoteFile, ResolvedModel
from runpod_model_manager.source import Downloader
from runpod_model_manager.specs import ModelSpec

DEFAULT_ENDPOINT = "https://huggingface.co"


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


class _GatedWithoutToken(Exception):
    """The repo's metadata is public but its files need a token that was not given."""


class HuggingFaceDownloader(Downloader):
    source = "huggingface"
    module = "huggingface_hub"
    package = "huggingface_hub"
    default_revision = "main"
    token_env = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")

    @classmethod
    def env(cls, cache_root: Path) -> dict[str, str]:
        return {"HF_HOME": str(cache_root / "huggingface"), "HF_HUB_CACHE": str(cache_root / "huggingface" / "hub")}

    @property
    def hub_dir(self) -> Path:
        return self.cache_root / "huggingface" / "hub"

    def repo_dir(self, repo_id: str) -> Path:
        return self.hub_dir / ("models--" + repo_id.replace("/", "--"))

    def file_url(self, repo_id: str, commit: str, path: str) -> str:
        return f"{_endpoint()}/{repo_id}/resolve/{commit}/{quote(path)}"

    def request_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def resolve(self, spec: ModelSpec, exact: bool = False) -> ResolvedModel:
        from huggingface_hub import HfApi

        revision = spec.revision or self.default_revision
        try:
            info = HfApi(endpoint=_endpoint(), token=self.token or False).model_info(
                spec.repo_id, revision=revision, files_metadata=True
            )
        except Exception as exc:
            raise ModelError(str(spec), self._explain(exc, spec)) from exc
        if info.gated and not self.token:
            raise ModelError(str(spec), self._explain(_GatedWithoutToken(), spec))
        files = []
        for sibling in info.siblings or ():
            if sibling.lfs is not None:
                checksum, size = f"sha256:{sibling.lfs.sha256}", sibling.lfs.size
            else:
                checksum, size = f"git-sha1:{sibling.blob_id}", sibling.size
            files.append(
                RemoteFile(
                    sibling.rfilename, int(size), self.file_url(spec.repo_id, info.sha, sibling.rfilename), checksum
                )
            )
        return ResolvedModel(spec, info.sha, tuple(files))

    def _explain(self, exc: Exception, spec: ModelSpec) -> str:
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        if isinstance(exc, GatedRepoError | _GatedWithoutToken):
            return (
                "this repository is gated: accept its terms on the Hub, then pass --token or set HF_TOKEN."
                if not self.token
                else "this repository is gated and the token has no access to it: accept its terms on the Hub."
            )
        if isinstance(exc, RepositoryNotFoundError):
            hint = "" if self.token else " (if it is private, pass --token or set HF_TOKEN)"
            return f"repository not found on Hugging Face{hint}."
        if isinstance(exc, RevisionNotFoundError):
            return f"revision '{spec.revision}' not found: give an existing branch, tag or commit."
        if isinstance(exc, HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else "?"
            return f"the hub answered HTTP {status}; try again later."
        return f"could not reach {_endpoint()} ({type(exc).__name__}); check the network or HF_ENDPOINT."

    def blob_path(self, model: ResolvedModel, file: RemoteFile) -> Path:
        etag = (file.checksum or "").partition(":")[2]
        return self.repo_dir(model.spec.repo_id) / "blobs" / etag

    def model_path(self, model: ResolvedModel) -> Path:
        return self.repo_dir(model.spec.repo_id) / "snapshots" / model.commit

    def link(self, model: ResolvedModel, files: tuple[RemoteFile, ...]) -> None:
        snapshot = self.model_path(model)
        for file in files:
            blob, entry = self.blob_path(model, file), snapshot / file.path
            if not blob.exists() and _is_real_file(entry, file.size):
                continue  # a snapshot without symlinks (a volume filled by `push`): the file itself is there
            relative_symlink(blob, entry)
        if ref := self._ref_path(model):
            atomic_write_text(ref, model.commit)

    def layout_files(self, model: ResolvedModel) -> tuple[Path, ...]:
        ref = self._ref_path(model)
        return (ref,) if ref else ()

    def _ref_path(self, model: ResolvedModel) -> Path | None:
        """refs/<revision>, which names the commit a branch or tag resolved to (none for a commit itself)."""
        revision = model.spec.revision or self.default_revision
        return None if revision == model.commit else self.repo_dir(model.spec.repo_id) / "refs" / revision


def _is_real_file(path: Path, size: int) -> bool:
    return not path.is_symlink() and path.is_file() and path.stat().st_size == size
