"""The HTTP transfer engine: fetches one file to its final path, in parallel HTTP Range parts, resumably.

Guarantees, whatever happens to the process:
- bytes land in `<state>/incomplete/<key>.part`; the final path appears only by an atomic rename after the
  whole file was checked against the hub's checksum (or its size when the hub publishes none);
- progress of each part is recorded in `<key>.json`, so a later run (after a kill, a dropped link or a full
  disk) continues from the bytes already on disk instead of from zero;
- one process at a time works on a file: `<state>/locks/<key>.lock`, an flock held through the kernel, so it
  is released when its holder dies and never blocks a later run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
from filelock import FileLock, Timeout

from .errors import TransferError
from .layout import atomic_write_text

MiB = 1 << 20
CHUNK = MiB
RESUME_RECORD_EVERY = 16 * MiB  # bytes per part between two progress records
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass(frozen=True)
class Transfer:
    url: str
    dest: Path
    size: int
    checksum: str | None  # "sha256:<hex>" | "git-sha1:<hex>" | None
    label: str  # "<model>: <path>", for progress and errors
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_complete(self) -> bool:
        try:
            return self.dest.stat().st_size == self.size
        except OSError:
            return False


@dataclass(frozen=True)
class EngineSettings:
    connections: int = 8  # parallel Range requests for one large file
    min_part_size: int = 16 * MiB  # files smaller than two parts are fetched with one request
    retries: int = 6  # attempts in a row without progress, per part
    backoff: float = 0.5  # first retry delay (s); doubles each time, with jitter
    backoff_max: float = 30.0
    stall_timeout: float = 30.0  # no byte for this long: drop the connection and retry
    connect_timeout: float = 10.0


class DiskFullError(OSError):
    """Writing failed for lack of space: every other transfer would fail too, so the run stops."""


class FileBusy(Exception):
    """Another process holds the file's lock (only raised with wait=False)."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _NoRangeSupport(Exception):
    pass


class Progress:
    """What the engine reports; the CLI's reporters override what they show. Called from worker threads."""

    def file_started(self, label: str, size: int, already: int) -> None: ...

    def advance(self, label: str, nbytes: int) -> None: ...

    def file_done(self, label: str, transferred: int) -> None: ...

    def note(self, message: str) -> None: ...


@dataclass
class _Part:
    start: int
    end: int  # exclusive
    done: int = 0

    @property
    def remaining(self) -> int:
        return self.end - self.start - self.done


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None


def file_digest(path: Path, checksum: str) -> str:
    """The digest of `path` in the same algorithm as `checksum`, formatted alike."""
    algo = checksum.partition(":")[0]
    if algo == "git-sha1":
        h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    elif algo == "sha256":
        h = hashlib.sha256()
    else:
        raise ValueError(f"unknown checksum algorithm '{algo}'")
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return f"{algo}:{h.hexdigest()}"


