"""Locks between processes that share a cache, on one machine or on several that mount the same volume.

Where the filesystem supports it, a lock is an `flock` on a lock file: the kernel releases it when its holder
dies, so a killed run never blocks a later one. The holder of an exclusive lock removes the file when it is
done (a waiter that got the lock on a removed file notices and tries again), so lock files do not pile up.

Some network filesystems answer flock with ENOSYS, ENOLCK or EOPNOTSUPP (Lustre and CIFS mounts, some NFS
setups). There the lock is a marker file instead, created with O_EXCL, naming its holder (host and process)
and carrying a beat counter that the holder rewrites every RPMM_LOCK_STALE/6 seconds while it holds the lock.
A marker is stale, and taken over with a warning that names its holder, when:
- its holder ran on this host (and process namespace) and its process is gone;
- a waiter saw the same beat for RPMM_LOCK_STALE seconds (default 60), measured on the waiter's own clock;
- its file time is older than 2 x RPMM_LOCK_STALE (this assumes the machines' clocks agree within
  RPMM_LOCK_STALE; it lets a short-lived `rm` or `prune` see a dead holder without watching it), or, for
  a marker another program left (a hub library's SoftFileLock, which has no heartbeat), older than an hour.
Only a holder that stalls for longer than RPMM_LOCK_STALE (a frozen machine, a volume that stops answering)
can lose its lock to a waiter, which it logs when it notices; raise the setting where that happens.

Shared locks (several downloads of one model) exclude exclusive ones (`rm`, `prune`): LOCK_SH with flock,
one `<lock>.<token>.shared` marker per holder with markers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path

from . import settings

log = logging.getLogger(__name__)

FLOCK_UNSUPPORTED = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
FOREIGN_MARKER_AGE = 3600.0  # a marker without a beat (another program's) counts as stale after this long
POLL = 0.05  # first wait between two attempts of a blocking acquire, doubled up to POLL_MAX
POLL_MAX = 0.5
SHARED_SUFFIX = ".shared"
_MARKER = re.compile(r"^(?P<host>\S+) (?P<pid>\d{1,10}) (?P<token>[0-9a-f]{16,64}) (?P<beat>\d{1,20})\n?$")


class LockBusy(Exception):
    """Another process holds the lock (a non-blocking acquire)."""


class LockCancelled(Exception):
    """A blocking acquire was given up because its cancel event was set."""


def stale_after() -> float:
    """RPMM_LOCK_STALE: seconds without a heartbeat after which a marker lock is taken over."""
    return settings.number("RPMM_LOCK_STALE")


def _host_id() -> str:
    """This machine and process namespace: a pid means the same process only under the same host id."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname() or 'unknown'}/{namespace}"


HOST = _host_id()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:  # no process has such a number
        return False
    return True


class _Watch:
    """What this process saw of other holders' markers: content -> first seen, on our own clock."""

    def __init__(self):
        self._seen: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def unchanged_for(self, path: Path, content: bytes) -> float:
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(str(path))
            if seen is None or seen[0] != content:
                self._seen[str(path)] = (content, now)
                return 0.0
            return now - seen[1]

    def forget(self, path: Path) -> None:
        with self._lock:
            self._seen.pop(str(path), None)


_WATCH = _Watch()


class _Heartbeat:
    """One thread per process that rewrites the beat of every marker this process holds."""

    def __init__(self):
        self._held: dict[str, Lock] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.interval = 10.0

    def add(self, lock: Lock) -> None:
        self.interval = stale_after() / 6
        with self._lock:
            self._held[str(lock.marker)] = lock
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lock-heartbeat", daemon=True)
                self._thread.start()

    def remove(self, lock: Lock) -> None:
        with self._lock:
            self._held.pop(str(lock.marker), None)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            with self._lock:
                held = list(self._held.values())
                if not held:
                    self._thread = None
                    return
            for lock in held:
                lock.beat()


_HEARTBEAT = _Heartbeat()


