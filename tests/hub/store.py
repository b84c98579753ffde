"""In-memory model of hub repositories: files, commits, branches and tags.

File contents are either ``bytes`` kept in memory or a ``pathlib.Path`` streamed
from disk (never loaded whole). Hashes (size, sha256, git blob sha1) are computed
once per on-disk file and cached by (path, size, mtime).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

HF = "huggingface"
MS = "modelscope"
SOURCES = (HF, MS)
DEFAULT_BRANCH = {HF: "main", MS: "master"}

# Same defaults as the .gitattributes huggingface_hub / modelscope create.
_LFS_EXT_LIST = (
    ".bin .safetensors .onnx .pt .pth .ckpt .h5 .msgpack .gguf .tflite .pb .npy .npz .pkl .pickle .ot"
    " .model .zip .tar .gz"
)
LFS_EXTENSIONS = frozenset(_LFS_EXT_LIST.split(" "))
DEFAULT_LFS_THRESHOLD = 1024 * 1024  # bytes; files at least this big are LFS

_CHUNK = 4 * 1024 * 1024
_hash_cache: dict[tuple[str, int, int], tuple[str, str]] = {}
_hash_cache_lock = threading.Lock()

# Deterministic, fixed "commit time" base so repeated runs produce the same SHAs and dates.
_EPOCH = 1_700_000_000


def _git_blob_header(size: int) -> bytes:
    return b"blob %d\0" % size


def _hash_bytes(data: bytes) -> tuple[str, str]:
    sha1 = hashlib.sha1(_git_blob_header(len(data)))
    sha1.update(data)
    return hashlib.sha256(data).hexdigest(), sha1.hexdigest()


def _hash_file(path: Path) -> tuple[str, str]:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_cache_lock:
        hit = _hash_cache.get(key)
    if hit is not None:
        return hit
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(_git_blob_header(st.st_size))
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            sha256.update(block)
            sha1.update(block)
    result = (sha256.hexdigest(), sha1.hexdigest())
    with _hash_cache_lock:
        _hash_cache[key] = result
    return result


def validate_repo_path(path: str) -> str:
    p = PurePosixPath(path)
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"invalid repo path: {path!r}")
    return str(p)


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit, with the hashes the hubs publish."""

    path: str
    size: int
    sha256: str
    git_sha1: str  # sha1(b"blob <size>\0" + content): the HF ETag of a non-LFS file
    lfs: bool
    data: bytes | None = field(default=None, repr=False)
    disk_path: Path | None = None

    @classmethod
    def create(cls, path: str, content: bytes | os.PathLike | str, *, lfs_threshold: int) -> FileEntry:
        path = validate_repo_path(path)
        if isinstance(content, (bytes, bytearray, memoryview)):
            data = bytes(content)
            sha256, sha1 = _hash_bytes(data)
            size, disk = len(data), None
        else:
            disk = Path(content)
            if not disk.is_file():
                raise FileNotFoundError(disk)
            sha256, sha1 = _hash_file(disk)
            size, data = disk.stat().st_size, None
        suffix = PurePosixPath(path).suffix.lower()
        lfs = size >= lfs_threshold or suffix in LFS_EXTENSIONS
        return cls(path=path, size=size, sha256=sha256, git_sha1=sha1, lfs=lfs, data=data, disk_path=disk)

    # -- git-lfs pointer (what git itself stores for an LFS file) -------------------------------
    @property
    def lfs_pointer(self) -> bytes:
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n").encode()

    @property
    def blob_id(self) -> str:
        """Git blob id as shown by the HF tree API (the pointer's sha1 for LFS files)."""
        if self.lfs:
            return _hash_bytes(self.lfs_pointer)[1]
        return self.git_sha1

    @property
    def etag(self) -> str:
        """HF ETag: sha256 for LFS files, git blob sha1 otherwise."""
        return self.sha256 if self.lfs else self.git_sha1

    def read_range(self, start: int, length: int) -> bytes:
        if self.data is not None:
            return self.data[start : start + length]
        assert self.disk_path is not None
        with open(self.disk_path, "rb") as f:
            f.seek(start)
            return f.read(length)


@dataclass
class Commit:
    sha: str
    files: dict[str, FileEntry]
    parent: str | None
    message: str
    timestamp: int

    @property
    def iso_date(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(self.timestamp))

    def folders(self) -> list[str]:
        out: set[str] = set()
        for p in self.files:
            parts = p.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                out.add("/".join(parts[:i]))
        return sorted(out)

    def tree_id(self, folder: str) -> str:
        h = hashlib.sha1(f"tree {self.sha} {folder}".encode())
        return h.hexdigest()


