"""The HTTP transfer engine: fetches one file to its final path, in parallel HTTP Range parts, resumably.

Guarantees, whatever happens to the process:
- bytes land in `<state>/incomplete/<key>.part`; the final path appears only by an atomic rename after the
  whole file was checked against the hub's checksum (or its size when the hub publishes none);
- progress of each part is recorded in `<key>.json`, so a later run (after a kill, a dropped link or a full
  disk) continues from the bytes already on disk instead of from zero;
- one process at a time works on a file: `<state>/locks/<key>.lock` (runpod_model_manager.locks: an flock,
  released by the kernel when its holder dies, or a heartbeat marker where the filesystem has no flock);
- what a run leaves behind is found by `leftovers()` and removed by `discard()`, never while another process
  holds the file's lock (the manager and `prune` use them).

Settings (EngineSettings) take their defaults from the RPMM_* environment variables that settings.py lists
with their ranges, so that a deployment or a test can tune them without a CLI option.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import settings, validate
from .cancel import Cancel
from .checksums import PrefixHasher
from .deadline import Deadline, cancelled_by
from .errors import TransferError
from .layout import UnsafePathError, atomic_write_text, inside
from .locks import Lock, LockBusy, LockCancelled
from .progress import Progress
from .timings import PhaseTimes
from .writeback import start_writeback

if TYPE_CHECKING:  # imported where a file is fetched: `list` and runs with nothing to fetch need no HTTP stack
    from urllib3 import BaseHTTPResponse

    from .hub_http import Client

MiB = 1 << 20
CHUNK = MiB
PARTS_PER_CONNECTION = 8
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_KEY = re.compile(r"^[0-9a-f]{40}$")


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
    """Defaults come from the RPMM_* environment variables listed in settings.py."""

    connections: int = 8  # parallel Range requests for one large file
    min_part_size: int = 16 * MiB  # files smaller than two parts are fetched with one request
    retries: int = settings.setting("RPMM_RETRIES")  # attempts in a row without progress, per part
    backoff: float = settings.setting("RPMM_RETRY_BACKOFF")  # first retry delay (s); doubles, with jitter
    backoff_max: float = settings.setting("RPMM_RETRY_BACKOFF_MAX")
    retry_after_max: float = settings.setting("RPMM_RETRY_AFTER_MAX")  # cap on a hub's Retry-After
    stall_timeout: float = settings.setting("RPMM_STALL_TIMEOUT")  # no byte for this long: drop and retry
    min_speed: float = settings.setting("RPMM_MIN_SPEED")  # bytes/s a part must average over the stall window
    connect_timeout: float = settings.setting("RPMM_CONNECT_TIMEOUT")
    record_interval: float = settings.setting("RPMM_RECORD_INTERVAL")  # s between resume records
    preallocate: bool = field(default_factory=lambda: settings.flag("RPMM_PREALLOCATE", True))
    partial_max_age: float = settings.setting("RPMM_PARTIAL_MAX_AGE")  # s untouched before a run removes it


@dataclass(frozen=True)
class Leftover:
    """The files a partial download keeps in incomplete/ (bytes, resume record, temporary files)."""

    key: str
    files: tuple[Path, ...]
    dest: Path | None  # where the file was going, as its resume record says (None: no readable record)
    touched: float  # the newest modification time of its files (seconds since the epoch)
    size: int  # bytes they use on disk


class DiskFullError(OSError):
    """Writing failed for lack of space: every other transfer would fail too, so the run stops."""


class FileBusy(Exception):
    """Another process holds the file's lock (only raised with wait=False)."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _TooSlow(_Retryable):
    """The part received bytes, too few to count as progress (a server dripping a byte at a time)."""


class _NoRangeSupport(Exception):
    pass


class _Cancelled(TransferError):
    """Another part of the same file failed, or the engine was stopped: this transfer stops too."""

    def __init__(self, label: str = ""):
        super().__init__(f"{label}: stopped" if label else "stopped")


