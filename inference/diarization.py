"""Who spoke when, after pyannote's speaker-diarization-3.1 pipeline, without torch:

1. segmentation: 10 s chunks every second; in each, who of up to three chunk-local speakers speaks in each
   16.875 ms frame (at most two at once), with a bias towards speech and towards two speakers at once
   (far-field meetings: quiet voices and much overlapping speech);
2. count: how many speakers speak in each frame, the chunks' counts averaged and rounded;
3. voice features: 3D-Speaker's CAM++ runs over the speech up to its statistics pooling, giving a 512-d
   feature every 20 ms, on each stretch between two changes of the segmentation's speakers on its own
   (inference/voices.py);
4. embeddings: one per local speaker of each chunk ("unit"), pooled from the features of the frames where
   it speaks alone (all of its frames when it is alone for under half a second);
5. clustering: units alone for long enough are grouped by average-linkage agglomeration on cosine distance
   (two units of one chunk never together); every unit then goes to the most similar speaker, the units of
   one chunk to different speakers; the units left over (a chunk with more units than there are speakers)
   are grouped the same way into new speakers;
6. reconstruction: each speaker's activity (the probability that it speaks) averaged over the chunks; each
   frame keeps its `count` most active speakers, so overlapping speech yields overlapping turns; speech
   under 0.3 s is dropped;
7. two voices in one speaker: the segmentation model sometimes follows two people as one local speaker in
   every chunk, and then no clustering can part them. The lone speech of the speaker who speaks most is
   split into two groups of 1 s windows (2-means on their embeddings); when the groups' voices are as far
   apart as two clusters must be, and each holds 2 s, the smaller one becomes a speaker of its own. Repeated
   while max_speakers allows.

Exclusive turns (one speaker at a time, for aligning words with speakers, as pyannote.audio 4's
`exclusive_speaker_diarization`): step 6 with one speaker per frame, the most active; the turns of the
speakers split off in step 7 are lone speech already.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .campplus import CamPlusPlus
from .segmentation import (
    CHUNK_SAMPLES,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    SpeakerSegmentation,
    frame_seconds,
    local_speakers,
    runs,
    speaker_probabilities,
)
from .voices import normalized, pieces, pooled, voice_features, window_embeddings

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
FEATURES_PER_SECOND = 50
# Splitting a speaker in two (step 7): windows of 2 * SPLIT_WINDOW_HALF + 1 features (1 s), at least
# SPLIT_MIN_SECONDS of lone speech on each side, labels smoothed over SPLIT_SMOOTH_FRAMES (1 s).
SPLIT_WINDOW_HALF = 25
SPLIT_MIN_SECONDS = 2.0
SPLIT_SMOOTH_FRAMES = 59
# Speech, anyone's, shorter than this (0.3 s) between two silences is dropped, as VADs drop blips (Silero's
# minimum is 0.25 s): on the AMI excerpts the ones left were false alarms.
MIN_SPEECH_FRAMES = 18


@dataclass(frozen=True)
class SpeakerTurn:
    start: float
    end: float
    speaker: str


@dataclass(frozen=True)
class Diarization:
    turns: list[SpeakerTurn]  # sorted by start; where people speak at once, their turns overlap
    exclusive_turns: list[SpeakerTurn]  # the same speech and speakers, one speaker at a time
    # Each speaker's voice (speaker_embeddings): the same person in another recording gets a close one.
    embeddings: dict[str, np.ndarray]


def chunk_starts(n_samples: int, step_frames: int = CHUNK_STEP_FRAMES) -> list[int]:
    """Sample offsets of the chunks: every step_frames frames, the last one ending at the audio's end."""
    last = max(0, n_samples - CHUNK_SAMPLES)
    starts = list(range(0, last + 1, step_frames * FRAME_SAMPLES))
    if starts[-1] < last:
        starts.append(-(-last // FRAME_SAMPLES) * FRAME_SAMPLES)
    return starts


def coverage(offsets: list[int], frames: int, n_frames: int) -> np.ndarray:
    """(n_frames,) how many chunks of `frames` frames, at `offsets`, cover each frame (at least 1)."""
    covered = np.zeros(n_frames)
    for offset in offsets:
        covered[offset : offset + frames] += 1
    return np.maximum(covered, 1)


def aggregate(per_chunk: np.ndarray, offsets: list[int], n_frames: int) -> np.ndarray:
    """(chunks, frames, k) -> (n_frames, k): each frame's mean over the chunks that cover it."""
    sums = np.zeros((n_frames, per_chunk.shape[2]))
    for offset, values in zip(offsets, per_chunk, strict=True):
        sums[offset : offset + len(values)] += values
    return sums / coverage(offsets, per_chunk.shape[1], n_frames)[:, None]


def cluster(
    distance: np.ndarray, apart: np.ndarray, threshold: float, min_clusters: int = 1, max_clusters: int | None = None
) -> np.ndarray:
    """A label per item from average-linkage agglomeration of their (n, n) distances: the closest two
    clusters merge while they are under `threshold` apart and more than min_clusters remain, and past the
    threshold while more than max_clusters remain. Clusters holding two items that are `apart` merge only
    to get down to max_clusters. Labels go by each cluster's first item; of equally close pairs, the first
    in row-major order merges."""
    n = len(distance)
    distance = distance.astype(np.float64).copy()
    np.fill_diagonal(distance, np.inf)
    apart = apart.copy()
    allowed = np.where(apart, np.inf, distance)
    # Each row's closest allowed row, kept up to date: a merge rescans only the rows it may have changed,
    # so an hour of audio (thousands of items) clusters in O(n^2) rather than O(n^3).
    nearest = np.argmin(allowed, axis=1) if n else np.zeros(0, dtype=int)
    closest = allowed[np.arange(n), nearest]
    members = {i: [i] for i in range(n)}  # by the cluster's first item, which is its row
    while len(members) > min_clusters:
        forced = max_clusters is not None and len(members) > max_clusters
        a = int(np.argmin(closest))
        if forced and not np.isfinite(closest[a]):  # every pair left is apart: merge the closest anyway
            live = np.fromiter(members, dtype=int)
            a, b = live[np.array(np.unravel_index(np.argmin(distance[np.ix_(live, live)]), (len(live),) * 2))]
            gap = distance[a, b]
        else:
            b, gap = int(nearest[a]), closest[a]
        a, b = sorted((int(a), int(b)))
        if not np.isfinite(gap) or (not forced and gap >= threshold):
            break
        size_a, size_b = len(members[a]), len(members[b])
        distance[a] = (distance[a] * size_a + distance[b] * size_b) / (size_a + size_b)
        distance[:, a] = distance[a]
        distance[a, a] = np.inf
        distance[b, :] = distance[:, b] = np.inf
        apart[a] |= apart[b]
        apart[:, a] = apart[a]
        allowed[a] = np.where(apart[a], np.inf, distance[a])
        allowed[:, a] = allowed[a]
        allowed[b, :] = allowed[:, b] = np.inf
        members[a] += members.pop(b)
        closest[b] = np.inf
        stale = np.union1d([a], np.flatnonzero(np.isfinite(closest) & ((nearest == a) | (nearest == b))))
        # An average of two distances is no closer than the nearer of them, but rounding can make it so.
        nearer = (allowed[:, a] < closest) | ((allowed[:, a] == closest) & (a < nearest))
        nearest[nearer], closest[nearer] = a, allowed[nearer, a]
        nearest[stale] = np.argmin(allowed[stale], axis=1)
        closest[stale] = allowed[stale, nearest[stale]]
    labels = np.empty(n, dtype=int)
    for label, first in enumerate(sorted(members)):
        labels[members[first]] = label
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


def voice_distances(embeddings: np.ndarray, chunk_of: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For `cluster`: the cosine distances between the (normalised) embeddings of `units`, and which pairs of
    them belong to one chunk (two people for the segmentation model: never together)."""
    chosen, chunks = embeddings[units], chunk_of[units]
    return 1 - chosen @ chosen.T, chunks[:, None] == chunks[None, :]


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


def the_rest_as_new_speakers(
    speakers: np.ndarray,
    n_speakers: int,
    embeddings: np.ndarray,
    chunk_of: np.ndarray,
    threshold: float,
    room: int | None,
) -> np.ndarray:
    """`speakers` (one per unit, -1 where its chunk holds more units than there are speakers) with the units left
    out grouped into new speakers as the clustering groups units (two of one chunk never together), numbered
    from n_speakers; at most `room` new ones (None: no limit), the units of the others stay at -1. The
    segmentation model says that each of them is someone other than the speakers of its chunk: dropped, their
    speech would be lost."""
    left = np.flatnonzero(speakers < 0)
    if not len(left) or room == 0:
        return speakers
    labels = cluster(*voice_distances(embeddings, chunk_of, left), threshold)
    kept = labels < room if room is not None else np.ones(len(left), dtype=bool)
    speakers = speakers.copy()
    speakers[left[kept]] = n_speakers + labels[kept]
    return speakers


def speaker_changes(local: np.ndarray, offsets: list[int], n_frames: int) -> np.ndarray:
    """(n_frames,) True where, in the chunk whose centre is nearest, the local speakers who speak change."""
    frames = local.shape[1]
    centres = np.asarray(offsets) + frames // 2
    nearest = np.searchsorted((centres[:-1] + centres[1:]) / 2, np.arange(n_frames))
    within = np.arange(n_frames) - np.asarray(offsets)[nearest]
    valid = (within >= 1) & (within < frames)
    changed = np.zeros(n_frames, dtype=bool)
    chunk, at = nearest[valid], within[valid]
    changed[valid] = (local[chunk, at] != local[chunk, at - 1]).any(axis=1)
    return changed


def _two_means(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spherical 2-means of normalised rows, from the two rows farthest apart around the most central one:
    (a 0/1 label per row, the two normalised centres)."""
    central = int(np.argmax(points @ points.mean(axis=0)))
    first = int(np.argmin(points @ points[central]))
    second = int(np.argmin(points @ points[first]))
    centres = normalized(points[[first, second]])
    labels = np.zeros(len(points), dtype=int)
    for _ in range(20):
        labels = np.argmax(points @ centres.T, axis=1)
        if labels.min() == labels.max():
            break
        centres = normalized(np.stack([points[labels == side].mean(axis=0) for side in (0, 1)]))
    return labels, centres


def _majority(labels: np.ndarray, width: int) -> np.ndarray:
    """Each 0/1 label replaced by the majority of the `width` (odd) labels around it, the ends repeated."""
    padded = np.pad(labels.astype(np.float64), width // 2, mode="edge")
    return (np.convolve(padded, np.ones(width) / width, mode="valid") > 0.5).astype(int)


def split_voices(
    active: np.ndarray, windows: np.ndarray, feature_frame: np.ndarray, threshold: float, max_speakers: int | None
) -> np.ndarray:
    """Step 7 on (frames, speakers) activity, with a window embedding per feature: the activity with a new
    speaker column for each split."""
    while max_speakers is None or int(active.any(axis=0).sum()) < max_speakers:
        alone = active.sum(axis=1) == 1
        speaker = int(np.argmax((active & alone[:, None]).sum(axis=0)))
        mine = alone[feature_frame] & active[feature_frame, speaker]
        if mine.sum() < 2 * SPLIT_MIN_SECONDS * FEATURES_PER_SECOND:
            break
        labels, centres = _two_means(windows[mine])
        if 1 - float(centres[0] @ centres[1]) < threshold:
            break
        if min(np.bincount(labels, minlength=2)) < SPLIT_MIN_SECONDS * FEATURES_PER_SECOND:
            break
        # Each lone frame of the speaker takes the label of the nearest frame that has a feature.
        frames = np.flatnonzero(active[:, speaker] & alone)
        labelled, frame_labels = np.unique(feature_frame[mine], return_index=True)
        nearest = np.clip(np.searchsorted(labelled, frames), 0, len(labelled) - 1)
        side = _majority(labels[frame_labels][nearest], SPLIT_SMOOTH_FRAMES)
        moved = frames[side == np.argmin(np.bincount(side, minlength=2))]
        active = np.concatenate([active, np.zeros((len(active), 1), dtype=bool)], axis=1)
        active[moved, speaker], active[moved, -1] = False, True
    return active


def without_short_speech(active: np.ndarray) -> np.ndarray:
    """(frames, speakers) activity without the stretches of speech (anyone's) under MIN_SPEECH_FRAMES."""
    active = active.copy()
    for first, end in runs(active.any(axis=1)):
        if end - first < MIN_SPEECH_FRAMES:
            active[first:end] = False
    return active


def one_at_a_time(active: np.ndarray, activity: np.ndarray) -> np.ndarray:
    """(frames, speakers) activity keeping, in each frame, only the speaker with the highest (frames, k) `activity`;
    the columns past k (split off in step 7) only ever speak alone."""
    priority = np.zeros(active.shape)
    priority[:, : activity.shape[1]] = activity
    speaking = np.flatnonzero(active.any(axis=1))
    exclusive = np.zeros_like(active)
    exclusive[speaking, np.argmax(np.where(active, priority, -np.inf)[speaking], axis=1)] = True
    return exclusive


def speaker_embeddings(
    active: np.ndarray, features: np.ndarray, feature_frame: np.ndarray, encoder: CamPlusPlus
) -> np.ndarray:
    """(speakers, 192): for each column of the (frames, speakers) activity, the features of the frames where
    that speaker speaks alone (all of the speaker's frames, if none), pooled and normalised; zeros for a
    speaker heard for so short a time that none of their frames has a feature."""
    speaking = active[feature_frame]
    alone = speaking & (speaking.sum(axis=1, keepdims=True) == 1)
    rows = [np.flatnonzero(alone[:, s] if alone[:, s].any() else speaking[:, s]) for s in range(active.shape[1])]
    return pooled(features, rows, encoder)


def speaker_activity(
    probabilities: np.ndarray, units: Iterable[tuple[int, int, int]], offsets: list[int], n_frames: int, n_speakers: int
) -> np.ndarray:
    """(n_frames, n_speakers): for each speaker, the probability that it speaks (from the (chunks, frames, 3)
    `probabilities` of the local speakers that are its units: (chunk, local speaker, speaker or -1)), averaged
    over the chunks. The probabilities rather than the chunks' decisions: they also rank two speakers that
    both speak."""
    frames = probabilities.shape[1]
    activity = np.zeros((n_frames, n_speakers))
    for c, k, s in units:
        if s >= 0:
            activity[offsets[c] : offsets[c] + frames, s] += probabilities[c, :, k]
    return activity / coverage(offsets, frames, n_frames)[:, None]


def most_active(activity: np.ndarray, count: np.ndarray) -> np.ndarray:
    """(frames, speakers) booleans: in each frame, its `count` most active speakers (of equal ones, the first)."""
    ranks = np.argsort(np.argsort(-activity, axis=1, kind="stable"), axis=1)
    return (ranks < count[:, None]) & (activity > 0)


def _turns(active: np.ndarray, duration: float) -> list[tuple[float, float, int]]:
    turns = []
    for speaker in range(active.shape[1]):
        for first, end in runs(active[:, speaker]):
            turns.append((*frame_seconds(first, end, len(active), duration), speaker))
    return sorted(turns)


def diarize(
    audio: np.ndarray,
    segmentation: SpeakerSegmentation,
    encoder: CamPlusPlus,
    min_speakers: int = 1,
    max_speakers: int | None = None,
    threshold: float = DEFAULT_DISTANCE_THRESHOLD,
) -> Diarization:
    """Speaker turns. At most max_speakers speakers; at least min_speakers when that many voices are told
    apart (a voice is never split to reach a count, so there can be fewer)."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread: most products are small (an LSTM step), and on a busy CPU a second thread waiting
    # for a descheduled one made requests several times slower.
    with threadpool_limits(limits=1, user_api="blas"):
        return _diarize(audio, segmentation, encoder, min_speakers, max_speakers, threshold)


def _diarize(audio, segmentation, encoder, min_speakers, max_speakers, threshold) -> Diarization:
    starts = chunk_starts(len(audio))
    scores = segmentation(audio, starts)
    local = local_speakers(scores, SPEECH_BIAS, OVERLAP_BIAS)  # (chunks, frames, 3)
    offsets = [start // FRAME_SAMPLES for start in starts]
    frames = local.shape[1]
    n_frames = offsets[-1] + frames
    # Speakers per frame, rounded half up (np.rint rounds 0.5 down to 0).
    count = np.floor(aggregate(local.sum(axis=2, keepdims=True), offsets, n_frames)[:, 0] + 0.5).astype(int)
    changes = speaker_changes(local, offsets, n_frames)
    features, feature_frame = voice_features(audio, pieces(count > 0, changes), encoder)
    chunk_of, speaker_of = np.nonzero(local.any(axis=1))
    if not len(features) or not len(chunk_of):
        return Diarization([], [], {})

    # Each unit's feature rows: those of its lone frames, or of all its frames.
    alone = local & (local.sum(axis=2, keepdims=True) == 1)
    rows, lone_rows = [], np.zeros(len(chunk_of), dtype=int)
    for unit, (c, k) in enumerate(zip(chunk_of, speaker_of, strict=True)):
        low, high = np.searchsorted(feature_frame, [offsets[c], offsets[c] + frames])
        within = feature_frame[low:high] - offsets[c]
        lone = low + np.flatnonzero(alone[c, within, k])
        lone_rows[unit] = len(lone)
        rows.append(lone if len(lone) >= LONE_FEATURES else low + np.flatnonzero(local[c, within, k]))
    embeddings = pooled(features, rows, encoder)

    clustered = np.flatnonzero(lone_rows >= CLUSTERING_FEATURES)
    if not len(clustered):
        clustered = np.array([int(np.argmax(lone_rows))])
    labels = cluster_with_hint(*voice_distances(embeddings, chunk_of, clustered), threshold, min_speakers, max_speakers)
    centroids = normalized(np.stack([embeddings[clustered][labels == s].mean(axis=0) for s in range(labels.max() + 1)]))
    speakers = _assign(embeddings @ centroids.T, chunk_of)
    room = None if max_speakers is None else max_speakers - len(centroids)
    speakers = the_rest_as_new_speakers(speakers, len(centroids), embeddings, chunk_of, threshold, room)

    units = zip(chunk_of, speaker_of, speakers, strict=True)
    activity = speaker_activity(speaker_probabilities(scores), units, offsets, n_frames, int(speakers.max()) + 1)
    active = most_active(activity, count)
    windows = window_embeddings(features, SPLIT_WINDOW_HALF, encoder)
    active = without_short_speech(split_voices(active, windows, feature_frame, threshold, max_speakers))

    # Name speakers in order of first appearance: SPEAKER_00 speaks first.
    duration = len(audio) / SAMPLE_RATE
    turns = _turns(active, duration)
    names: dict[int, str] = {}
    for _, _, speaker in turns:
        names.setdefault(speaker, f"SPEAKER_{len(names):02d}")

    def named(turns: list[tuple[float, float, int]]) -> list[SpeakerTurn]:
        return [SpeakerTurn(round(start, 3), round(end, 3), names[speaker]) for start, end, speaker in turns]

    voices = speaker_embeddings(active[:, list(names)], features, feature_frame, encoder)
    return Diarization(
        named(turns),
        named(_turns(one_at_a_time(active, activity), duration)),
        dict(zip(names.values(), voices, strict=True)),
    )
