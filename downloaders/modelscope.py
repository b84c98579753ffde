"""ModelScope: metadata through the modelscope client, files into its native cache (MODELSCOPE_CACHE=<root>/modelscope).

Layout written, as modelscope >= 1.38 (modelscope_hub) writes and reads it offline:
    models/{owner}--{name}/snapshots/{revision}/{path}     revision: the branch/tag/commit asked for ("master")
The bytes are those of the pinned commit; the folder is named after the revision the consumer asks for.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote

from runpod_model_manager.errors import ModelError
from runpod_model_manager.remote import RemoteFile, ResolvedModel
from runpod_model_manager.source import Downloader
from runpod_model_manager.specs import ModelSpec

DEFAULT_ENDPOINT = "https://www.modelscope.cn"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _endpoint() -> str:
    endpoint = os.environ.get("MODELSCOPE_ENDPOINT") or DEFAULT_ENDPOINT
    return endpoint if "://" in endpoint else f"https://{endpoint}"


class ModelScopeDownloader(Downloader):
    source = "modelscope"
    module = "modelscope_hub"
    package = "modelscope>=1.40"
    default_revision = "master"
    token_env = ("MODELSCOPE_API_TOKEN",)

    @classmethod
    def env(cls, cache_root: Path) -> dict[str, str]:
        return {"MODELSCOPE_CACHE": str(cache_root / "modelscope")}

    def repo_dir(self, repo_id: str) -> Path:
        return self.cache_root / "modelscope" / "models" / repo_id.replace("/", "--")

    def file_url(self, repo_id: str, commit: str, path: str) -> str:
        return f"{_endpoint().rstrip('/')}/api/v1/models/{repo_id}/repo?Revision={quote(commit)}&FilePath={quote(path)}"

    def request_headers(self) -> dict[str, str]:
        if not self.token:
            return {}
        return {"Authorization": f"Bearer {self.token}", "Cookie": f"m_session_id={self.token}"}

    def resolve(self, spec: ModelSpec, exact: bool = False) -> ResolvedModel:
        from modelscope_hub.api import HubApi

        revision = spec.revision or self.default_revision
        api = HubApi(endpoint=_endpoint(), token=self.token or "")
        try:
            pin = exact and not _COMMIT.match(revision)
            commit = self._commit_of(api, spec.repo_id, revision) if pin else revision
            listing = api.list_repo_files(spec.repo_id, "model", revision=commit, recursive=True)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(str(spec), self._explain(exc, spec)) from exc
        files = tuple(
            RemoteFile(
                f.path,
                int(f.size),
                self.file_url(spec.repo_id, commit, f.path),
                f"sha256:{f.sha256}" if f.sha256 else None,
            )
            for f in listing
            if f.type != "tree"
        )
        return ResolvedModel(spec, commit, files)

    def _commit_of(self, api, repo_id: str, revision: str) -> str:
        """The commit a branch or tag points at; the name itself if the hub does not say."""
        branches, tags = api.legacy.list_revisions_detail(repo_id, "model")
        for item in (*tags, *branches):
            if item.get("Revision") == revision:
                return item.get("CommitId") or revision
        raise ModelError(
            f"modelscope:{repo_id}@{revision}",
            f"revision '{revision}' not found: give an existing branch, tag or commit.",
        )

    def _explain(self, exc: Exception, spec: ModelSpec) -> str:
        from modelscope_hub.errors import (
            AuthenticationError,
            NetworkError,
            NotExistError,
            PermissionDeniedError,
            RateLimitError,
            ServerError,
        )

        if isinstance(exc, AuthenticationError | PermissionDeniedError):
            if self.token:
                return "access denied: the token has no access to this model."
            return "access denied: this model needs a token; pass --token or set MODELSCOPE_API_TOKEN."
        if isinstance(exc, NotExistError):
            if spec.revision:
                return f"model or revision '{spec.revision}' not found on ModelScope."
            return "model not found on ModelScope."
        if isinstance(exc, RateLimitError | ServerError):
            return f"the hub is unavailable ({type(exc).__name__}); try again later."
        if isinstance(exc, NetworkError | OSError):
            return f"could not reach {_endpoint()} ({type(exc).__name__}); check the network or MODELSCOPE_ENDPOINT."
        return f"the hub's answer could not be used ({type(exc).__name__}: {exc})."

    def blob_path(self, model: ResolvedModel, file: RemoteFile) -> Path:
        return self.model_path(model) / file.path

    def model_path(self, model: ResolvedModel) -> Path:
        return self.repo_dir(model.spec.repo_id) / "snapshots" / (model.spec.revision or self.default_revision)

    def link(self, model: ResolvedModel, files: tuple[RemoteFile, ...]) -> None:
        """The files are written in place: nothing to link."""
