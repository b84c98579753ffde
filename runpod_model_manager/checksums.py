"""Checksums as the hubs publish them: "sha256:<hex>" (LFS files, ModelScope) or "git-sha1:<hex>" (git blobs)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

BLOCK = 1 << 20  # per read: up to 64 files are hashed at once, and as fast as with larger reads


def new_hash(checksum: str, size: int):
    """A hashlib object for the algorithm of `checksum`, primed as that algorithm needs for a `size`-byte file."""
    algo = checksum.partition(":")[0]
    if algo == "git-sha1":
        return hashlib.sha1(b"blob %d\0" % size)
    if algo == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown checksum algorithm '{algo}'")


def formatted(checksum: str, h) -> str:
    return f"{checksum.partition(':')[0]}:{h.hexdigest()}"


def file_digest(path: Path, checksum: str) -> str:
    """The digest of `path` in the same algorithm as `checksum`, formatted alike."""
    h = new_hash(checksum, path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK):
            h.update(chunk)
    return formatted(checksum, h)


class PrefixHasher:
    """Hashes a file while it is being written, following the contiguous prefix that is already complete.

    Parts are fetched roughly in order, so the finished prefix keeps growing and the hash is nearly done when
    the last byte lands (the bytes are read back from the page cache). `frontier()` says how far the file is
    complete; `digest()` waits for the rest of the file and returns the formatted checksum.
    """

    POLL = 0.05

    def __init__(self, fd: int, size: int, checksum: str, frontier: Callable[[], int], background: bool = True):
        self.fd, self.size, self.checksum, self.frontier = fd, size, checksum, frontier
        self.hash = new_hash(checksum, size)
        self.done = 0
        self._stop = threading.Event()
        self._wake = threading.Event()  # set when the last byte is written: no polling delay at the end
        self._error: BaseException | None = None
        # a file fetched in one request is hashed at the end instead: a thread per small file costs more
        self._thread = threading.Thread(target=self._run, name="prefix-hasher", daemon=True) if background else None
        if self._thread:
            self._thread.start()

    def _run(self) -> None:
        try:
            while self.done < self.size and not self._stop.is_set():
                end = self.frontier()
                if end <= self.done:
                    self._wake.wait(self.POLL)
                    self._wake.clear()
                    continue
                while self.done < end:
                    chunk = os.pread(self.fd, min(BLOCK, end - self.done), self.done)
                    if not chunk:
                        raise OSError(f"short read at byte {self.done}")
                    self.hash.update(chunk)
                    self.done += len(chunk)
        except BaseException as exc:  # reported by digest()
            self._error = exc

    def digest(self) -> str:
        """Call once every byte is written: the checksum of the whole file."""
        self._wake.set()
        if self._thread:
            self._thread.join()
        else:
            self._run()
        if self._error is not None:
            raise self._error
        return formatted(self.checksum, self.hash)

    def cancel(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join()
