"""A stop signal that also ends the network waits in progress.

A thread blocked on a socket (a hub that stalls mid-body, or sends no headers) checks a plain Event only
when its read returns, which is after the stall timeout: Ctrl-C would wait that long. Whoever waits on the
network registers how to end that wait while it waits; `set()` calls it at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator


class Cancel(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._interrupts: set[Callable[[], None]] = set()

    def add(self, interrupt: Callable[[], None]) -> None:
        """Until `discard(interrupt)`, `set()` calls `interrupt` (at once if it is set already), which must make
        a blocking call return or raise, as shutting down its socket does."""
        with self._lock:
            self._interrupts.add(interrupt)
            now = self.is_set()
        if now:
            _call(interrupt)

    def discard(self, interrupt: Callable[[], None]) -> None:
        with self._lock:
            self._interrupts.discard(interrupt)

    @contextlib.contextmanager
    def interrupting(self, interrupt: Callable[[], None]) -> Iterator[None]:
        """`add(interrupt)` for the block."""
        self.add(interrupt)
        try:
            yield
        finally:
            self.discard(interrupt)

    def set(self) -> None:
        with self._lock:
            super().set()
            interrupts = list(self._interrupts)
        for interrupt in interrupts:
            _call(interrupt)


def _call(interrupt: Callable[[], None]) -> None:
    # the wait may be over by now (the socket closed, the response given back to its pool): nothing to end
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        interrupt()
