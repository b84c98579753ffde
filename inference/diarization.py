"""Who spoke when, the way pyannote's speaker-diarization-3.1 pipeline does it, without torch:

1. segmentation: 10 s chunks every ~2.5 s; in each, who of up to three chunk-local speakers speaks in each
   16.875 ms frame (at most two at once);
2. count: how many speakers speak in each frame, the chunks' counts averaged and rounded;
3. embeddings: a voice embedding of each local speaker of each chunk, from the frames where it speaks alone;
4. clustering: local speakers -> speakers of the whole recording (agglomerative on cosine distance, or
   exactly num_speakers); two local speakers of one chunk never become the same speaker;
5. reconstruction: each speaker's activity averaged over the chunks; each frame keeps its `count` most
   active speakers, so overlapping speech yields overlapping turns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .segmentation import (
    CHUNK_SAMPLES,
    FRAME_SAMPLES,
    RECEPTIVE_FIELD_SAMPLES,
    SpeakerSegmentation,
    local_speakers,
)
from .voice_encoder import SAMPLE_RATE, VoiceEncoder

CHUNK_STEP_FRAMES = 148  # 2.4975 s: chunk starts fall on the frame grid
# A local speaker with less lone speech than this joins the nearest cluster instead of shaping the clusters.
MIN_CLUSTERING_SECONDS = 1.0
# Cosine distance under which two average-linkage clusters of local speakers merge when the speaker
# count is not given.
DEFAULT_DISTANCE_THRESHOLD = 0.3
FRAME_CENTRE_SAMPLES = RECEPTIVE_FIELD_SAMPLES // 2
SPEECH_BIAS = 0.0
TARGET_DBFS = -30.0  # Resemblyzer's preprocessing level
MAX_PARTIALS = 4
SAME_VOICE_IOU = 0.5
SAME_VOICE_MIN_FRAMES = 30


@dataclass(frozen=True)
class SpeakerTurn:
    start: float
    end: float
    speaker: str


def chunk_starts(n_samples: int) -> list[int]:
    """Sample offsets of the chunks: every CHUNK_STEP_FRAMES frames, the last one ending at the audio's end."""
    last = max(0, n_samples - CHUNK_SAMPLES)
    starts = list(range(0, last + 1, CHUNK_STEP_FRAMES * FRAME_SAMPLES))
    if starts[-1] < last:
        starts.append(-(-last // FRAME_SAMPLES) * FRAME_SAMPLES)
    return starts


def _aggregate(per_chunk: np.ndarray, offsets: list[int], n_frames: int) -> np.ndarray:
    """(chunks, frames, k) -> (n_frames, k): each frame's mean over the chunks that cover it."""
    sums = np.zeros((n_frames, per_chunk.shape[2]))
    covered = np.zeros(n_frames)
    for offset, values in zip(offsets, per_chunk, strict=True):
        sums[offset : offset + len(values)] += values
        covered[offset : offset + len(values)] += 1
    return sums / np.maximum(covered, 1)[:, None]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, last + 1) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _frame_samples(start: int, first: int, end: int) -> tuple[int, int]:
    """The samples whose nearest frame centre is among frames [first, end) of the chunk at `start`."""
    centre = start + FRAME_CENTRE_SAMPLES
    return centre + first * FRAME_SAMPLES - FRAME_SAMPLES // 2, centre + end * FRAME_SAMPLES - FRAME_SAMPLES // 2


def _speaker_audio(audio: np.ndarray, start: int, frames: np.ndarray) -> np.ndarray:
    """The samples of the chunk's frames where the mask is on, at TARGET_DBFS: the voice encoder's mel
    power features scale with the level, and in meetings the same voice comes near and far."""
    pieces = [audio[max(0, a) : max(0, b)] for a, b in (_frame_samples(start, *run) for run in _runs(frames))]
    speech = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(speech, dtype=np.float64)))) if len(speech) else 0.0
    return speech * (10 ** (TARGET_DBFS / 20) / rms) if rms > 0 else speech


def cluster(
    distance: np.ndarray, apart: np.ndarray, together: np.ndarray, num_speakers: int | None, threshold: float
) -> np.ndarray:
    """A label per item from average-linkage agglomeration of their (n, n) distances: first every two
    clusters holding items `together` (one voice seen from two chunks: never split, so there can be fewer
    than num_speakers), then while the closest two clusters are under `threshold` apart, or until
    num_speakers clusters remain when it is given. Clusters holding two items that are `apart` (local
    speakers of one chunk) merge only to reach num_speakers."""
    members = [[i] for i in range(len(distance))]
    distance = distance.astype(np.float64).copy()
    apart, together = apart.copy(), together & ~apart
    np.fill_diagonal(distance, np.inf)
    while True:
        if together.any():
            a, b = np.argwhere(together)[0]
        else:
            if len(members) <= (num_speakers or 1):
                break
            allowed = np.where(apart, np.inf, distance)
            if num_speakers and not np.isfinite(allowed).any():
                allowed = distance
            a, b = np.unravel_index(np.argmin(allowed), allowed.shape)
            if not np.isfinite(allowed[a, b]) or (not num_speakers and allowed[a, b] >= threshold):
                break
        a, b = min(a, b), max(a, b)
        size_a, size_b = len(members[a]), len(members[b])
        distance[a] = (distance[a] * size_a + distance[b] * size_b) / (size_a + size_b)
        distance[:, a] = distance[a]
        distance[a, a] = np.inf
        for links in (apart, together):
            links[a] |= links[b]
            links[:, a] = links[a]
        together &= ~apart
        members[a] += members.pop(b)
        distance, apart, together = (np.delete(np.delete(m, b, axis=0), b, axis=1) for m in (distance, apart, together))
    labels = np.empty(len(distance) and sum(map(len, members)), dtype=int)
    for label, items in enumerate(members):
        labels[items] = label
    return labels


