"""How far a request has got, for whoever polls its status (RunPod's /status shows a job's last progress
update while it runs): the handler names a callback for the request; the pipeline's stages say how many of
their pieces are done. An update goes out at most every RPMM_PROGRESS_INTERVAL seconds, the first one only
after that long, so a short request sends none."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator

from runpod_model_manager import settings

Callback = Callable[[dict], None]


class _Reporter:
    def __init__(self, callback: Callback, interval: float):
        self.callback, self.interval = callback, interval
        self.last = time.monotonic()

    def report(self, stage: str, count: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        self.callback({"stage": stage, "done": count, "total": total})


_current: contextvars.ContextVar[_Reporter | None] = contextvars.ContextVar("progress", default=None)


@contextlib.contextmanager
def reporting_to(callback: Callback | None) -> Iterator[None]:
    """Within this block, the stages' progress goes to `callback` (nowhere for None)."""
    reporter = _Reporter(callback, settings.number("RPMM_PROGRESS_INTERVAL")) if callback else None
    token = _current.set(reporter)
    try:
        yield
    finally:
        _current.reset(token)


def done(stage: str, count: int, total: int) -> None:
    """`count` of the `total` pieces of `stage` are done (called from the request's own thread)."""
    if reporter := _current.get():
        reporter.report(stage, count, total)