class TransferEngine:
    def __init__(self, state_dir: Path, settings: EngineSettings | None = None, progress: Progress | None = None):
        self.dir = Path(state_dir) / "incomplete"
        self.locks = Path(state_dir) / "locks"
        for folder in (self.dir, self.locks):
            folder.mkdir(parents=True, exist_ok=True)
        self.settings = settings or EngineSettings()
        self.progress = progress or Progress()
        self._local = threading.local()

    # -- paths and resume records -------------------------------------------------------------------
    def _key(self, t: Transfer) -> str:
        return hashlib.sha256(str(t.dest).encode()).hexdigest()[:40]

    def _paths(self, t: Transfer) -> tuple[Path, Path, Path]:
        key = self._key(t)
        return self.dir / f"{key}.part", self.dir / f"{key}.json", self.locks / f"{key}.lock"

    def _plan(self, t: Transfer) -> list[_Part]:
        s = self.settings
        count = max(1, min(s.connections * 2, t.size // s.min_part_size))
        step = -(-t.size // count) if t.size else 0
        return (
            [_Part(start, min(start + step, t.size)) for start in range(0, t.size, step)] if t.size else [_Part(0, 0)]
        )

    def _load_parts(self, t: Transfer, part_file: Path, record: Path) -> list[_Part] | None:
        try:
            data = json.loads(record.read_text())
            if data["size"] != t.size or data["checksum"] != t.checksum or not part_file.exists():
                return None
            return [_Part(*p) for p in data["parts"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save_parts(self, t: Transfer, record: Path, parts: list[_Part]) -> None:
        data = {
            "url": t.url,
            "size": t.size,
            "checksum": t.checksum,
            "parts": [[p.start, p.end, p.done] for p in parts],
        }
        atomic_write_text(record, json.dumps(data))

    def resumable_bytes(self, t: Transfer) -> int:
        """Bytes of `t` already on disk from an earlier, interrupted run."""
        part_file, record, _ = self._paths(t)
        parts = self._load_parts(t, part_file, record)
        return sum(p.done for p in parts) if parts else 0

    # -- public -------------------------------------------------------------------------------------
    def fetch(self, t: Transfer, wait: bool = True, force: bool = False) -> int:
        """Make `t.dest` hold the checked file. Returns the bytes transferred (0 if it was already there).

        With `force`, the file is fetched again even if present; the old one stays readable until replaced.
        """
        if t.is_complete and not force:
            return 0
        part_file, record, lock_path = self._paths(t)
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            raise FileBusy(t.label) from None
        try:
            if t.is_complete and not force:  # another process finished it while we waited
                return 0
            try:
                return self._fetch_locked(t, part_file, record)
            except _NoRangeSupport:
                part_file.unlink(missing_ok=True)
                record.unlink(missing_ok=True)
                return self._fetch_locked(t, part_file, record, single=True)
        finally:
            lock.release()

    # -- internals ----------------------------------------------------------------------------------
    def _fetch_locked(self, t: Transfer, part_file: Path, record: Path, single: bool = False) -> int:
        parts = None if single else self._load_parts(t, part_file, record)
        if parts is None:
            parts = [_Part(0, t.size)] if single else self._plan(t)
            part_file.unlink(missing_ok=True)
            record.unlink(missing_ok=True)
        already = sum(p.done for p in parts)
        self.progress.file_started(t.label, t.size, already)
        record_lock = threading.Lock()
        fd = os.open(part_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._reserve(fd, t, part_file)
            pending = [p for p in parts if p.remaining > 0]
            save = lambda: self._save_parts(t, record, parts)  # noqa: E731
            if len(pending) <= 1:
                for part in pending:
                    self._fetch_part(t, fd, part, save, record_lock)
            else:
                with ThreadPoolExecutor(max_workers=min(self.settings.connections, len(pending))) as pool:
                    for future in [pool.submit(self._fetch_part, t, fd, p, save, record_lock) for p in pending]:
                        future.result()
            os.fsync(fd)
        except BaseException:
            with record_lock:
                if t.size >= 2 * CHUNK:
                    self._save_parts(t, record, parts)
            raise
        finally:
            os.close(fd)
        self._finish(t, part_file, record)
        transferred = t.size - already
        self.progress.file_done(t.label, transferred)
        return transferred

    def _reserve(self, fd: int, t: Transfer, part_file: Path) -> None:
        """Give the part file its final size up front, so that a full disk shows before the bytes are sent."""
        if os.fstat(fd).st_size == t.size:
            return
        try:
            os.posix_fallocate(fd, 0, t.size) if t.size else None
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise DiskFullError(exc.errno, f"no space for {t.label} ({t.size} bytes)", str(part_file)) from exc
            os.ftruncate(fd, t.size)  # filesystems without fallocate: a sparse file

    def _finish(self, t: Transfer, part_file: Path, record: Path) -> None:
        if t.checksum:
            actual = file_digest(part_file, t.checksum)
            if actual != t.checksum:
                part_file.unlink(missing_ok=True)
                record.unlink(missing_ok=True)
                raise TransferError(
                    f"{t.label}: downloaded bytes do not match the hub's checksum ({t.checksum}); "
                    "the file was discarded, run again"
                )
        elif part_file.stat().st_size != t.size:
            raise TransferError(f"{t.label}: size {part_file.stat().st_size} differs from the hub's {t.size}")
        t.dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part_file, t.dest)
        record.unlink(missing_ok=True)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _fetch_part(self, t: Transfer, fd: int, part: _Part, save: Callable[[], None], record_lock) -> None:
        failures = 0
        while part.remaining > 0:
            before = part.done
            try:
                self._stream(t, fd, part, save, record_lock)
            except _Retryable as exc:
                failures = 1 if part.done > before else failures + 1
                if failures > self.settings.retries:
                    raise TransferError(f"{t.label}: {exc} (gave up after {failures} attempts)") from None
                delay = exc.retry_after
                if delay is None:
                    delay = min(self.settings.backoff_max, self.settings.backoff * 2 ** (failures - 1))
                    delay *= 0.5 + random.random()
                self.progress.note(f"{t.label}: {exc}; retry {failures}/{self.settings.retries} in {delay:.1f}s")
                time.sleep(delay)

    def _stream(self, t: Transfer, fd: int, part: _Part, save: Callable[[], None], record_lock) -> None:
        offset = part.start + part.done
        whole_file = part.start == 0 and part.end == t.size
        headers = {**t.headers, "Accept-Encoding": "identity"}
        if part.end > 0:
            headers["Range"] = f"bytes={offset}-{part.end - 1}"
        s = self.settings
        try:
            response = self._session().get(
                t.url, headers=headers, stream=True, timeout=(s.connect_timeout, s.stall_timeout)
            )
        except requests.RequestException as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__})") from exc
        with response:
            status = response.status_code
            if status == 429 or status >= 500:
                raise _Retryable(f"HTTP {status}", _retry_after(response))
            if status == 200 and "Range" in headers:
                if not whole_file:
                    raise _NoRangeSupport()
                if offset:  # the server restarts from byte 0: so do we
                    part.done = 0
                    offset = 0
            elif status not in (200, 206):
                raise TransferError(f"{t.label}: the hub answered HTTP {status} for {t.url}")
            since_record = 0
            try:
                for chunk in response.iter_content(CHUNK):
                    chunk = chunk[: part.remaining]
                    self._write(fd, chunk, offset, t)
                    offset += len(chunk)
                    part.done += len(chunk)
                    since_record += len(chunk)
                    self.progress.advance(t.label, len(chunk))
                    if since_record >= RESUME_RECORD_EVERY:
                        since_record = 0
                        with record_lock:
                            save()
                    if part.remaining == 0:
                        break
            except requests.RequestException as exc:
                raise _Retryable(f"connection lost after {part.done} bytes ({type(exc).__name__})") from exc
        if part.remaining > 0:
            raise _Retryable(f"connection closed early, {part.remaining} bytes missing")

    @staticmethod
    def _write(fd: int, data: bytes, offset: int, t: Transfer) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.pwrite(fd, view, offset)
            except OSError as exc:
                if exc.errno in DISK_FULL_ERRNOS:
                    raise DiskFullError(exc.errno, f"disk full while writing {t.label}", str(t.dest)) from exc
                raise
            view = view[written:]
            offset += written
