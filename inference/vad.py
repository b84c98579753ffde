"""Voice activity from pyannote's segmentation model, as pyannote's VoiceActivityDetection pipeline does: in
overlapping 10 s chunks, the probability that anyone speaks in each 16.875 ms frame (1 - the probability of
the powerset's silence class), averaged over the chunks, then hysteresis.

On far-field meeting audio it finds much more of the speech than Silero VAD did (SERVERLESS_DEPLOYMENT.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .diarization import aggregate, chunk_starts
from .segmentation import FRAME_SAMPLES, SAMPLE_RATE, SpeakerSegmentation, frame_seconds, runs

DEFAULT_THRESHOLD = 0.5
# Chunks every 2.99 s: on the AMI excerpts as accurate as every second (speaker tracking needs that, not
# speech detection), at a third of the cost.
CHUNK_STEP_FRAMES = 177
# Speech ends where the probability falls under threshold - OFFSET_GAP (Silero VAD's rule); gaps under
# MIN_SILENCE_SECONDS are bridged, then speech under MIN_SPEECH_SECONDS dropped.
OFFSET_GAP = 0.15
MIN_OFFSET = 0.01
MIN_SILENCE_SECONDS = 0.15
MIN_SPEECH_SECONDS = 0.1


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float


def speech_probability(audio: np.ndarray, segmentation: SpeakerSegmentation) -> np.ndarray:
    """Probability of speech in each segmentation frame of the audio."""
    from threadpoolctl import threadpool_limits

    starts = chunk_starts(len(audio), CHUNK_STEP_FRAMES)
    with threadpool_limits(limits=1, user_api="blas"):  # see diarization.diarize
        log_probabilities = segmentation(audio, starts)
    offsets = [start // FRAME_SAMPLES for start in starts]
    speech = 1.0 - np.exp(log_probabilities[..., :1])
    return aggregate(speech, offsets, offsets[-1] + log_probabilities.shape[1])[:, 0]


def hysteresis(probability: np.ndarray, onset: float, offset: float) -> np.ndarray:
    """On from a frame at or above `onset` until the first frame under `offset`."""
    active = np.zeros(len(probability), dtype=bool)
    on = False
    for index, value in enumerate(probability.tolist()):
        on = value >= onset if not on else value >= offset
        active[index] = on
    return active


def speech_segments(
    audio: np.ndarray, segmentation: SpeakerSegmentation, threshold: float = DEFAULT_THRESHOLD
) -> list[Segment]:
    """Speech segments: speech starts where its probability reaches `threshold`."""
    probability = speech_probability(audio, segmentation)
    active = hysteresis(probability, threshold, max(threshold - OFFSET_GAP, MIN_OFFSET))
    duration = len(audio) / SAMPLE_RATE
    spans: list[list[float]] = []
    for first, end in runs(active):
        start, stop = frame_seconds(first, end, len(active), duration)
        if spans and start - spans[-1][1] < MIN_SILENCE_SECONDS:
            spans[-1][1] = stop
        else:
            spans.append([start, stop])
    return [Segment(round(a, 3), round(b, 3)) for a, b in spans if b - a >= MIN_SPEECH_SECONDS]
