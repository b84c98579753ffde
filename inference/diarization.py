"""Who spoke when, after pyannote's speaker-diarization-3.1 pipeline, without torch:

1. segmentation: 10 s chunks every second; in each, who of up to three chunk-local speakers speaks in each
   16.875 ms frame (at most two at once);
2. count: how many speakers speak in each frame, the chunks' counts averaged and rounded;
3. voice tracks: a local speaker of one chunk and one of an overlapping chunk that speak in the same frames
   are one voice; chained, these make tracks (never two local speakers of one chunk);
4. embeddings: one voice embedding per track, from the frames where it speaks alone;
5. clustering: tracks -> speakers (agglomerative on cosine distance, or num_speakers); tracks sharing a
   chunk stay apart; tracks with little lone speech join the nearest speaker afterwards;
6. reconstruction: each speaker's activity averaged over the chunks; each frame keeps its `count` most
   active speakers, so overlapping speech yields overlapping turns.
"""

from __future__ import annotations

import itertools
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

CHUNK_STEP_FRAMES = 59  # 0.996 s, pyannote's 10 % of a chunk, on the frame grid
# Added to the log-odds of speech against silence in each frame: quiet and far speakers are found.
SPEECH_BIAS = 1.0
# Two local speakers of overlapping chunks are one voice when, where the chunks overlap, they speak in
# the same frames: intersection over union at least this, for at least SAME_VOICE_MIN_FRAMES frames.
SAME_VOICE_IOU = 0.5
SAME_VOICE_MIN_FRAMES = 30
# A track with less lone speech than this joins the nearest speaker instead of shaping the speakers.
MIN_CLUSTERING_SECONDS = 1.0
# Cosine distance under which two average-linkage clusters of tracks merge when the speaker count is
# not given.
DEFAULT_DISTANCE_THRESHOLD = 0.3
# Voice encoder partials (1.6 s) per track, evenly spread: bounds the time embeddings take.
MAX_PARTIALS = 4
TARGET_DBFS = -30.0  # Resemblyzer's preprocessing level
FRAME_CENTRE_SAMPLES = RECEPTIVE_FIELD_SAMPLES // 2


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


