"""One time limit for everything a network exchange does: connect, send, headers, body, every redirect.

A socket timeout bounds each wait for data, not the exchange: a server that sends one header byte every few
seconds never trips it. Under `with Deadline(seconds):`, every socket registered through `watch()` in that
thread (our HTTP connection classes register theirs) is shut down when the time is up, which ends whatever
blocking connect, send or receive is in progress on it; the code that was waiting sees a connection error
and `deadline.expired` tells it why. One watchdog thread serves every deadline of the process.

`Deadline(math.inf)` has no time limit: under `cancelled_by`, it only ends the waits of its sockets when the
cancel is set (for a library that bounds its requests itself, as botocore does).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Iterator

from .cancel import Cancel

_local = threading.local()


class Deadline:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._handles: list[int] = []  # our own descriptors of the sockets watched
        self._lock = threading.Lock()
        self._done = False
        self._previous: Deadline | None = None
        self._cancel: Cancel | None = None  # the thread's (cancelled_by), which ends this deadline too

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def watch(self, sock: socket.socket | None) -> None:
        """Shut `sock` down when the deadline passes (at once if it already has)."""
        if sock is None:
            return
        try:
            # a descriptor of our own on the same connection: it stays valid when TLS wraps (detaches) the socket
            # or when its owner closes it, and its number cannot be reused by another connection; a bare number,
            # not a socket object, which would cost four more system calls to learn the socket's kind
            handle = os.dup(sock.fileno())
        except OSError:  # closed already
            return
        with self._lock:
            if self._done:
                os.close(handle)
                return
            self._handles.append(handle)
            if self.expired:
                _shut(handle)

    def expire(self) -> None:
        """End it now: its sockets are shut down, as when its time is up."""
        with self._lock:
            if self._done:
                return
            self.expired = True
            for handle in self._handles:
                _shut(handle)

    def __enter__(self) -> Deadline:
        self._previous = current()
        _local.deadline = self
        if math.isfinite(self.at):
            _WATCHDOG.add(self)
        self._cancel = getattr(_local, "cancel", None)
        if self._cancel is not None:
            self._cancel.add(self.expire)
        return self

    def __exit__(self, *exc) -> None:
        if self._cancel is not None:
            self._cancel.discard(self.expire)
        with self._lock:
            self._done = True
            for handle in self._handles:
                os.close(handle)
            self._handles.clear()
        _local.deadline = self._previous


def current() -> Deadline | None:
    """The innermost deadline active in this thread."""
    return getattr(_local, "deadline", None)


@contextlib.contextmanager
def cancelled_by(cancel: Cancel) -> Iterator[None]:
    """Within the block, every Deadline this thread enters also ends when `cancel` is set (Ctrl-C need not
    wait for the deadlines of the requests in flight, however deep in a call they are made)."""
    previous = getattr(_local, "cancel", None)
    _local.cancel = cancel
    try:
        yield
    finally:
        _local.cancel = previous


def watch(sock: socket.socket | None) -> None:
    """Put `sock` under this thread's deadline, if one is active."""
    deadline = current()
    if deadline is not None:
        deadline.watch(sock)


class WatchedConnection:
    """A mixin for urllib3 connection classes: the socket is put under the thread's Deadline when it is opened,
    and when a request starts on a kept-alive connection (its body, then the wait for the answer)."""

    def _new_conn(self):
        sock = super()._new_conn()
        watch(sock)
        return sock

    def request(self, *args, **kwargs):
        watch(self.sock)
        return super().request(*args, **kwargs)


def _shut(handle: int) -> None:
    with contextlib.suppress(OSError):  # the peer may have closed it already
        sock = socket.socket(fileno=handle)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()  # the descriptor stays ours, closed when the deadline is left


class _Watchdog:
    """A heap of deadlines and one daemon thread that expires each when its time comes. Finished deadlines are
    dropped when they reach the top, so entering and leaving one costs a heap push and nothing more."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._wake:
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadline-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while True:
                    while self._heap and self._heap[0][2]._done:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._wake.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        due = heapq.heappop(self._heap)[2]
                        break
                    self._wake.wait(delay)
            due.expire()


_WATCHDOG = _Watchdog()
