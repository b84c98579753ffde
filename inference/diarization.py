"""Who spoke when: speech segments -> 1.6 s windows -> voice embeddings -> clustering -> speaker turns."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .silero_vad import Segment
from .voice_encoder import SAMPLE_RATE, VoiceEncoder

WINDOW_SECONDS = 1.6  # one Resemblyzer partial
WINDOW_HOP_SECONDS = 0.8
# Embeddings of shorter windows are noisy: they join the nearest cluster instead of shaping the clusters.
MIN_CLUSTERING_SECONDS = 1.0
# Cosine distance under which two average-linkage clusters of windows merge when the speaker count is
# not given. In tests/data, windows of one voice are ~0.2 apart on average, of two voices ~0.5.
DEFAULT_DISTANCE_THRESHOLD = 0.3
# Resemblyzer's preprocessing raises quiet audio to this level before embedding.
TARGET_DBFS = -30.0


@dataclass(frozen=True)
class SpeakerTurn:
    start: float
    end: float
    speaker: str


def windows(segment: Segment) -> list[tuple[float, float]]:
    """Windows of WINDOW_SECONDS spread evenly over the segment (the segment itself when shorter)."""
    duration = segment.end - segment.start
    if duration <= WINDOW_SECONDS:
        return [(segment.start, segment.end)]
    count = math.ceil((duration - WINDOW_SECONDS) / WINDOW_HOP_SECONDS) + 1
    starts = np.linspace(segment.start, segment.end - WINDOW_SECONDS, count)
    return [(float(start), float(start) + WINDOW_SECONDS) for start in starts]


def _louder_speech(audio: np.ndarray, segments: list[Segment]) -> np.ndarray:
    speech = np.concatenate([audio[int(s.start * SAMPLE_RATE) : int(s.end * SAMPLE_RATE)] for s in segments])
    rms = float(np.sqrt(np.mean(np.square(speech, dtype=np.float64))))
    if rms == 0:
        return audio
    gain = 10 ** ((TARGET_DBFS - 20 * math.log10(rms)) / 20)
    return audio * gain if gain > 1 else audio


def cluster(embeddings: np.ndarray, num_speakers: int | None, threshold: float) -> np.ndarray:
    """A speaker label per embedding: exactly num_speakers clusters when given, else by distance threshold
    (average linkage on cosine distance)."""
    from sklearn.cluster import AgglomerativeClustering

    if len(embeddings) < 2 or num_speakers == 1:
        return np.zeros(len(embeddings), dtype=int)
    if num_speakers:
        clustering = AgglomerativeClustering(
            n_clusters=min(num_speakers, len(embeddings)), metric="cosine", linkage="average"
        )
    else:
        clustering = AgglomerativeClustering(
            n_clusters=None, distance_threshold=threshold, metric="cosine", linkage="average"
        )
    return clustering.fit_predict(embeddings)


def cluster_windows(
    embeddings: np.ndarray, durations: np.ndarray, num_speakers: int | None, threshold: float
) -> np.ndarray:
    """Cluster the windows long enough to trust, then give each short one its nearest cluster's label."""
    reliable = durations >= MIN_CLUSTERING_SECONDS
    if reliable.all() or reliable.sum() < max(2, num_speakers or 0):
        return cluster(embeddings, num_speakers, threshold)
    labels = np.empty(len(embeddings), dtype=int)
    labels[reliable] = cluster(embeddings[reliable], num_speakers, threshold)
    speakers = np.unique(labels[reliable])
    centroids = np.stack([embeddings[reliable][labels[reliable] == s].mean(axis=0) for s in speakers])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    labels[~reliable] = speakers[np.argmax(embeddings[~reliable] @ centroids.T, axis=1)]
    return labels


def _turns_in_segment(segment: Segment, spans: list[tuple[float, float]], labels: list[int]):
    """Split the segment where consecutive windows change label (halfway between their centres)."""
    turns = []
    start = segment.start
    for index in range(1, len(spans)):
        if labels[index] != labels[index - 1]:
            previous_centre = sum(spans[index - 1]) / 2
            centre = sum(spans[index]) / 2
            boundary = (previous_centre + centre) / 2
            turns.append((start, boundary, labels[index - 1]))
            start = boundary
    turns.append((start, segment.end, labels[-1]))
    return turns


def diarize(
    audio: np.ndarray,
    segments: list[Segment],
    encoder: VoiceEncoder,
    num_speakers: int | None = None,
    threshold: float = DEFAULT_DISTANCE_THRESHOLD,
) -> list[SpeakerTurn]:
    if not segments:
        return []
    audio = _louder_speech(audio, segments)
    spans_per_segment = [windows(segment) for segment in segments]
    all_spans = [span for spans in spans_per_segment for span in spans]
    embeddings = encoder.embed_utterances(
        [audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)] for start, end in all_spans]
    )
    durations = np.array([end - start for start, end in all_spans])
    labels = cluster_windows(embeddings, durations, num_speakers, threshold).tolist()

    raw_turns = []
    offset = 0
    for segment, spans in zip(segments, spans_per_segment, strict=True):
        raw_turns += _turns_in_segment(segment, spans, labels[offset : offset + len(spans)])
        offset += len(spans)

    # Name speakers in order of first appearance: SPEAKER_00 speaks first.
    names: dict[int, str] = {}
    for _, _, label in raw_turns:
        names.setdefault(label, f"SPEAKER_{len(names):02d}")
    return [SpeakerTurn(round(start, 3), round(end, 3), names[label]) for start, end, label in raw_turns]
