"""Runtime-settable fault injection for the local hub.

All faults are bounded: ``times`` counts down to zero, sleeps are interruptible
by the server's stop event, and ``reset()`` clears everything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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
class Answer:
    """How a hostile hub answers one request (decided when the request arrives)."""

    match: str = ""
    times: int = 1
    hang: float = 0.0  # seconds of silence before the status line
    drip: float | None = None  # bytes/s for the body (files too), and for the headers when drip_headers
    drip_headers: bool = False
    endless: tuple[bytes, bytes] | None = None  # (start, repeated forever): a body without end or length
    tamper: Callable[[Any], Any] | None = None  # JSON payload -> JSON payload


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

    A hostile hub (``times`` matching requests each):

    * ``hang(match, seconds)``: accept the request, then send nothing for ``seconds``.
    * ``drip(match, bytes_per_second, headers=False)``: send the body (and the headers) at that rate.
    * ``endless(match, start, repeat)``: a 200 whose body is ``start`` then ``repeat`` forever, without a length.
    * ``tamper(match, fn)``: a JSON answer is replaced by ``fn(payload)``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency: float = 0.0
        self.bandwidth: int | None = None
        self._fails: list[_Fail] = []
        self._body: list[_BodyFault] = []
        self._answers: list[Answer] = []

    def reset(self) -> None:
        with self._lock:
            self.latency = 0.0
            self.bandwidth = None
            self._fails.clear()
            self._body.clear()
            self._answers.clear()

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

    def hang(self, match: str, *, seconds: float, times: int = 1) -> None:
        self._answer(Answer(match, times, hang=float(seconds)))

    def drip(self, match: str, *, bytes_per_second: float, headers: bool = False, times: int = 1) -> None:
        self._answer(Answer(match, times, drip=float(bytes_per_second), drip_headers=headers))

    def endless(self, match: str, *, start: bytes, repeat: bytes, times: int = 1) -> None:
        self._answer(Answer(match, times, endless=(start, repeat)))

    def tamper(self, match: str, fn: Callable[[Any], Any], *, times: int = 1) -> None:
        self._answer(Answer(match, times, tamper=fn))

    def _answer(self, answer: Answer) -> None:
        if answer.times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._answers.append(answer)

    def take_answer(self, route: str, target: str) -> Answer | None:
        with self._lock:
            for answer in self._answers:
                if answer.times > 0 and self._matches(answer.match, route, target):
                    answer.times -= 1
                    self._answers[:] = [a for a in self._answers if a.times > 0]
                    return answer
        return None

    @property
    def pending(self) -> dict[str, int]:
        """Remaining counts, e.g. {'fail': 1, 'drop': 0, 'stall': 0, 'answer': 0}."""
        with self._lock:
            return {
                "answer": sum(a.times for a in self._answers),
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
