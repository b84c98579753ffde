"""ModelScope: metadata from its legacy HTTP API (the requests modelscope_hub sends, under our limits), files into
its native cache (MODELSCOPE_CACHE=<root>/modelscope).

Layout written, as modelscope >= 1.38 (modelscope_hub) writes and reads it offline:
    models/{owner}--{name}/snapshots/{revision}/{path}     revision: the branch/tag/commit asked for ("master")
The bytes are those of the pinned commit; the folder is named after the revision the consumer asks for.

What modelscope also leaves in MODELSCOPE_CACHE, which `cached()` reports for `rm` and `prune`:
    models/{owner}--{name}/snapshots/{revision}/{path}.incomplete    partial downloads (also .parallel_tmp,
    models/{owner}--{name}/snapshots/{revision}/{path}_{start}_{end}  and the parts of a parallel download)
    .lock/file_{sha256 of the repo id and path}.lock                  held while it writes that file
    models/{owner}/{name with . as ___}/{path}                        modelscope <= 1.37 (also under hub/,
    models/._____temp/{owner}/{name}/{path}                           and hub/{owner}/...); its partial files
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from runpod_model_manager import validate
from runpod_model_manager.errors import ModelError
from runpod_model_manager.inventory import CachedModel, CachedRevision, HubPartial, entries
from runpod_model_manager.remote import RemoteFile, ResolvedModel, expect, member
from runpod_model_manager.source import Downloader
from runpod_model_manager.specs import ModelSpec

if TYPE_CHECKING:
    import requests

    from runpod_model_manager.hub_http import Answer

DEFAULT_ENDPOINT = "https://www.modelscope.cn"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_PARTIAL = re.compile(r"^(?P<target>.+?)(\.incomplete|\.parallel_tmp|_(?P<start>\d+)_(?P<end>\d+))$")
_MiB = 1 << 20
LEGACY_TEMP = "._____temp"


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
        revision = spec.revision or self.default_revision
        pin = exact and not _COMMIT.match(revision)
        commit = self._commit_of(spec, revision) if pin else revision
        files = []
        for entry in self._listing(spec, commit):
            path = entry["Path"]
            where = f"the entry {validate.show(path)}"
            if member(entry, "Type", str, f"{where}: Type", optional=True) == "tree":
                continue
            size = member(entry, "Size", int, f"{where}: Size")
            sha256 = member(entry, "Sha256", str, f"{where}: Sha256", optional=True)
            url = self.file_url(spec.repo_id, commit, path)
            files.append(RemoteFile(path, size, url, f"sha256:{sha256}" if sha256 else None))
        return ResolvedModel(spec, commit, tuple(files))

    def _get(self, spec: ModelSpec, path: str, params: dict | None = None) -> tuple[object, int]:
        """The `Data` of an answer of the legacy API (as modelscope_hub's LegacyClient unwraps it) and its size."""
        from runpod_model_manager import hub_http  # here: `list` and warm runs need no HTTP stack

        url = f"{_endpoint().rstrip('/')}/api/v1/models/{spec.repo_id}/{path}"
        endpoint = (_endpoint(), "MODELSCOPE_ENDPOINT")
        response = hub_http.fetch_for_model(str(spec), url, self.limits, endpoint, params, self.request_headers())
        if response.status_code >= 400:
            raise ModelError(str(spec), self._explain(response, spec))
        body = expect(hub_http.json_of(response), dict, "the answer")
        if body.get("Success") is False:
            message = body.get("Message")
            raise ModelError(str(spec), f"the hub refused the request ({validate.show(message)}).")
        return body.get("Data", body), len(response.content)

    def _files(self, spec: ModelSpec, commit: str, root: str | None, recursive: bool) -> tuple[list[dict], int]:
        """One listing request: its entries (each an object with a Path) and the answer's size."""
        params = {"Revision": commit, "Recursive": str(recursive)}
        if root:
            params["Root"] = root
        data, size = self._get(spec, "repo/files", params)
        entries = data if isinstance(data, list) else member(expect(data, dict, "Data"), "Files", list, "Data.Files")
        for i, entry in enumerate(entries):
            member(expect(entry, dict, f"Data.Files[{i}]"), "Path", str, f"Data.Files[{i}].Path")
        return entries, size

    def _listing(self, spec: ModelSpec, commit: str) -> list[dict]:
        """Every entry of the commit. The hub cuts each listing at REPO_FILES_TRUNCATION_LIMIT entries without
        saying so: a listing that long is taken again folder by folder, as modelscope_hub does."""
        from modelscope_hub.constants import REPO_FILES_TRUNCATION_LIMIT as LIMIT
        from modelscope_hub.constants import REPO_TREE_MAX_REQUESTS

        entries, spent = self._files(spec, commit, None, recursive=True)
        if len(entries) < LIMIT:
            return entries
        collected: dict[str, dict] = {}
        known: dict[str | None, list[dict]] = {None: entries}
        frontier: list[str | None] = [None]
        asked = 1
        while frontier:
            truncated = []
            for root in frontier:
                if root in known:
                    subtree = known.pop(root)
                else:
                    subtree, size = self._files(spec, commit, root, recursive=True)
                    asked, spent = asked + 1, spent + size
                collected.update((e["Path"], e) for e in subtree)
                if len(subtree) >= LIMIT:
                    truncated.append(root)
            frontier = []
            for root in truncated:
                shallow, size = self._files(spec, commit, root, recursive=False)
                asked, spent = asked + 1, spent + size
                if len(shallow) >= LIMIT:
                    raise ModelError(
                        str(spec),
                        f"the folder '{root or '/'}' holds {LIMIT} or more entries, more than ModelScope lists; "
                        "its file list would be incomplete.",
                    )
                collected.update((e["Path"], e) for e in shallow)
                frontier += [e["Path"] for e in shallow if e.get("Type") == "tree"]
            if asked > REPO_TREE_MAX_REQUESTS or spent > self.limits.max_bytes:
                raise ModelError(
                    str(spec),
                    f"listing the files took more than {REPO_TREE_MAX_REQUESTS} requests "
                    "(MODELSCOPE_REPO_TREE_MAX_REQUESTS) or RPMM_METADATA_MAX_BYTES of answers; refused.",
                )
        return list(collected.values())

    def _commit_of(self, spec: ModelSpec, revision: str) -> str:
        """The commit a branch or tag points at; the name itself if the hub does not say."""
        data, _ = self._get(spec, "revisions")
        revisions = member(expect(data, dict, "Data"), "RevisionMap", dict, "Data.RevisionMap")
        for kind in ("Tags", "Branches"):
            for i, item in enumerate(member(revisions, kind, list, f"Data.RevisionMap.{kind}", optional=True) or ()):
                where = f"Data.RevisionMap.{kind}[{i}]"
                if member(expect(item, dict, where), "Revision", str, f"{where}.Revision") == revision:
                    return member(item, "CommitId", str, f"{where}.CommitId", optional=True) or revision
        raise ModelError(str(spec), f"revision '{revision}' not found: give an existing branch, tag or commit.")

    def _explain(self, response: Answer, spec: ModelSpec) -> str:
        """An error answer, classified by modelscope_hub's own status and business-code mapping."""
        from modelscope_hub.errors import (
            APIError,
            AuthenticationError,
            NotExistError,
            PermissionDeniedError,
            RateLimitError,
            ServerError,
            raise_for_status,
        )

        try:
            raise_for_status(_as_requests(response))
        except APIError as exc:
            error: Exception = exc
        except Exception as exc:  # an error body its parser cannot read (nested too deep, ...)
            error = exc
        if isinstance(error, AuthenticationError | PermissionDeniedError):
            if self.token:
                return "access denied: the token has no access to this model."
            return "access denied: this model needs a token; pass --token or set MODELSCOPE_API_TOKEN."
        if isinstance(error, NotExistError):
            if spec.revision:
                return f"model or revision '{spec.revision}' not found on ModelScope."
            return "model not found on ModelScope."
        if isinstance(error, RateLimitError | ServerError):
            return f"the hub is unavailable ({type(error).__name__}); try again later."
        return f"the hub answered HTTP {response.status_code}; try again later."

    def blob_path(self, model: ResolvedModel, file: RemoteFile) -> Path:
        return self.model_path(model) / file.path

    def model_path(self, model: ResolvedModel) -> Path:
        return self.repo_dir(model.spec.repo_id) / "snapshots" / (model.spec.revision or self.default_revision)

    def link(self, model: ResolvedModel, files: tuple[RemoteFile, ...]) -> None:
        """The files are written in place: nothing to link."""

    # -- the volume ---------------------------------------------------------------------------------
    @property
    def base(self) -> Path:
        return self.cache_root / "modelscope"

    def _legacy_roots(self) -> tuple[Path, ...]:
        """Where modelscope <= 1.37 kept `{owner}/{name}` folders, with its temporary folder in each."""
        return self.base / "models", self.base / "hub" / "models", self.base / "hub"

    def model_dirs(self, repo_id: str) -> tuple[Path, ...]:
        owner, _, name = repo_id.partition("/")
        legacy = [root / owner / name.replace(".", "___") for root in self._legacy_roots()]
        temps = [root / LEGACY_TEMP / owner / name for root in self._legacy_roots()]
        return (self.repo_dir(repo_id), *legacy, *temps)

    def lock_folders(self) -> tuple[Path, ...]:
        return (self.base / ".lock",)

    def cached(self, repo_id: str | None = None) -> list[CachedModel]:
        repo_ids = [repo_id] if repo_id is not None else self._repo_ids_on_disk()
        return [model for rid in repo_ids if (model := self._scan(rid))]

    def _repo_ids_on_disk(self) -> list[str]:
        found = {p.name.replace("--", "/", 1) for p in entries(self.base / "models") if "--" in p.name}
        for root in self._legacy_roots():
            for owner in entries(root):
                if "--" in owner.name or owner.name.startswith(".") or owner.name in ("models", "hub"):
                    continue
                found |= {f"{owner.name}/{p.name.replace('___', '.')}" for p in entries(owner) if p.is_dir()}
        return sorted(found)

    def _lock_of(self, repo_id: str, path: str) -> Path:
        """modelscope_hub's lock for one file of a model (DownloadManager._lock_path)."""
        key = "\0".join(("modelscope-hub-download-lock-v2", "file", "model", repo_id, path))
        return self.base / ".lock" / f"file_{hashlib.sha256(key.encode()).hexdigest()}.lock"

    def _scan(self, repo_id: str) -> CachedModel | None:
        dirs = tuple(d for d in self.model_dirs(repo_id) if d.is_dir() and not d.is_symlink())
        if not dirs:
            return None
        folder = self.repo_dir(repo_id)
        revisions, partials, locks = [], [], set()
        for snapshot in entries(folder / "snapshots"):
            if snapshot.is_dir() and not snapshot.is_symlink():
                revisions.append(CachedRevision(snapshot.name, snapshot, (snapshot.name,)))
                for path in snapshot.rglob("*"):
                    if path.is_dir() and not path.is_symlink():
                        continue
                    name = path.relative_to(snapshot).as_posix()
                    partial = _partial_target(name)
                    lock = self._lock_of(repo_id, partial or name)
                    if partial is not None:
                        partials.append(HubPartial(path, lock))
                    if lock.exists():
                        locks.add(lock)
        for legacy in dirs[1:]:
            if LEGACY_TEMP in legacy.parts:  # no lock: its age alone says whether it is abandoned
                partials += [HubPartial(p) for p in legacy.rglob("*") if not p.is_dir() or p.is_symlink()]
            else:
                revisions.append(CachedRevision("legacy", legacy, ("legacy",)))
        return CachedModel(
            self.source, repo_id, dirs, tuple(revisions), frozenset(), tuple(partials), tuple(sorted(locks))
        )


def _partial_target(name: str) -> str | None:
    """The file a partial download is for, or None if `name` is not a partial download's name. The parts of a
    parallel download are `{path}_{start}_{end}`, starting at multiples of the part size (whole MiB)."""
    match = _PARTIAL.match(name)
    if match is None:
        return None
    if match["start"] is not None and (int(match["start"]) % _MiB or int(match["end"]) < int(match["start"])):
        return None
    return match["target"]


def _as_requests(answer: Answer) -> requests.Response:
    """The answer as the requests.Response that modelscope_hub's error mapping reads (it loads requests itself)."""
    import requests

    response = requests.Response()
    response.status_code, response.url, response._content = answer.status_code, answer.url, answer.content
    response.headers = requests.structures.CaseInsensitiveDict(answer.headers)
    return response