def _speaker_audio(audio: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The samples of the frames where the mask is on, at TARGET_DBFS: the voice encoder's mel power
    features scale with the level, and in meetings the same voice comes near and far."""
    pieces = [audio[max(0, a) : max(0, b)] for a, b in (_frame_samples(0, *run) for run in _runs(frames))]
    speech = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(speech, dtype=np.float64)))) if len(speech) else 0.0
    return speech * (10 ** (TARGET_DBFS / 20) / rms) if rms > 0 else speech


def _same_voice(local: np.ndarray, offsets: list[int], chunk_of: np.ndarray, speaker_of: np.ndarray) -> np.ndarray:
    """(n, n) booleans: local speakers of two overlapping chunks that speak in the same frames where the
    chunks overlap."""
    same = np.zeros((len(chunk_of), len(chunk_of)), dtype=bool)
    frames = local.shape[1]
    items_of: dict[int, list[tuple[int, int]]] = {}  # chunk -> [(local speaker, item)]
    for i, (c, k) in enumerate(zip(chunk_of.tolist(), speaker_of.tolist(), strict=True)):
        items_of.setdefault(c, []).append((k, i))
    for c, items in items_of.items():
        for d in range(c + 1, len(offsets)):
            shift = offsets[d] - offsets[c]
            if shift >= frames:
                break
            for (k, i), (k2, j) in itertools.product(items, items_of.get(d, [])):
                a, b = local[c, shift:, k], local[d, : frames - shift, k2]
                both = np.sum(a & b)
                same[i, j] = same[j, i] = both >= SAME_VOICE_MIN_FRAMES and both >= SAME_VOICE_IOU * np.sum(a | b)
    return same


def voice_tracks(same_voice: np.ndarray, chunk_of: np.ndarray) -> np.ndarray:
    """A track number per local speaker: same-voice pairs chained, unless that would put two local
    speakers of one chunk in one track."""
    track = list(range(len(chunk_of)))
    chunks = {i: {c} for i, c in enumerate(chunk_of.tolist())}  # of each track, by its number

    def root(i: int) -> int:
        while track[i] != i:
            track[i] = track[track[i]]
            i = track[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(same_voice)), strict=True):
        a, b = root(i), root(j)
        if a != b and not chunks[a] & chunks[b]:
            track[b] = a
            chunks[a] |= chunks.pop(b)
    return np.unique([root(i) for i in range(len(track))], return_inverse=True)[1]


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


def _assign(similarity: np.ndarray, chunk_of: np.ndarray) -> np.ndarray:
    """The speaker of each local speaker: the most similar one, the local speakers of one chunk on
    different speakers (Hungarian algorithm per chunk); -1 where a chunk has more than there are."""
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
    min_speakers: int = 1,
    max_speakers: int | None = None,
    threshold: float = DEFAULT_DISTANCE_THRESHOLD,
) -> list[SpeakerTurn]:
    """Speaker turns, sorted by start. Between min_speakers and max_speakers speakers when that many voices
    are heard (tracks are never split, so there can be fewer than min_speakers)."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread: most products are small (an LSTM step), and on a busy CPU a second thread waiting
    # for a descheduled one made requests several times slower; on one thread 30 s of audio takes ~0.9 s.
    with threadpool_limits(limits=1, user_api="blas"):
        return _diarize(audio, segmentation, encoder, min_speakers, max_speakers, threshold)


def _diarize(audio, segmentation, encoder, min_speakers, max_speakers, threshold) -> list[SpeakerTurn]:
    starts = chunk_starts(len(audio))
    local = local_speakers(segmentation(audio, starts), SPEECH_BIAS)  # (chunks, frames, 3)
    offsets = [start // FRAME_SAMPLES for start in starts]
    n_frames = offsets[-1] + local.shape[1]
    # Speakers per frame, rounded half up (np.rint rounds 0.5 down to 0).
    count = np.floor(_aggregate(local.sum(axis=2, keepdims=True), offsets, n_frames)[:, 0] + 0.5).astype(int)
    chunk_of, speaker_of = np.nonzero(local.any(axis=1))
    if len(chunk_of) == 0:
        return []

    alone = local & (local.sum(axis=2, keepdims=True) == 1)
    track = voice_tracks(_same_voice(local, offsets, chunk_of, speaker_of), chunk_of)
    n_tracks = track.max() + 1
    lone, speech = np.zeros((2, n_tracks, n_frames), dtype=bool)
    for t, c, k in zip(track, chunk_of, speaker_of, strict=True):
        lone[t, offsets[c] : offsets[c] + local.shape[1]] |= alone[c, :, k]
        speech[t, offsets[c] : offsets[c] + local.shape[1]] |= local[c, :, k]
    lone_frames = lone.sum(axis=1)
    # Lone speech when a track has any, else all of its speech.
    masks = np.where(lone_frames[:, None] > 0, lone, speech)
    embeddings = encoder.embed_utterances([_speaker_audio(audio, mask) for mask in masks], MAX_PARTIALS)

    reliable = lone_frames * FRAME_SAMPLES / SAMPLE_RATE >= MIN_CLUSTERING_SECONDS
    if reliable.sum() < 2:
        reliable = lone_frames == lone_frames.max()
    chunks_of_track = np.zeros((n_tracks, len(starts)), dtype=bool)
    chunks_of_track[track, chunk_of] = True
    shared = chunks_of_track[reliable].astype(int) @ chunks_of_track[reliable].T.astype(int) > 0
    labels = cluster(1 - embeddings[reliable] @ embeddings[reliable].T, shared, threshold, min_speakers, max_speakers)
    centroids = np.stack([embeddings[reliable][labels == k].mean(axis=0) for k in range(labels.max() + 1)])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    similarity = embeddings @ centroids.T
    # A clustered track keeps its cluster: only the others go to the most similar free speaker.
    similarity[np.flatnonzero(reliable), labels] = 2.0  # above any cosine similarity
    speakers = _assign(similarity[track], chunk_of)

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
