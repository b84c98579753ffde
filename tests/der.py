"""Diarization error rate as NIST md-eval and pyannote.metrics define it, with no collar and overlapping
speech scored: exact over the elementary intervals between all segment boundaries, speakers mapped
one-to-one to maximise the matched time (Hungarian algorithm)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Turn = tuple[float, float, str]  # start, end (seconds), speaker


@dataclass(frozen=True)
class Score:
    speech: float  # reference speaker time: overlapping speakers count once each
    missed: float
    false_alarm: float
    confusion: float

    @property
    def der(self) -> float:
        return (self.missed + self.false_alarm + self.confusion) / self.speech if self.speech else 0.0


def _activity(turns: list[Turn], edges: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(intervals, speakers) booleans: who speaks in each interval between consecutive edges."""
    speakers = sorted({speaker for _, _, speaker in turns})
    active = np.zeros((len(edges) - 1, len(speakers)), dtype=bool)
    middles = (edges[:-1] + edges[1:]) / 2
    for start, end, speaker in turns:
        active[(middles > start) & (middles < end), speakers.index(speaker)] = True
    return active, speakers


def _cropped(turns: list[Turn], start: float, end: float) -> list[Turn]:
    return [(max(s, start), min(e, end), who) for s, e, who in turns if min(e, end) > max(s, start)]


def score(reference: list[Turn], hypothesis: list[Turn], scored: tuple[float, float]) -> Score:
    """Missed, false alarm and confusion seconds of `hypothesis` within the `scored` region (a UEM)."""
    from scipy.optimize import linear_sum_assignment

    reference, hypothesis = _cropped(reference, *scored), _cropped(hypothesis, *scored)
    edges = np.unique([*scored, *(t for s, e, _ in reference + hypothesis for t in (s, e))])
    durations = np.diff(edges)
    ref, _ = _activity(reference, edges)
    hyp, _ = _activity(hypothesis, edges)
    n_ref, n_hyp = ref.sum(axis=1), hyp.sum(axis=1)
    matched = 0.0
    if ref.shape[1] and hyp.shape[1]:
        together = (ref.T.astype(float) * durations) @ hyp.astype(float)  # seconds each pair speaks at once
        rows, columns = linear_sum_assignment(together, maximize=True)
        matched = float(together[rows, columns].sum())
    return Score(
        speech=float(durations @ n_ref),
        missed=float(durations @ np.maximum(n_ref - n_hyp, 0)),
        false_alarm=float(durations @ np.maximum(n_hyp - n_ref, 0)),
        confusion=float(durations @ np.minimum(n_ref, n_hyp)) - matched,
    )


def overlap_floor(reference: list[Turn], scored: tuple[float, float]) -> float:
    """The lowest DER a system that gives each instant at most one speaker can reach: every speaker
    beyond the first in overlapping speech is missed."""
    reference = _cropped(reference, *scored)
    edges = np.unique([*scored, *(t for s, e, _ in reference for t in (s, e))])
    durations = np.diff(edges)
    n_ref = _activity(reference, edges)[0].sum(axis=1)
    speech = float(durations @ n_ref)
    return float(durations @ np.maximum(n_ref - 1, 0)) / speech if speech else 0.0


def who_is(reference: list[Turn], hypothesis: list[Turn], speaker: str) -> str | None:
    """The reference speaker who talks longest during the turns of the hypothesis's `speaker`."""
    talked: dict[str, float] = {}
    for start, end, _ in (turn for turn in hypothesis if turn[2] == speaker):
        for s, e, who in reference:
            talked[who] = talked.get(who, 0.0) + max(0.0, min(e, end) - max(s, start))
    return max(talked, key=talked.get) if any(talked.values()) else None


def turns_of(segments: list[dict]) -> list[Turn]:
    """The handler's segments ({"start", "end", "speaker"}) as turns."""
    return [(s["start"], s["end"], s["speaker"]) for s in segments]


def speech_seconds(turns: list[Turn], scored: tuple[float, float]) -> float:
    """Seconds of the `scored` region in which anyone speaks."""
    turns = _cropped(turns, *scored)
    edges = np.unique([*scored, *(t for s, e, _ in turns for t in (s, e))])
    return float(np.diff(edges) @ _activity(turns, edges)[0].any(axis=1))