@dataclass
class _Part:
    start: int
    end: int  # exclusive
    done: int = 0

    @property
    def remaining(self) -> int:
        return self.end - self.start - self.done


def _retry_after(response: BaseHTTPResponse) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class _Recorder:
    """Writes a file's resume record: at the start, at most every `interval` seconds while bytes arrive, and
    when the transfer stops. A process that dies loses nothing the kernel already has. Against an OS crash:
    a file without a checksum is flushed to disk before the record that counts it; with a checksum, the final
    check catches lost bytes (the file is discarded and fetched again), so no flush slows the download."""

    def __init__(self, engine: TransferEngine, t: Transfer, record: Path, parts: list[_Part], fd: int, on_disk: bool):
        self.engine, self.t, self.record, self.parts, self.fd = engine, t, record, parts, fd
        self.on_disk = on_disk  # a record of this file may be on disk (removed once the file is complete)
        self.interval = engine.settings.record_interval
        self.lock = threading.Lock()
        self.last = time.monotonic()

    def save(self) -> None:
        with self.lock:
            self._save()

    def tick(self) -> None:
        if time.monotonic() - self.last < self.interval or not self.lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() - self.last >= self.interval:
                self._save()
        finally:
            self.lock.release()

    def _save(self) -> None:
        snapshot = [[p.start, p.end, p.done] for p in self.parts]
        try:
            if self.t.checksum is None:  # with a checksum, bytes an OS crash loses are caught at the end anyway
                try:
                    os.fdatasync(self.fd)
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):  # not: unsupported here
                        raise
            self.on_disk = True
            self.engine._save_parts(self.t, self.record, snapshot)
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise DiskFullError(exc.errno, f"disk full while writing {self.t.label}", str(self.record)) from exc
            raise
        self.last = time.monotonic()