def _read(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(4096)
    except FileNotFoundError:
        return None


def _create_exclusive(path: Path, content: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o664)
    except FileExistsError:
        return False
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
    return True


def _parse(content: bytes | None) -> re.Match | None:
    return _MARKER.match(content.decode("ascii", "replace")) if content else None


def describe_holder(content: bytes) -> str:
    match = _parse(content)
    if not match:
        return "an unknown holder"
    return f"process {match['pid']} on {match['host'].split('/')[0]}"


def _owner_gone(content: bytes) -> bool:
    """The marker names a process of this host (and process namespace) that no longer runs."""
    match = _parse(content)
    return bool(match) and match["host"] == HOST and not _pid_alive(int(match["pid"]))


def break_if_stale(marker: Path) -> bool:
    """Remove `marker` if its holder is gone or has not refreshed it for RPMM_LOCK_STALE seconds (watched
    from now on if this is the first look). True if it is gone now."""
    content = _read(marker)
    if content is None:
        return True
    gone = _owner_gone(content)
    waited = _WATCH.unchanged_for(marker, content)
    age = _mtime_age(marker)
    old = age >= (2 * stale_after() if _parse(content) else FOREIGN_MARKER_AGE)
    if not (gone or old or waited >= stale_after()):
        return False
    breaker = marker.with_name(marker.name + ".break")
    if not _create_exclusive(breaker, _marker_content(secrets.token_hex(8), 0)):
        break_if_stale(breaker)  # a taker that died while breaking; only ever one level deep
        return False
    try:
        if _read(marker) != content:  # refreshed, or already taken over by another waiter
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)
        reason = "its process is gone" if gone else f"not refreshed for {max(waited, age):.0f}s"
        log.warning("taking over the lock %s from %s (%s)", marker, describe_holder(content), reason)
        _WATCH.forget(marker)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(breaker)


def _mtime_age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


_FLOCK_WORKS: dict[str, bool] = {}


def _flock_works(folder: Path) -> bool:
    """Whether flock works in `folder`, tried once per folder on a probe file (never on a lock's own file)."""
    key = str(folder)
    if key not in _FLOCK_WORKS:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".flock-probe.{secrets.token_hex(8)}"
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _FLOCK_WORKS[key] = True
        except OSError as exc:
            if exc.errno not in FLOCK_UNSUPPORTED:
                raise
            log.info("flock fails in %s (%s): using heartbeat marker files", folder, errno.errorcode.get(exc.errno))
            _FLOCK_WORKS[key] = False
        finally:
            os.close(fd)
            os.unlink(probe)
    return _FLOCK_WORKS[key]


def _marker_content(token: str, beat: int) -> bytes:
    return f"{HOST} {os.getpid()} {token} {beat}\n".encode()