def _same_voice(local: np.ndarray, offsets: list[int], chunk_of: np.ndarray, speaker_of: np.ndarray) -> np.ndarray:
    """(n, n) booleans: local speakers of two overlapping chunks that speak in the same frames where the
    chunks overlap (intersection over union at least SAME_VOICE_IOU): one voice seen from both chunks."""
    n = len(chunk_of)
    same = np.zeros((n, n), dtype=bool)
    frames = local.shape[1]
    for i, j in zip(*np.triu_indices(n, 1), strict=True):
        shift = offsets[chunk_of[j]] - offsets[chunk_of[i]]
        if chunk_of[i] == chunk_of[j] or abs(shift) >= frames:
            continue
        a = local[chunk_of[i], max(0, shift) : frames + min(0, shift), speaker_of[i]]
        b = local[chunk_of[j], max(0, -shift) : frames - max(0, shift), speaker_of[j]]
        both, either = np.sum(a & b), np.sum(a | b)
        same[i, j] = same[j, i] = both >= SAME_VOICE_MIN_FRAMES and both >= SAME_VOICE_IOU * either
    return same


def _assign(similarity: np.ndarray, chunk_of: np.ndarray) -> np.ndarray:
    """The speaker of each local speaker: the most similar centroid, with the local speakers of one chunk
    on different speakers (Hungarian algorithm per chunk); -1 where a chunk has more than there are."""
    from scipy.optimize import linear_sum_assignment

    speakers = np.full(len(similarity), -1)
    for chunk in np.unique(chunk_of):
        members = np.flatnonzero(chunk_of == chunk)
        rows, columns = linear_sum_assignment(similarity[members], maximize=True)
        speakers[members[rows]] = columns
    return speakers


def _turns(active: np.ndarray, duration: float) -> list[tuple[float, float, int]]:
    turns = []
    for speaker in range(active.shape[1]):
        for first, end in _runs(active[:, speaker]):
            a, b = _frame_samples(0, first, end)
            turns.append((max(0.0, a / SAMPLE_RATE), min(duration, b / SAMPLE_RATE), speaker))
    return sorted(turns)


def diarize(
    audio: np.ndarray,
    segmentation: SpeakerSegmentation,
    encoder: VoiceEncoder,
    num_speakers: int | None = None,
    threshold: float = DEFAULT_DISTANCE_THRESHOLD,
) -> list[SpeakerTurn]:
    starts = chunk_starts(len(audio))
    local = local_speakers(segmentation(audio, starts), SPEECH_BIAS)  # (chunks, frames, 3)
    offsets = [start // FRAME_SAMPLES for start in starts]
    n_frames = offsets[-1] + local.shape[1]
    count = np.rint(_aggregate(local.sum(axis=2, keepdims=True), offsets, n_frames)[:, 0]).astype(int)

    chunk_of, speaker_of = np.nonzero(local.any(axis=1))
    if len(chunk_of) == 0:
        return []
    alone = local & (local.sum(axis=2, keepdims=True) == 1)
    lone_frames = alone[chunk_of, :, speaker_of].sum(axis=1)
    # Lone speech when there is any, else all of the local speaker's speech.
    masks = np.where(lone_frames[:, None] > 0, alone[chunk_of, :, speaker_of], local[chunk_of, :, speaker_of])
    embeddings = encoder.embed_utterances(
        [_speaker_audio(audio, starts[c], mask) for c, mask in zip(chunk_of, masks, strict=True)], MAX_PARTIALS
    )

    reliable = lone_frames * FRAME_SAMPLES / SAMPLE_RATE >= MIN_CLUSTERING_SECONDS
    if reliable.sum() < 2:
        reliable = lone_frames == lone_frames.max()
    same_chunk = chunk_of[reliable][:, None] == chunk_of[reliable][None, :]
    distance = 1 - embeddings[reliable] @ embeddings[reliable].T
    same_voice = _same_voice(local, offsets, chunk_of[reliable], speaker_of[reliable])
    labels = cluster(distance, same_chunk, same_voice, num_speakers, threshold)
    centroids = np.stack([embeddings[reliable][labels == k].mean(axis=0) for k in range(labels.max() + 1)])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    speakers = _assign(embeddings @ centroids.T, chunk_of)

    clustered = np.zeros((len(starts), local.shape[1], len(centroids)))
    for c, k, s in zip(chunk_of, speaker_of, speakers, strict=True):
        if s >= 0:
            clustered[c, :, s] = np.maximum(clustered[c, :, s], local[c, :, k])
    activity = _aggregate(clustered, offsets, n_frames)
    ranks = np.argsort(np.argsort(-activity, axis=1, kind="stable"), axis=1)
    active = (ranks < count[:, None]) & (activity > 0)

    # Name speakers in order of first appearance: SPEAKER_00 speaks first.
    names: dict[int, str] = {}
    turns = _turns(active, len(audio) / SAMPLE_RATE)
    for _, _, speaker in turns:
        names.setdefault(speaker, f"SPEAKER_{len(names):02d}")
    return [SpeakerTurn(round(start, 3), round(end, 3), names[speaker]) for start, end, speaker in turns]