class TransferEngine:
    def __init__(
        self,
        state_dir: Path,
        settings: EngineSettings | None = None,
        progress: Progress | None = None,
        root: Path | None = None,
        times: PhaseTimes | None = None,
    ):
        self.dir = Path(state_dir) / "incomplete"
        self.locks = Path(state_dir) / "locks"
        # every destination must lie inside the cache root (the state dir's parent unless given)
        self.root = Path(root if root is not None else Path(state_dir).parent)
        self._folders_inside: set[Path] = set()  # folders found inside the root (layout.inside)
        self._own_folders_inside = False  # incomplete/ and locks/ found inside the root
        self._paths_of: dict[Path, tuple[Path, Path, Path]] = {}  # destination -> its part file, record, lock
        self.settings = settings or EngineSettings()
        self.progress = progress or Progress()
        self.times = times or PhaseTimes()  # where the time per file goes (-v)
        self._client: Client | None = None  # made at the first request, shared by every thread
        self._client_lock = threading.Lock()
        self._routes: dict[str, str] = {}  # hub URL -> the URL it redirected to
        self._stopped = False
        self._cancels: set[Cancel] = set()
        self._cancels_lock = threading.Lock()

    # -- stopping -----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Make every transfer in flight stop at its next chunk, keeping its resume record (Ctrl-C, full disk)."""
        with self._cancels_lock:
            self._stopped = True
            events = list(self._cancels)
        for event in events:
            event.set()

    @contextlib.contextmanager
    def stop_on_error(self):
        """`with pool, engine.stop_on_error():` an exception (KeyboardInterrupt included) stops the transfers
        before the pool waits for them, instead of waiting for every file to finish."""
        try:
            yield self
        except BaseException:
            self.stop()
            raise

    @contextlib.contextmanager
    def _cancel_event(self):
        event = Cancel()
        with self._cancels_lock:
            if self._stopped:
                event.set()
            self._cancels.add(event)
        try:
            yield event
        finally:
            with self._cancels_lock:
                self._cancels.discard(event)

    # -- paths and resume records -------------------------------------------------------------------
    def _key(self, t: Transfer) -> str:
        return hashlib.sha256(str(t.dest).encode()).hexdigest()[:40]

    def _paths(self, t: Transfer) -> tuple[Path, Path, Path]:
        paths = self._paths_of.get(t.dest)  # asked for four times per file
        if paths is None:
            key = self._key(t)
            paths = (self.dir / f"{key}.part", self.dir / f"{key}.json", self.locks / f"{key}.lock")
            self._paths_of[t.dest] = paths
        return paths

    def _check(self, t: Transfer) -> None:
        """Refuse what the hub's metadata could use to write elsewhere or to trust unverifiable bytes."""
        # also our partial file, its record and its lock: named after a hex key in our two folders, which the
        # first file's check covers for every later one
        for path in (t.dest,) if self._own_folders_inside else (t.dest, *self._paths(t)):
            # resolving costs a system call per folder of the path: each folder is checked once per run
            if path.parent in self._folders_inside and path.name not in ("", ".", ".."):
                continue
            try:
                inside(self.root, path)
            except UnsafePathError:
                raise TransferError(f"{t.label}: refused to write {path}, outside the cache {self.root}") from None
            self._folders_inside.add(path.parent)
        self._own_folders_inside = True
        try:
            validate.checksum(t.checksum)
            validate.size(t.size)
        except validate.InvalidValue as exc:
            raise TransferError(f"{t.label}: refused the hub's metadata: {exc}") from None

    def _part_count(self, t: Transfer) -> int:
        s = self.settings
        return max(1, min(t.size // s.min_part_size, s.connections * PARTS_PER_CONNECTION))

    def connections_for(self, t: Transfer) -> int:
        """Requests at once the engine makes for `t`: one for a small file, up to `connections` for a large one."""
        return min(self.settings.connections, self._part_count(t))

    def _plan(self, t: Transfer) -> list[_Part]:
        # many parts, fetched in order: the finished prefix grows steadily (hashed as it grows) and a slow
        # connection holds up one small part, not a large share of the file
        count = self._part_count(t)
        step = -(-t.size // count) if t.size else 0
        return (
            [_Part(start, min(start + step, t.size)) for start in range(0, t.size, step)] if t.size else [_Part(0, 0)]
        )

    def _load_parts(self, t: Transfer, part_file: Path, record: Path) -> tuple[list[_Part] | None, bool]:
        """The progress the resume record of `t` holds (None: no valid record, or no part file), and whether
        a record is there at all."""
        try:
            data = json.loads(record.read_text())
            if data["size"] != t.size or data["checksum"] != t.checksum or not part_file.exists():
                return None, True
            if t.checksum is None and data.get("url") != t.url:  # nothing else tells two versions apart
                return None, True
            parts = [_Part(*p) for p in data["parts"]]
        except FileNotFoundError:
            return None, False
        except (OSError, ValueError, KeyError, TypeError):
            return None, True
        position = 0
        for p in parts:  # contiguous, covering the file, progress within bounds: else start over
            if p.start != position or p.end < p.start or not 0 <= p.done <= p.end - p.start:
                return None, True
            position = p.end
        return (parts if position == t.size else None), True

    def _save_parts(self, t: Transfer, record: Path, parts: list[list[int]]) -> None:
        data = {"url": t.url, "dest": str(t.dest), "size": t.size, "checksum": t.checksum, "parts": parts}
        # with a checksum, a record lost or stale after an OS crash only costs bytes: the final check catches it
        atomic_write_text(record, json.dumps(data), durable=t.checksum is None)

    def _partial_names(self) -> set[str]:
        """The names in incomplete/ now: one listing instead of a failed lookup per file that has none."""
        try:
            return set(os.listdir(self.dir))
        except FileNotFoundError:
            return set()

    def reserved_bytes(self, transfers: Iterable[Transfer]) -> int:
        """Disk space the partial files of `transfers` already occupy (all of a file once preallocated)."""
        names, total = self._partial_names(), 0
        for t in transfers:
            part_file = self._paths(t)[0]
            if part_file.name in names:
                with contextlib.suppress(OSError):
                    total += min(t.size, part_file.stat().st_blocks * 512)
        return total

    def resumable_bytes(self, transfers: Iterable[Transfer]) -> int:
        """Bytes of `transfers` already on disk from an earlier, interrupted run."""
        names, total = self._partial_names(), 0
        for t in transfers:
            part_file, record, _ = self._paths(t)
            if record.name in names:
                parts, _ = self._load_parts(t, part_file, record)
                total += sum(p.done for p in parts) if parts else 0
        return total

    # -- leftovers ----------------------------------------------------------------------------------
    def leftovers(self) -> list[Leftover]:
        """Every partial download in incomplete/, held by a process or not."""
        groups: dict[str, list[Path]] = {}
        with contextlib.suppress(FileNotFoundError):
            for path in self.dir.iterdir():
                key = path.name.lstrip(".").partition(".")[0]  # <key>.part, <key>.json, .<key>.json.<tmp>.tmp
                if _KEY.match(key):
                    groups.setdefault(key, []).append(path)
        return [leftover for key, files in sorted(groups.items()) if (leftover := self._leftover(key, files))]

    def _leftover(self, key: str, files: list[Path]) -> Leftover | None:
        stats = {}
        for path in files:
            with contextlib.suppress(FileNotFoundError):
                stats[path] = path.lstat()
        if not stats:
            return None
        dest = None
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            dest = Path(json.loads((self.dir / f"{key}.json").read_text())["dest"])
        touched = max(st.st_mtime for st in stats.values())
        return Leftover(key, tuple(stats), dest, touched, sum(st.st_blocks * 512 for st in stats.values()))

    def discard(self, leftover: Leftover) -> int | None:
        """Remove a partial download, unless another process holds its lock or wrote to it since it was found:
        the bytes freed, or None when it was left alone."""
        lock = Lock(self.locks / f"{leftover.key}.lock")
        try:
            lock.acquire(blocking=False)
        except LockBusy:
            return None
        try:
            now = self._leftover(leftover.key, list(self.dir.glob(f"*{leftover.key}*")))
            if now is None or now.touched != leftover.touched:
                return None
            for path in now.files:
                with contextlib.suppress(FileNotFoundError):
                    inside(self.root, path).unlink()
            return now.size
        finally:
            lock.release()

    # -- public -------------------------------------------------------------------------------------
    def fetch(self, t: Transfer, wait: bool = True, force: bool = False) -> int:
        """Make `t.dest` hold the checked file. Returns the bytes transferred (0 if it was already there).

        With `force`, the file is fetched again even if present; the old one stays readable until replaced.
        """
        self._check(t)
        lap = time.perf_counter()
        part_file, record, lock_path = self._paths(t)
        lap = self.times.lap("paths", lap)
        lock = Lock(lock_path)
        try:
            if wait:
                with self._cancel_event() as cancel:
                    lock.acquire(cancel=cancel)
            else:  # fails at once when the lock is taken: nothing to cancel
                lock.acquire(blocking=False)
        except LockBusy:
            raise FileBusy(t.label) from None
        except LockCancelled:
            raise _Cancelled(t.label) from None
        self.times.lap("lock", lap)
        try:
            # planned as missing; another process may have finished it since, which only its lock tells for sure
            if t.is_complete and not force:
                part_file.unlink(missing_ok=True)  # what an interrupted earlier run of this file left
                record.unlink(missing_ok=True)
                return 0
            try:
                return self._fetch_locked(t, part_file, record)
            except _NoRangeSupport:
                part_file.unlink(missing_ok=True)
                record.unlink(missing_ok=True)
                return self._fetch_locked(t, part_file, record, single=True)
        finally:
            lap = time.perf_counter()
            lock.release()
            self.times.lap("lock", lap)

    # -- internals ----------------------------------------------------------------------------------
    def _fetch_locked(self, t: Transfer, part_file: Path, record: Path, single: bool = False) -> int:
        lap = time.perf_counter()
        parts, recorded = (None, False) if single else self._load_parts(t, part_file, record)
        fresh = parts is None
        if fresh:
            parts = [_Part(0, t.size)] if single else self._plan(t)
            if recorded:  # a stale record goes before any new byte is counted
                record.unlink(missing_ok=True)
        lap = self.times.lap("resume records", lap)
        already = sum(p.done for p in parts)
        self.progress.file_started(t.label, t.size, already)
        fd = self._open_part(part_file, fresh)
        recorder = _Recorder(self, t, record, parts, fd, on_disk=not fresh)
        hasher = None
        if t.checksum:
            frontier = lambda: _complete_prefix(parts)  # noqa: E731
            hasher = PrefixHasher(fd, t.size, t.checksum, frontier, background=len(parts) > 1)
        try:
            self._reserve(fd, t, part_file, fresh)
            pending = [p for p in parts if p.remaining > 0]
            if len(pending) > 1 and not already:
                recorder.save()  # the plan, so that a kill before the first interval still resumes
            lap = self.times.lap("open", lap)
            with self._cancel_event() as cancel:
                if len(pending) <= 1:
                    for part in pending:
                        self._fetch_part(t, fd, part, recorder, cancel)
                else:
                    self._fetch_parts(t, fd, pending, recorder, cancel)
            lap = self.times.lap("transfer", lap)  # requests and bodies, resume records written meanwhile
            os.fsync(fd)
            lap = self.times.lap("fsync", lap)
            digest = hasher.digest() if hasher else None
            lap = self.times.lap("checksum", lap)
        except BaseException:
            if hasher:
                hasher.cancel()
            if sum(p.done for p in parts):
                with contextlib.suppress(OSError):  # e.g. the disk is full: the last periodic record stays
                    recorder.save()
            else:  # nothing worth keeping: give the space back
                part_file.unlink(missing_ok=True)
                record.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        self._finish(t, part_file, record if recorder.on_disk else None, digest)
        self.times.lap("rename", lap)
        self.times.file_done()
        transferred = t.size - already
        self.progress.file_done(t.label, transferred)
        return transferred

    def _fetch_parts(self, t: Transfer, fd: int, pending: list[_Part], recorder: _Recorder, cancel: Cancel) -> None:
        """Fetch the parts in parallel; the first failure stops the others and is raised."""
        pool = ThreadPoolExecutor(max_workers=min(self.settings.connections, len(pending)))

        def fetch(part: _Part) -> None:
            self._fetch_part(t, fd, part, recorder, cancel)
            start_writeback(fd, part.start, part.end - part.start)  # the fsync at the end waits for less

        try:
            futures = [pool.submit(fetch, p) for p in pending]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failures = [f.exception() for f in futures if f in done and f.exception() is not None]
            failed = next((e for e in failures if not isinstance(e, _Cancelled)), failures[0] if failures else None)
            if failed is not None:
                cancel.set()
                wait(futures)
                raise failed
        except BaseException:
            cancel.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _open_part(self, part_file: Path, fresh: bool) -> int:
        """The part file's descriptor; `fresh`: emptied of what an earlier attempt left (no record counts it)."""
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0)
        try:
            return os.open(part_file, flags, 0o644)
        except FileNotFoundError:  # made with the first file, not before each: a dry run writes nothing
            self.dir.mkdir(parents=True, exist_ok=True)
            return os.open(part_file, flags, 0o644)

    def _reserve(self, fd: int, t: Transfer, part_file: Path, fresh: bool) -> None:
        """Give the part file its final size up front, so that a full disk shows before the bytes are sent."""
        if not self.settings.preallocate or (not fresh and os.fstat(fd).st_size == t.size):
            return
        try:
            os.posix_fallocate(fd, 0, t.size) if t.size else None
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise DiskFullError(exc.errno, f"no space for {t.label} ({t.size} bytes)", str(part_file)) from exc
            os.ftruncate(fd, t.size)  # filesystems without fallocate: a sparse file

    def _finish(self, t: Transfer, part_file: Path, record: Path | None, digest: str | None) -> None:
        """Check the part file and give it its final name; `record`: its resume record, if one may exist."""
        size = part_file.stat().st_size
        if size != t.size or (t.checksum and digest != t.checksum):
            part_file.unlink(missing_ok=True)
            if record:
                record.unlink(missing_ok=True)
            if size != t.size:
                raise TransferError(f"{t.label}: size {size} differs from the hub's {t.size}; discarded, run again")
            raise TransferError(
                f"{t.label}: downloaded bytes do not match the hub's checksum ({t.checksum}); "
                "the file was discarded, run again"
            )
        # the bytes were fsynced before; the rename itself need not be: lost in an OS crash, the file is
        # simply missing and fetched again, never present and incomplete
        try:
            os.replace(part_file, t.dest)
        except FileNotFoundError:  # its folder is made when missing, not checked before every file
            t.dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part_file, t.dest)
        if record:
            record.unlink(missing_ok=True)

    def _route(self, t: Transfer) -> tuple[str, dict[str, str]]:
        """Where to send a request for `t`: the hub's URL, or the CDN URL it redirected an earlier part to
        (one request instead of two per part). Credentials never go to another origin, as when the client
        follows a redirect itself."""
        url = self._routes.get(t.url, t.url)
        if url is t.url or urlsplit(url).netloc == urlsplit(t.url).netloc:
            return url, dict(t.headers)
        return url, {k: v for k, v in t.headers.items() if k.lower() not in ("authorization", "cookie")}

    def _http(self) -> Client:
        with self._client_lock:
            if self._client is None:
                from .hub_http import Client

                # every request in flight keeps its connection: up to 64 files at once, each with its connections
                self._client = Client(connections=64 * self.settings.connections)
            return self._client

    def _fetch_part(self, t: Transfer, fd: int, part: _Part, recorder: _Recorder, cancel: Cancel) -> None:
        s = self.settings
        failures = 0
        while part.remaining > 0:
            before = part.done
            try:
                self._stream(t, fd, part, recorder, cancel)
            except _Retryable as exc:
                failures = 1 if part.done > before and not isinstance(exc, _TooSlow) else failures + 1
                attempts = s.retries + 1
                if failures >= attempts:
                    raise TransferError(f"{t.label}: {exc} (gave up after {failures} attempts)") from None
                delay = exc.retry_after
                if delay is None:
                    delay = min(s.backoff_max, s.backoff * 2 ** (failures - 1)) * (0.5 + random.random())
                else:
                    delay = min(delay, s.retry_after_max)
                self.progress.note(f"{t.label}: {exc}; retry {failures}/{s.retries} in {delay:.1f}s")
                if cancel.wait(delay):
                    raise _Cancelled(t.label) from None

    def _stream(self, t: Transfer, fd: int, part: _Part, recorder: _Recorder, cancel: Cancel) -> None:
        from .hub_http import HTTPError, Refused, discard, failure_reason

        if cancel.is_set():
            raise _Cancelled(t.label)
        offset = part.start + part.done
        whole_file = part.start == 0 and part.end == t.size
        url, headers = self._route(t)
        headers["Accept-Encoding"] = "identity"
        if part.end > 0:
            headers["Range"] = f"bytes={offset}-{part.end - 1}"
        s = self.settings
        try:
            # however slowly they drip; and at once on Ctrl-C
            with cancelled_by(cancel), Deadline(s.connect_timeout + s.stall_timeout) as headers_due:
                response, answered = self._http().get(url, headers, (s.connect_timeout, s.stall_timeout))
        except HTTPError as exc:
            if cancel.is_set():
                raise _Cancelled(t.label) from None
            if headers_due.expired:  # the deadline cut the connection
                raise _Retryable(_headers_late(headers_due)) from exc
            raise _Retryable(f"connection failed ({failure_reason(exc)})") from exc
        except Refused as exc:
            raise TransferError(f"{t.label}: {exc}") from None
        if headers_due.expired:  # the connection was cut: what arrived may be a part of the headers
            discard(response)
            raise _Retryable(_headers_late(headers_due))
        try:
            status = response.status
            if url != t.url and status in (401, 403, 404, 410):  # the CDN link expired: ask the hub again
                self._routes.pop(t.url, None)
                raise _Retryable(f"HTTP {status} from the redirect target", retry_after=0)
            if answered != url:
                self._routes[t.url] = answered
            if status in (408, 429) or status >= 500:
                raise _Retryable(f"HTTP {status}", _retry_after(response))
            if status == 200 and "Range" in headers:
                if not whole_file:
                    raise _NoRangeSupport()
                if offset:  # the server restarts from byte 0: so do we
                    part.done = 0
                    offset = 0
            elif status == 206:
                self._check_content_range(t, response, offset)
            elif status != 200:
                raise TransferError(f"{t.label}: the hub answered HTTP {status} for {t.url}")
            # each piece is written as it arrives (what the connection had, up to CHUNK bytes): nothing is held
            # in memory, and the loop wakes for every piece, so that a part trickling in under RPMM_MIN_SPEED is
            # found out (the socket timeout alone never trips while a byte comes every few seconds)
            received, window_start, window_received = 0, time.monotonic(), 0
            try:
                with cancel.interrupting(response.shutdown):  # a stalled read ends at once on Ctrl-C
                    while piece := response.read1(CHUNK):
                        received += len(piece)
                        data = piece[: part.remaining]
                        self._write(fd, data, offset, t)
                        offset += len(data)
                        part.done += len(data)  # counted once on disk: a resume record never claims more
                        self.progress.advance(t.label, len(data))
                        recorder.tick()
                        if part.remaining == 0:
                            break
                        if cancel.is_set():
                            raise _Cancelled(t.label)
                        if (elapsed := time.monotonic() - window_start) >= s.stall_timeout:
                            if received - window_received < s.min_speed * elapsed:
                                rate = f"{s.min_speed:g} bytes/s for {elapsed:.0f} s"
                                raise _TooSlow(f"slower than {rate} (RPMM_MIN_SPEED, RPMM_STALL_TIMEOUT)")
                            window_start, window_received = time.monotonic(), received
            except HTTPError as exc:
                if cancel.is_set():
                    raise _Cancelled(t.label) from None
                raise _Retryable(f"connection lost after {part.done} bytes ({type(exc).__name__})") from exc
        finally:
            discard(response)
        if part.remaining > 0:
            if cancel.is_set():  # its socket was shut down: that is why
                raise _Cancelled(t.label)
            raise _Retryable(f"connection closed early, {part.remaining} bytes missing")

    @staticmethod
    def _check_content_range(t: Transfer, response: BaseHTTPResponse, offset: int) -> None:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
        if match is None:
            return  # no usable header: the length and checksum checks still apply
        start, total = int(match.group(1)), match.group(3)
        if total != "*" and int(total) != t.size:
            raise TransferError(
                f"{t.label}: the hub now serves {total} bytes instead of {t.size}; the file changed, run again"
            )
        if start != offset:
            raise _Retryable(f"the hub answered bytes from {start} instead of {offset}")

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


def _headers_late(deadline: Deadline) -> str:
    return f"no complete headers within {deadline.seconds:g} s"


def _complete_prefix(parts: list[_Part]) -> int:
    """How many bytes from the start of the file are written (parts are contiguous and in order)."""
    total = 0
    for part in parts:
        total += part.done
        if part.remaining:
            break
    return total
