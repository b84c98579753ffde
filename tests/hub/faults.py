"""Runtime-settable fault injection for the local hub.

All faults are bounded: ``times`` counts down to zero, sleeps are interruptible
by the server's stop event, and ``reset()`` clears everything.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class _Fail:
    match: str
    status: int
    times: int
    retry_after: float | int | None
    message: str


@dataclass
class _BodyFault:
    kind: str  # "drop" | "stall"
    match: str
    after_bytes: int
    times: int
    seconds: float = 0.0


@dataclass
class BodyPlan:
    """What to do with one response body (decided when the body starts)."""

    drop_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 0.0


class Faults:
    """Fault switches.

    * ``latency``: seconds slept before every response.
    * ``bandwidth``: bytes/s cap on each response body (None = unlimited).
    * ``fail(match, status, times, retry_after)``: next ``times`` requests whose route name
      equals ``match`` or whose (unquoted) path/query contains ``match`` get ``status``.
    * ``drop(match, after_bytes, times)``: close the connection after ``after_bytes`` body bytes.
    * ``stall(match, after_bytes, seconds, times)``: pause ``seconds`` after ``after_bytes`` body bytes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency: float = 0.0
        self.bandwidth: int | None = None
        self._fails: list[_Fail] = []
        self._body: list[_BodyFault] = []

    def reset(self) -> None:
        with self._lock:
            self.latency = 0.0
            self.bandwidth = None
            self._fails.clear()
            self._body.clear()

    # -- configuration ------------------------------------------------------------------------
    def fail(
        self,
        match: str,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: float | int | None = None,
        message: str | None = None,
    ) -> None:
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._fails.append(
                _Fail(match, int(status), int(times), retry_after, message or f"injected failure {status}")
            )

    def drop(self, match: str, *, after_bytes: int = 0, times: int = 1) -> None:
        with self._lock:
            self._body.append(_BodyFault("drop", match, int(after_bytes), int(times)))

    def stall(self, match: str, *, after_bytes: int = 0, seconds: float = 1.0, times: int = 1) -> None:
        with self._lock:
            self._body.append(_BodyFault("stall", match, int(after_bytes), int(times), float(seconds)))

    @property
    def pending(self) -> dict[str, int]:
        """Remaining counts, e.g. {'fail': 1, 'drop': 0, 'stall': 0}."""
        with self._lock:
            return {
                "fail": sum(f.times for f in self._fails),
                "drop": sum(b.times for b in self._body if b.kind == "drop"),
                "stall": sum(b.times for b in self._body if b.kind == "stall"),
            }

    # -- consumption (server side) ------------------------------------------------------------
    @staticmethod
    def _matches(match: str, route: str, target: str) -> bool:
        return match == route or match in target

    def take_fail(self, route: str, target: str) -> _Fail | None:
        with self._lock:
            for f in self._fails:
                if f.times > 0 and self._matches(f.match, route, target):
                    f.times -= 1
                    return f
            self._fails[:] = [f for f in self._fails if f.times > 0]
        return None

    def take_body_plan(self, route: str, target: str) -> BodyPlan:
        plan = BodyPlan()
        with self._lock:
            for b in self._body:
                if b.times <= 0 or not self._matches(b.match, route, target):
                    continue
                if b.kind == "drop" and plan.drop_after is None:
                    b.times -= 1
                    plan.drop_after = b.after_bytes
                elif b.kind == "stall" and plan.stall_after is None:
                    b.times -= 1
                    plan.stall_after = b.after_bytes
                    plan.stall_seconds = b.seconds
            self._body[:] = [b for b in self._body if b.times > 0]
        return plan