@dataclass
class Repo:
    source: str
    repo_id: str
    default_branch: str
    gated: bool = False
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    any_revision: bool = False  # a hostile mirror: any revision name resolves to the default branch

    def resolve(self, revision: str | None) -> Commit | None:
        """Resolve a branch, tag, full commit sha or unique sha prefix (>= 7 chars)."""
        rev = revision or self.default_branch
        if rev in self.branches:
            return self.commits[self.branches[rev]]
        if rev in self.tags:
            return self.commits[self.tags[rev]]
        if rev in self.commits:
            return self.commits[rev]
        if len(rev) >= 7 and all(c in "0123456789abcdef" for c in rev):
            hits = [c for sha, c in self.commits.items() if sha.startswith(rev)]
            if len(hits) == 1:
                return hits[0]
        if self.any_revision and self.default_branch in self.branches:
            return self.commits[self.branches[self.default_branch]]
        return None

    def has_ref(self, name: str) -> bool:
        return name in self.branches or name in self.tags


class RepoStore:
    """Thread-safe collection of repos, keyed by (source, repo_id)."""

    def __init__(self, *, lfs_threshold: int = DEFAULT_LFS_THRESHOLD) -> None:
        self.lfs_threshold = lfs_threshold
        self._repos: dict[tuple[str, str], Repo] = {}
        self._blobs: dict[str, FileEntry] = {}  # sha256 -> entry (for the CDN)
        self._lock = threading.RLock()

    def clear(self) -> None:
        with self._lock:
            self._repos.clear()
            self._blobs.clear()

    def get(self, source: str, repo_id: str) -> Repo | None:
        with self._lock:
            return self._repos.get((source, repo_id))

    def repos(self) -> list[Repo]:
        with self._lock:
            return list(self._repos.values())

    def blob(self, sha256: str) -> FileEntry | None:
        with self._lock:
            return self._blobs.get(sha256)

    def commit(
        self,
        source: str,
        repo_id: str,
        files: Mapping[str, bytes | os.PathLike | str | None],
        *,
        branch: str | None = None,
        tags: Iterable[str] = (),
        gated: bool | None = None,
        private: bool | None = None,
        replace: bool = False,
        message: str | None = None,
    ) -> str:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise ValueError(f"repo_id must look like 'owner/name', got {repo_id!r}")
        entries: dict[str, FileEntry | None] = {}
        for path, content in files.items():
            entries[validate_repo_path(path)] = (
                None if content is None else FileEntry.create(path, content, lfs_threshold=self.lfs_threshold)
            )
        with self._lock:
            repo = self._repos.get((source, repo_id))
            if repo is None:
                repo = Repo(source=source, repo_id=repo_id, default_branch=DEFAULT_BRANCH[source])
                self._repos[(source, repo_id)] = repo
            if gated is not None:
                repo.gated = gated
            if private is not None:
                repo.private = private
            branch = branch or repo.default_branch
            parent_sha = repo.branches.get(branch)
            base = {} if (replace or parent_sha is None) else dict(repo.commits[parent_sha].files)
            for path, entry in entries.items():
                if entry is None:
                    base.pop(path, None)
                else:
                    base[path] = entry
            h = hashlib.sha1()
            h.update(f"{source}\n{repo_id}\n{branch}\n{parent_sha}\n{len(repo.commits)}\n".encode())
            for path in sorted(base):
                h.update(f"{path}\0{base[path].sha256}\n".encode())
            sha = h.hexdigest()
            timestamp = _EPOCH + 60 * len(repo.commits)
            repo.commits[sha] = Commit(
                sha=sha,
                files=dict(sorted(base.items())),
                parent=parent_sha,
                message=message or f"commit {len(repo.commits) + 1}",
                timestamp=timestamp,
            )
            repo.branches[branch] = sha
            for tag in tags:
                repo.tags[tag] = sha
            for entry in base.values():
                self._blobs.setdefault(entry.sha256, entry)
            return sha

    def tag(self, source: str, repo_id: str, tag: str, revision: str | None = None) -> str:
        with self._lock:
            repo = self._repos[(source, repo_id)]
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(revision)
            repo.tags[tag] = commit.sha
            return commit.sha
