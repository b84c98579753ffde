"""Hugging Face Hub: metadata from its HTTP API (the request huggingface_hub sends, under our limits), files into
the native hub cache (HF_HOME=<root>/huggingface).

Layout written, as huggingface_hub itself writes it:
    hub/models--{org}--{name}/blobs/{etag}                  file content (etag: LFS sha256, else git blob sha1)
    hub/models--{org}--{name}/snapshots/{commit}/{path}    relative symlink to the blob
    hub/models--{org}--{name}/refs/{revision}              the commit a branch or tag resolved to
A snapshot may also hold real files instead of symlinks (copied from an object store, where there are no links):
those count as present, as huggingface_hub reads them too.
What huggingface_hub also leaves there, which `cached()` reports for `rm` and `prune`:
    hub/models--{org}--{name}/blobs/{etag}[.{random}].incomplete   its partial downloads (older versions: no random)
    hub/models--{org}--{name}/blobs/tmp_{uuid}                      its permission probe, if killed in between
    hub/.locks/models--{org}--{name}/{etag}.lock                    held while it writes that blob
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote, urlsplit

from runpod_model_manager import validate
from runpod_model_manager.errors import ModelError
from runpod_model_manager.inventory import CachedModel, CachedRevision, HubPartial, entries
from runpod_model_manager.layout import atomic_write_text, inside, relative_symlink
from runpod_model_manager.remote import MalformedMetadata, RemoteFile, ResolvedModel, expect, member
from runpod_model_manager.source import Downloader
from runpod_model_manager.specs import ModelSpec

if TYPE_CHECKING:
    from runpod_model_manager.hub_http import Answer

DEFAULT_ENDPOINT = "https://huggingface.co"
# the Hub may cut `siblings` short for larger repos (server-side caching): then the tree listing is used,
# as huggingface_hub's snapshot_download did with the same threshold before it always listed the tree
RELIABLE_SIBLINGS = 1000


class _FileFields(NamedTuple):
    """What the Hub calls a file's fields in one kind of answer."""

    path: str
    lfs_sha256: str
    git_sha1: str


_SIBLING = _FileFields("rfilename", "sha256", "blobId")  # /api/models/{repo}/revision/{rev}: siblings
_TREE_ENTRY = _FileFields("path", "oid", "oid")  # /api/models/{repo}/tree/{rev}

_PARTIAL = re.compile(r"^(?P<etag>[^.]+)(\.[0-9a-f]{8})?\.incomplete$|^tmp_[0-9a-f-]{36}$")


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


