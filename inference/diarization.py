"""Who spoke when, after pyannote's speaker-diarization-3.1 pipeline, without torch:

1. segmentation: 10 s chunks every second; in each, who of up to three chunk-local speakers speaks in each
   16.875 ms frame (at most two at once), with a bias towards speech and towards two speakers at once
   (far-field meetings: quiet voices and much overlapping speech);
2. count: how many speakers speak in each frame, the chunks' counts averaged and rounded;
3. voice features: 3D-Speaker's CAM++ runs once over all the speech (in 3 s blocks) up to its statistics
   pooling, giving a 512-d feature every 20 ms;
4. embeddings: one per local speaker of each chunk ("unit"), pooled from the features of the frames where
   it speaks alone (all of its frames when it is alone for under half a second);
5. clustering: units alone for long enough are grouped by average-linkage agglomeration on cosine distance
   (two units of one chunk never together); every unit then goes to the most similar speaker, the units of
   one chunk to different speakers;
6. reconstruction: each speaker's activity averaged over the chunks; each frame keeps its `count` most
   active speakers, so overlapping speech yields overlapping turns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .campplus import FEATURE_SIZE, CamPlusPlus, fbank
from .segmentation import (
    CHUNK_SAMPLES,
    FRAME_SAMPLES,
    RECEPTIVE_FIELD_SAMPLES,
    SAMPLE_RATE,
    SpeakerSegmentation,
    local_speakers,
)

CHUNK_STEP_FRAMES = 59  # 0.996 s, pyannote's 10 % of a chunk, on the frame grid
# Added to the log-odds of speech against silence, and of two speakers against one, in each frame.
SPEECH_BIAS = 1.0
OVERLAP_BIAS = 1.0
# Cosine distance under which two average-linkage clusters of units merge.
DEFAULT_DISTANCE_THRESHOLD = 0.5
# With min_speakers above the speakers found, the threshold is lowered by steps down to this, no further:
# a single voice is not split to reach a count.
MIN_HINTED_THRESHOLD = 0.45
THRESHOLD_STEP = 0.05
# CAM++ features come every 20 ms. A unit is embedded from its lone speech when it has this many features
# of it, and shapes the clusters when it has CLUSTERING_FEATURES.
LONE_FEATURES = 25  # 0.5 s
CLUSTERING_FEATURES = 35  # 0.7 s
FEATURE_BLOCK_FRAMES = 300  # filterbank frames (3 s) per CAM++ pass: its training segments' length
BLOCKS_PER_BATCH = 16  # bounds the memory of the convolutional front end
FRAME_CENTRE_SAMPLES = RECEPTIVE_FIELD_SAMPLES // 2


@dataclass(frozen=True)
class SpeakerTurn:
    start: float
    end: float
    speaker: str


def chunk_starts(n_samples: int, step_frames: int = CHUNK_STEP_FRAMES) -> list[int]:
    """Sample offsets of the chunks: every step_frames frames, the last one ending at the audio's end."""
    last = max(0, n_samples - CHUNK_SAMPLES)
    starts = list(range(0, last + 1, step_frames * FRAME_SAMPLES))
    if starts[-1] < last:
        starts.append(-(-last // FRAME_SAMPLES) * FRAME_SAMPLES)
    return starts


def aggregate(per_chunk: np.ndarray, offsets: list[int], n_frames: int) -> np.ndarray:
    """(chunks, frames, k) -> (n_frames, k): each frame's mean over the chunks that cover it."""
    sums = np.zeros((n_frames, per_chunk.shape[2]))
    covered = np.zeros(n_frames)
    for offset, values in zip(offsets, per_chunk, strict=True):
        sums[offset : offset + len(values)] += values
        covered[offset : offset + len(values)] += 1
    return sums / np.maximum(covered, 1)[:, None]


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, last + 1) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def frame_samples(first: int, end: int) -> tuple[int, int]:
    """The samples whose nearest frame centre is among frames [first, end)."""
    return (
        FRAME_CENTRE_SAMPLES + first * FRAME_SAMPLES - FRAME_SAMPLES // 2,
        FRAME_CENTRE_SAMPLES + end * FRAME_SAMPLES - FRAME_SAMPLES // 2,
    )


def cluster(
    distance: np.ndarray, apart: np.ndarray, threshold: float, min_clusters: int = 1, max_clusters: int | None = None
) -> np.ndarray:
    """A label per item from average-linkage agglomeration of their (n, n) distances: the closest two
    clusters merge while they are under `threshold` apart and more than min_clusters remain, and past the
    threshold while more than max_clusters remain. Clusters holding two items that are `apart` merge only
    to get down to max_clusters."""
    members = [[i] for i in range(len(distance))]
    distance = distance.astype(np.float64).copy()
    apart = apart.copy()
    np.fill_diagonal(distance, np.inf)
    while len(members) > min_clusters:
        forced = max_clusters is not None and len(members) > max_clusters
        allowed = np.where(apart, np.inf, distance)
        if forced and not np.isfinite(allowed).any():
            allowed = distance
        a, b = sorted(np.unravel_index(np.argmin(allowed), allowed.shape))
        if not np.isfinite(allowed[a, b]) or (not forced and allowed[a, b] >= threshold):
            break
        size_a, size_b = len(members[a]), len(members[b])
        distance[a] = (distance[a] * size_a + distance[b] * size_b) / (size_a + size_b)
        distance[:, a] = distance[a]
        distance[a, a] = np.inf
        apart[a] |= apart[b]
        apart[:, a] = apart[a]
        members[a] += members.pop(b)
        distance, apart = (np.delete(np.delete(m, b, axis=0), b, axis=1) for m in (distance, apart))
    labels = np.empty(sum(map(len, members)), dtype=int)
    for label, items in enumerate(members):
        labels[items] = label
    return labels


def cluster_with_hint(
    distance: np.ndarray, apart: np.ndarray, threshold: float, min_clusters: int, max_clusters: int | None
) -> np.ndarray:
    """`cluster` down to max_clusters; while fewer than min_clusters come out, again with a threshold lowered
    by THRESHOLD_STEP, not below MIN_HINTED_THRESHOLD (nor below `threshold` itself)."""
    labels = cluster(distance, apart, threshold, 1, max_clusters)
    floor = min(threshold, MIN_HINTED_THRESHOLD)
    while labels.max() + 1 < min_clusters and threshold - THRESHOLD_STEP >= floor - 1e-9:
        threshold -= THRESHOLD_STEP
        labels = cluster(distance, apart, threshold, 1, max_clusters)
    return labels


def _assign(similarity: np.ndarray, chunk_of: np.ndarray) -> np.ndarray:
    """The speaker of each unit: the most similar one, the units of one chunk on different speakers
    (Hungarian algorithm per chunk); -1 where a chunk has more than there are."""
    from scipy.optimize import linear_sum_assignment

    speakers = np.full(len(similarity), -1)
    for chunk in np.unique(chunk_of):
        members = np.flatnonzero(chunk_of == chunk)
        rows, columns = linear_sum_assignment(similarity[members], maximize=True)
        speakers[members[rows]] = columns
    return speakers


def _normalized(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def voice_features(audio: np.ndarray, speech: np.ndarray, encoder: CamPlusPlus) -> tuple[np.ndarray, np.ndarray]:
    """CAM++ frame features of the frames where `speech` is on, their runs joined: (n, 512) features and, for
    each, the segmentation frame it is centred on (ascending)."""
    pieces, frame_of_sample = [], []
    for first, end in runs(speech):
        a, b = frame_samples(first, end)
        a, b = max(a, 0), min(b, len(audio))
        if b > a:
            pieces.append(audio[a:b])
            frame_of_sample.append(np.clip((np.arange(a, b) - a) // FRAME_SAMPLES + first, first, end - 1))
    features = fbank(np.concatenate(pieces)) if pieces else np.zeros((0, 80), dtype=np.float32)
    if not len(features):
        return np.zeros((0, FEATURE_SIZE), dtype=np.float32), np.zeros(0, dtype=int)
    features -= features.mean(axis=0)
    # Equal blocks, the last one padded: a batch needs one length.
    n_blocks = max(1, round(len(features) / FEATURE_BLOCK_FRAMES))
    length = -(-len(features) // n_blocks)
    blocks = np.pad(features, ((0, n_blocks * length - len(features)), (0, 0)), mode="edge")
    blocks = blocks.reshape(n_blocks, length, -1)
    outputs = np.concatenate(
        [
            encoder.frame_features(blocks[i : i + BLOCKS_PER_BATCH]).reshape(-1, FEATURE_SIZE)
            for i in range(0, n_blocks, BLOCKS_PER_BATCH)
        ]
    )
    per_block = (length + 1) // 2
    centres = (np.arange(n_blocks)[:, None] * length + 2 * np.arange(per_block)[None, :]).ravel()  # fbank frames
    kept = centres < len(features)
    samples = np.minimum(centres[kept] * 160 + 200, sum(map(len, pieces)) - 1)
    return outputs[kept], np.concatenate(frame_of_sample)[samples]


def _pooled(features: np.ndarray, rows: list[np.ndarray], encoder: CamPlusPlus) -> np.ndarray:
    """One normalised embedding per set of feature rows (zeros for an empty set)."""
    statistics = np.zeros((len(rows), 2 * FEATURE_SIZE), dtype=np.float32)
    for index, selected in enumerate(rows):
        if len(selected):
            chosen = features[selected]
            std = chosen.std(axis=0, ddof=1) if len(chosen) > 1 else np.zeros(FEATURE_SIZE)
            statistics[index] = np.concatenate([chosen.mean(axis=0), std])
    embeddings = _normalized(encoder.embed_statistics(statistics))
    embeddings[[not len(selected) for selected in rows]] = 0.0
    return embeddings


def _turns(active: np.ndarray, duration: float) -> list[tuple[float, float, int]]:
    turns = []
    for speaker in range(active.shape[1]):
        for first, end in runs(active[:, speaker]):
            a, b = frame_samples(first, end)
            turns.append((max(0.0, a / SAMPLE_RATE), min(duration, b / SAMPLE_RATE), speaker))
    return sorted(turns)


def diarize(
    audio: np.ndarray,
    segmentation: SpeakerSegmentation,
    encoder: CamPlusPlus,
    min_speakers: int = 1,
    max_speakers: int | None = None,
    threshold: float = DEFAULT_DISTANCE_THRESHOLD,
) -> list[SpeakerTurn]:
    """Speaker turns, sorted by start. At most max_speakers speakers; at least min_speakers when that many
    voices are told apart (a voice is never split to reach a count, so there can be fewer)."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread: most products are small (an LSTM step), and on a busy CPU a second thread waiting
    # for a descheduled one made requests several times slower.
    with threadpool_limits(limits=1, user_api="blas"):
        return _diarize(audio, segmentation, encoder, min_speakers, max_speakers, threshold)


def _diarize(audio, segmentation, encoder, min_speakers, max_speakers, threshold) -> list[SpeakerTurn]:
    starts = chunk_starts(len(audio))
    local = local_speakers(segmentation(audio, starts), SPEECH_BIAS, OVERLAP_BIAS)  # (chunks, frames, 3)
    offsets = [start // FRAME_SAMPLES for start in starts]
    frames = local.shape[1]
    n_frames = offsets[-1] + frames
    # Speakers per frame, rounded half up (np.rint rounds 0.5 down to 0).
    count = np.floor(aggregate(local.sum(axis=2, keepdims=True), offsets, n_frames)[:, 0] + 0.5).astype(int)
    features, feature_frame = voice_features(audio, count > 0, encoder)
    chunk_of, speaker_of = np.nonzero(local.any(axis=1))
    if not len(features) or not len(chunk_of):
        return []

    # Each unit's feature rows: those of its lone frames, or of all its frames.
    alone = local & (local.sum(axis=2, keepdims=True) == 1)
    rows, lone_rows = [], np.zeros(len(chunk_of), dtype=int)
    for unit, (c, k) in enumerate(zip(chunk_of, speaker_of, strict=True)):
        low, high = np.searchsorted(feature_frame, [offsets[c], offsets[c] + frames])
        within = feature_frame[low:high] - offsets[c]
        lone = low + np.flatnonzero(alone[c, within, k])
        lone_rows[unit] = len(lone)
        rows.append(lone if len(lone) >= LONE_FEATURES else low + np.flatnonzero(local[c, within, k]))
    embeddings = _pooled(features, rows, encoder)

    clustered = np.flatnonzero(lone_rows >= CLUSTERING_FEATURES)
    if not len(clustered):
        clustered = np.array([int(np.argmax(lone_rows))])
    same_chunk = chunk_of[clustered][:, None] == chunk_of[clustered][None, :]
    distance = 1 - embeddings[clustered] @ embeddings[clustered].T
    labels = cluster_with_hint(distance, same_chunk, threshold, min_speakers, max_speakers)
    centroids = _normalized(
        np.stack([embeddings[clustered][labels == s].mean(axis=0) for s in range(labels.max() + 1)])
    )
    speakers = _assign(embeddings @ centroids.T, chunk_of)

    per_chunk = np.zeros((len(starts), frames, len(centroids)))
    for c, k, s in zip(chunk_of, speaker_of, speakers, strict=True):
        if s >= 0:
            per_chunk[c, :, s] = np.maximum(per_chunk[c, :, s], local[c, :, k])
    activity = aggregate(per_chunk, offsets, n_frames)
    ranks = np.argsort(np.argsort(-activity, axis=1, kind="stable"), axis=1)
    active = (ranks < count[:, None]) & (activity > 0)

    # Name speakers in order of first appearance: SPEAKER_00 speaks first.
    names: dict[int, str] = {}
    turns = _turns(active, len(audio) / SAMPLE_RATE)
    for _, _, speaker in turns:
        names.setdefault(speaker, f"SPEAKER_{len(names):02d}")
    return [SpeakerTurn(round(start, 3), round(end, 3), names[speaker]) for start, end, speaker in turns]