class Lock:
    """An exclusive (or `shared`) lock on `path`; see the module docstring for how it works."""

    def __init__(self, path: Path, shared: bool = False, keep_file: bool = False):
        self.path = Path(path)
        self.shared = shared
        self.keep_file = keep_file  # a lock file another program made (a hub library's): leave it as it was
        self._created = False
        self._fd: int | None = None
        self._beat = 0
        self._beating = threading.Lock()  # a beat and a release never overlap
        self.marker: Path | None = None  # the marker file held, in marker mode

    # -- public -------------------------------------------------------------------------------------
    def acquire(self, blocking: bool = True, cancel: threading.Event | None = None) -> None:
        """Take the lock. Raises LockBusy if another process holds it and not `blocking`, LockCancelled if
        `cancel` is set while waiting."""
        delay = POLL
        while not self._attempt():
            if not blocking:
                raise LockBusy(str(self.path))
            if cancel is not None and cancel.wait(delay):
                raise LockCancelled(str(self.path))
            if cancel is None:
                time.sleep(delay)
            delay = min(POLL_MAX, delay * 2)

    def release(self) -> None:
        if self._fd is not None:
            self._release_flock()
        elif self.marker is not None:
            _HEARTBEAT.remove(self)
            with self._beating:
                if self._still_ours():
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.marker)
                self.marker = None

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None or self.marker is not None

    @functools.cached_property
    def token(self) -> str:  # names this holder in marker files (drawn when first needed: flock needs none)
        return secrets.token_hex(8)

    # -- flock --------------------------------------------------------------------------------------
    def _attempt(self) -> bool:
        try:
            return self._attempt_in_folder()
        except FileNotFoundError:  # its folder is made when missing, not checked before every lock
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return self._attempt_in_folder()

    def _attempt_in_folder(self) -> bool:
        if _flock_works(self.path.parent):
            return self._try_flock()
        return self._try_markers()

    def _try_flock(self) -> bool:
        """True: held; False: another process holds it."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o664)
                self._created = True
            except FileExistsError:
                try:
                    fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)  # flock needs no write access
                except FileNotFoundError:
                    continue  # removed meanwhile: create it
                self._created = False
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    return False
                raise
            # the previous holder may have removed the file between our open and our flock: then the lock
            # we hold is on a file nobody else will open, and the current file is the lock
            try:
                current = os.stat(self.path)
                opened = os.fstat(fd)
                same = (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev)
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)

    def _release_flock(self) -> None:
        fd, self._fd = self._fd, None
        if self.keep_file and not self._created:
            os.close(fd)
            return
        try:
            # the last holder removes the file, while it still holds it
            if self.shared:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.unlink(self.path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            os.close(fd)

    # -- markers ------------------------------------------------------------------------------------
    def _shared_markers(self) -> list[Path]:
        prefix = self.path.name + "."
        try:
            names = os.listdir(self.path.parent)
        except FileNotFoundError:
            return []
        return [self.path.parent / n for n in names if n.startswith(prefix) and n.endswith(SHARED_SUFFIX)]

    def _try_markers(self) -> bool:
        content = _marker_content(self.token, 0)
        if self.shared:
            marker = self.path.with_name(f"{self.path.name}.{self.token}{SHARED_SUFFIX}")
            _create_exclusive(marker, content)
            if self.path.exists() and not break_if_stale(self.path):
                os.unlink(marker)  # an exclusive holder (rm, prune) is at work
                return False
        else:
            marker = self.path
            created = _create_exclusive(marker, content) or (
                break_if_stale(marker) and _create_exclusive(marker, content)
            )
            if not created:
                return False
            others = [m for m in self._shared_markers() if not break_if_stale(m)]
            if others:
                os.unlink(marker)
                return False
        self.marker, self._beat = marker, 0
        _HEARTBEAT.add(self)
        return True

    def _still_ours(self) -> bool:
        match = _parse(_read(self.marker))
        return bool(match) and match["token"] == self.token

    def beat(self) -> None:
        """Rewrite the marker with the next beat, if it is still ours (called by the heartbeat thread)."""
        with self._beating:
            marker = self.marker
            if marker is None:
                return
            if not self._still_ours():
                log.warning("lost the lock %s: another process took it over (this process stalled too long)", marker)
                _HEARTBEAT.remove(self)
                return
            self._beat += 1
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(marker, os.O_WRONLY | os.O_CLOEXEC)
                try:  # in place, never truncated: a reader sees the old beat or the new one (never shorter)
                    os.pwrite(fd, _marker_content(self.token, self._beat), 0)
                finally:
                    os.close(fd)


def remove_if_free(path: Path, min_age: float) -> bool:
    """Remove the lock file `path` if nobody holds it and it is older than `min_age` seconds (a marker: if its
    last heartbeat is that old, and older than RPMM_LOCK_STALE). The caller checked that `path` is its to remove."""
    try:
        age = time.time() - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    if age < min_age or path.is_symlink():
        return False
    if _flock_works(path.parent):
        lock = Lock(path)
        free = lock._try_flock()
        if free:
            lock.release()  # removes it
        return free
    if age < max(min_age, stale_after()):
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True