class HuggingFaceDownloader(Downloader):
    source = "huggingface"
    module = "huggingface_hub"
    package = "huggingface_hub"
    default_revision = "main"
    token_env = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")

    @classmethod
    def env(cls, cache_root: Path) -> dict[str, str]:
        return {"HF_HOME": str(cache_root / "huggingface"), "HF_HUB_CACHE": str(cache_root / "huggingface" / "hub")}

    @functools.cached_property
    def hub_dir(self) -> Path:
        return self.cache_root / "huggingface" / "hub"

    def repo_dir(self, repo_id: str) -> Path:
        return self.hub_dir / ("models--" + repo_id.replace("/", "--"))

    @functools.cached_property
    def _blob_dirs(self) -> dict[str, Path]:  # repo id -> its blobs/, asked for several times per file
        return {}

    def file_url(self, repo_id: str, commit: str, path: str) -> str:
        return f"{_endpoint()}/{repo_id}/resolve/{commit}/{quote(path)}"

    def request_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def resolve(self, spec: ModelSpec, exact: bool = False) -> ResolvedModel:
        from runpod_model_manager import hub_http  # here: `list` and warm runs need no HTTP stack

        # the request HfApi.model_info(files_metadata=True) sends, fetched with our limits: that call has none
        revision = spec.revision or self.default_revision
        url = f"{_endpoint()}/api/models/{spec.repo_id}/revision/{quote(revision, safe='')}"
        response = self._fetch(spec, url, {"blobs": "true"})
        info = expect(hub_http.json_of(response), dict, "the answer")
        commit = member(info, "sha", str, "sha")
        try:
            validate.commit_hash(commit)
        except validate.InvalidValue as exc:
            raise MalformedMetadata(str(exc)) from None
        if member(info, "gated", (bool, str), "gated", optional=True) and not self.token:
            raise ModelError(str(spec), self._gated_hint(spec))
        siblings = member(info, "siblings", list, "siblings")
        if not 0 < len(siblings) <= RELIABLE_SIBLINGS:
            return ResolvedModel(spec, commit, self._tree(spec, commit))
        files = [
            self._remote_file(spec, commit, expect(sibling, dict, f"siblings[{i}]"), f"siblings[{i}].", _SIBLING)
            for i, sibling in enumerate(siblings)
        ]
        return ResolvedModel(spec, commit, tuple(files))

    def _tree(self, spec: ModelSpec, commit: str) -> tuple[RemoteFile, ...]:
        """Every file of the commit from the paginated tree listing (HfApi.list_repo_tree's requests): pages
        are followed through their `Link: rel="next"` header, on the endpoint's own host only (the token goes
        with them), and together stay under RPMM_METADATA_MAX_BYTES."""
        from runpod_model_manager import hub_http

        url: str | None = f"{_endpoint()}/api/models/{spec.repo_id}/tree/{quote(commit, safe='')}"
        params: dict | None = {"recursive": "true", "expand": "false"}
        files, spent, page = [], 0, 0
        while url:
            page += 1
            if urlsplit(url)[:2] != urlsplit(_endpoint())[:2]:
                raise MalformedMetadata(f"the next page of the tree listing is on another host ({validate.show(url)})")
            response = self._fetch(spec, url, params)
            spent += len(response.content)
            if spent > self.limits.max_bytes:
                raise ModelError(
                    str(spec),
                    f"the tree listing is larger than {self.limits.max_bytes:,} bytes "
                    "(RPMM_METADATA_MAX_BYTES); refused.",
                )
            for i, entry in enumerate(expect(hub_http.json_of(response), list, "the tree listing")):
                where = f"the tree listing's page {page}, entry {i}"
                if member(expect(entry, dict, where), "type", str, f"{where}: type") != "file":
                    continue
                files.append(self._remote_file(spec, commit, entry, f"{where}: ", _TREE_ENTRY))
            url, params = response.links.get("next", {}).get("url"), None
        return tuple(files)

    def _remote_file(self, spec: ModelSpec, commit: str, entry: dict, where: str, names: _FileFields) -> RemoteFile:
        """One file of a metadata answer; `where` prefixes each field's name in an error."""
        path = member(entry, names.path, str, f"{where}{names.path}")
        lfs = member(entry, "lfs", dict, f"{where}lfs", optional=True)
        if lfs is not None:
            checksum = "sha256:" + member(lfs, names.lfs_sha256, str, f"{where}lfs.{names.lfs_sha256}")
            size = member(lfs, "size", int, f"{where}lfs.size")
        else:
            checksum = "git-sha1:" + member(entry, names.git_sha1, str, f"{where}{names.git_sha1}")
            size = member(entry, "size", int, f"{where}size")
        return RemoteFile(path, size, self.file_url(spec.repo_id, commit, path), checksum)

    def _fetch(self, spec: ModelSpec, url: str, params: dict | None) -> Answer:
        from runpod_model_manager import hub_http

        endpoint = (_endpoint(), "HF_ENDPOINT")
        response = hub_http.fetch_for_model(str(spec), url, self.limits, endpoint, params, self.request_headers())
        if response.status_code != 200:
            raise ModelError(str(spec), self._explain(response, spec))
        return response

    def _gated_hint(self, spec: ModelSpec) -> str:
        page = f"{_endpoint()}/{spec.repo_id}"
        if self.token:
            return f"this repository is gated and the token has no access to it: accept its conditions at {page}."
        return f"this repository is gated: accept its conditions at {page}, then pass --token or set HF_TOKEN."

    def _explain(self, response: Answer, spec: ModelSpec) -> str:
        """The Hub's error protocol, as huggingface_hub's hf_raise_for_status reads it: X-Error-Code first."""
        status, code = response.status_code, response.headers.get("X-Error-Code")
        if code == "GatedRepo":
            return self._gated_hint(spec)
        if code == "RevisionNotFound":
            return f"revision '{spec.revision}' not found: give an existing branch, tag or commit."
        refused_token = response.headers.get("X-Error-Message") == "Invalid credentials in Authorization header"
        if code == "RepoNotFound" or (status == 401 and not refused_token):
            hint = "" if self.token else " (if it is private, pass --token or set HF_TOKEN)"
            return f"repository not found on Hugging Face{hint}."
        if status == 401:
            return "the Hub refused the token: check --token or HF_TOKEN."
        return f"the hub answered HTTP {status}; try again later."

    def blob_path(self, model: ResolvedModel, file: RemoteFile) -> Path:
        etag = (file.checksum or "").partition(":")[2]
        repo_id = model.spec.repo_id
        if (blobs := self._blob_dirs.get(repo_id)) is None:
            blobs = self._blob_dirs[repo_id] = self.repo_dir(repo_id) / "blobs"
        return blobs / etag

    def model_path(self, model: ResolvedModel) -> Path:
        return self.repo_dir(model.spec.repo_id) / "snapshots" / model.commit

    def link(self, model: ResolvedModel, files: tuple[RemoteFile, ...]) -> None:
        snapshot = self.model_path(model)
        folders_inside: set[Path] = set()  # resolving costs a system call per folder: once per folder
        for file in files:
            blob, entry = self.blob_path(model, file), snapshot / file.path
            if entry.parent not in folders_inside:
                inside(self.cache_root, entry)
                folders_inside.add(entry.parent)
            if not blob.exists() and _is_real_file(entry, file.size):
                continue  # a snapshot without symlinks (a volume filled by `push`): the file itself is there
            relative_symlink(blob, entry)
        if ref := self._ref_path(model):
            atomic_write_text(inside(self.cache_root, ref), model.commit)

    def layout_files(self, model: ResolvedModel) -> tuple[Path, ...]:
        ref = self._ref_path(model)
        return (ref,) if ref else ()

    def _ref_path(self, model: ResolvedModel) -> Path | None:
        """refs/<revision>, which names the commit a branch or tag resolved to (none for a commit itself)."""
        revision = model.spec.revision or self.default_revision
        return None if revision == model.commit else self.repo_dir(model.spec.repo_id) / "refs" / revision

    # -- the volume ---------------------------------------------------------------------------------
    def model_dirs(self, repo_id: str) -> tuple[Path, ...]:
        folder = self.repo_dir(repo_id)
        return folder, self.hub_dir / ".locks" / folder.name

    def lock_folders(self) -> tuple[Path, ...]:
        return (self.hub_dir / ".locks",)

    def cached(self, repo_id: str | None = None) -> list[CachedModel]:
        if repo_id is not None:
            folders = [self.repo_dir(repo_id)]
        else:
            folders = [p for p in entries(self.hub_dir) if p.name.startswith("models--")]
        return [model for folder in folders if (model := self._scan(folder))]

    def _scan(self, folder: Path) -> CachedModel | None:
        if not folder.is_dir() or folder.is_symlink():
            return None
        repo_id = folder.name.removeprefix("models--").replace("--", "/")
        blobs_dir, locks_dir = folder / "blobs", self.hub_dir / ".locks" / folder.name
        refs: dict[str, list[tuple[str, Path]]] = {}
        for ref in sorted((folder / "refs").rglob("*")):
            if ref.is_file() and not ref.is_symlink():
                with contextlib.suppress(OSError, UnicodeDecodeError), open(ref, encoding="utf-8") as f:
                    refs.setdefault(f.read(256).strip(), []).append((ref.relative_to(folder / "refs").as_posix(), ref))
        revisions = []
        for snapshot in entries(folder / "snapshots"):
            if not snapshot.is_dir() or snapshot.is_symlink():
                continue
            used = set()
            for link in snapshot.rglob("*"):
                if link.is_symlink():  # the first hop only: a blob may itself point into a shared store
                    target = Path(os.path.normpath(link.parent / os.readlink(link)))
                    if target.parent == blobs_dir:  # anything else is not ours to count or remove
                        used.add(target)
            named = refs.get(snapshot.name, [])
            not_found = folder / ".no_exist" / snapshot.name  # the library's notes of files missing at the commit
            revisions.append(
                CachedRevision(
                    snapshot.name,
                    snapshot,
                    tuple(name for name, _ in named),
                    tuple(path for _, path in named),
                    frozenset(used),
                    (not_found,) if not_found.is_dir() and not not_found.is_symlink() else (),
                )
            )
        blobs, partials = set(), []
        for entry in entries(blobs_dir):
            match = _PARTIAL.match(entry.name)
            if match:
                lock = locks_dir / f"{match['etag']}.lock" if match["etag"] else None
                partials.append(HubPartial(entry, lock))
            elif entry.is_file() or entry.is_symlink():
                blobs.add(entry)
        locks = tuple(p for p in entries(locks_dir) if p.suffix == ".lock")
        dirs = tuple(d for d in (folder, locks_dir) if d.is_dir())
        return CachedModel(self.source, repo_id, dirs, tuple(revisions), frozenset(blobs), tuple(partials), locks)


def _is_real_file(path: Path, size: int) -> bool:
    return not path.is_symlink() and path.is_file() and path.stat().st_size == size
