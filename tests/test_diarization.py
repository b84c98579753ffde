"""The pieces of inference/ that decide who is who and where speech is, on small hand-made inputs, and the
numpy ports of the two models against their own torch networks."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile

from inference import campplus as campplus_module
from inference import parallel, segmentation, voices
from inference.campplus import FEATURE_SIZE, CamPlusPlus, fbank
from inference.diarization import (
    FEATURES_PER_SECOND,
    MIN_HINTED_THRESHOLD,
    MIN_SPEECH_FRAMES,
    SPLIT_MIN_SECONDS,
    THRESHOLD_STEP,
    chunk_starts,
    cluster,
    cluster_with_hint,
    most_active,
    one_at_a_time,
    speaker_activity,
    speaker_changes,
    split_voices,
    the_rest_as_new_speakers,
    without_short_speech,
)
from inference.segmentation import (
    CHUNK_SAMPLES,
    FRAME_SAMPLES,
    POWERSET,
    SAMPLE_RATE,
    SpeakerSegmentation,
    chunk_frames,
    frame_samples,
    frame_seconds,
    local_speakers,
)
from inference.vad import hysteresis
from inference.voices import MIN_PIECE_FRAMES, normalized, pieces, pooled, window_embeddings
from tests.test_handler import real_weights

DATA = Path(__file__).resolve().parent / "data"


def _distances(points: list[float]) -> np.ndarray:
    points = np.asarray(points)
    return np.abs(points[:, None] - points[None, :])


def test_cluster_merges_what_is_closer_than_the_threshold():
    labels = cluster(_distances([0.0, 0.05, 0.1, 1.0, 1.05]), np.zeros((5, 5), dtype=bool), threshold=0.3)

    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4]


def test_items_kept_apart_stay_apart_unless_max_clusters_needs_them_together():
    apart = np.zeros((3, 3), dtype=bool)
    apart[0, 1] = apart[1, 0] = True  # two local speakers of one chunk

    free = cluster(_distances([0.0, 0.01, 0.02]), apart, threshold=0.3)
    forced = cluster(_distances([0.0, 0.01, 0.02]), apart, threshold=0.3, max_clusters=1)

    assert free[0] != free[1] and len(set(free)) == 2
    assert len(set(forced)) == 1


def test_cluster_count_bounds_override_the_threshold():
    distances = _distances([0.0, 1.0, 2.0, 3.0])
    none_apart = np.zeros((4, 4), dtype=bool)

    assert len(set(cluster(distances, none_apart, threshold=0.3))) == 4
    assert len(set(cluster(distances, none_apart, threshold=0.3, max_clusters=2))) == 2
    assert len(set(cluster(distances, none_apart, threshold=5.0, min_clusters=3))) == 3


def _naive_cluster(distance, apart, threshold, min_clusters, max_clusters):
    """`cluster` by its definition: each step scans every pair of clusters left."""
    members = [[i] for i in range(len(distance))]
    distance, apart = distance.astype(np.float64).copy(), apart.copy()
    np.fill_diagonal(distance, np.inf)
    while len(members) > min_clusters:
        forced = max_clusters is not None and len(members) > max_clusters
        allowed = np.where(apart, np.inf, distance)
        if forced and not np.isfinite(allowed).any():
            allowed = distance
        a, b = sorted(np.unravel_index(np.argmin(allowed), allowed.shape))
        if not np.isfinite(allowed[a, b]) or (not forced and allowed[a, b] >= threshold):
            break
        sizes = len(members[a]), len(members[b])
        distance[a] = (distance[a] * sizes[0] + distance[b] * sizes[1]) / sum(sizes)
        distance[:, a], distance[a, a] = distance[a], np.inf
        apart[a] |= apart[b]
        apart[:, a] = apart[a]
        members[a] += members.pop(b)
        distance, apart = (np.delete(np.delete(m, b, axis=0), b, axis=1) for m in (distance, apart))
    labels = np.empty(len(distance) and sum(map(len, members)), dtype=int)
    for label, items in enumerate(members):
        labels[items] = label
    return labels


def test_cluster_merges_as_a_scan_of_every_pair_would():
    """The closest-pair bookkeeping changes nothing: ties, kept-apart items and count bounds included."""
    rng = np.random.default_rng(0)
    for trial in range(400):
        n = int(rng.integers(1, 20))
        points = rng.normal(size=n)
        distance = np.abs(points[:, None] - points[None, :]) + rng.random((n, n)) * 0.3
        distance = (distance + distance.T) / 2
        if trial % 2:
            distance = np.round(distance, 1)  # equally close pairs
        apart = rng.random((n, n)) < 0.3
        apart |= apart.T
        threshold = float(rng.choice([0.2, 0.5, 1.0, 5.0]))
        max_clusters = [None, int(rng.integers(1, 6))][trial % 2]
        min_clusters = min(int(rng.integers(1, 4)), max_clusters or 3)
        args = (distance, apart, threshold, min_clusters, max_clusters)

        np.testing.assert_array_equal(cluster(*args), _naive_cluster(*args), err_msg=str(trial))


def test_a_speaker_count_hint_lowers_the_threshold_but_never_splits_one_voice():
    none_apart = np.zeros((4, 4), dtype=bool)
    just_over = _distances([0.0, 0.01, MIN_HINTED_THRESHOLD + 0.02, MIN_HINTED_THRESHOLD + 0.03])
    one_voice = _distances([0.0, 0.01, 0.02, 0.03])
    threshold = MIN_HINTED_THRESHOLD + THRESHOLD_STEP

    assert len(set(cluster(just_over, none_apart, threshold))) == 1
    assert len(set(cluster_with_hint(just_over, none_apart, threshold, 2, None))) == 2
    assert len(set(cluster_with_hint(one_voice, none_apart, threshold, 3, None))) == 1
    assert len(set(cluster_with_hint(_distances([0.0, 1.0, 2.0, 3.0]), none_apart, threshold, 1, 2))) == 2


def test_chunks_cover_the_audio_on_the_frame_grid():
    for seconds in (0.5, 10, 10.3, 30, 61.7):
        n_samples = int(seconds * 16000)
        starts = chunk_starts(n_samples)

        assert starts[0] == 0
        assert all(start % FRAME_SAMPLES == 0 for start in starts)
        assert starts[-1] + CHUNK_SAMPLES >= n_samples
        assert starts[-1] + CHUNK_SAMPLES - FRAME_SAMPLES < max(n_samples, CHUNK_SAMPLES)


def test_the_first_and_last_frames_reach_the_ends_of_the_audio():
    n_samples = 30 * SAMPLE_RATE
    starts = chunk_starts(n_samples)
    n_frames = starts[-1] // FRAME_SAMPLES + chunk_frames()

    assert frame_seconds(0, n_frames, n_frames, 30.0) == (0.0, 30.0)
    assert frame_seconds(100, 200, n_frames, 30.0) == tuple(s / SAMPLE_RATE for s in frame_samples(100, 200))


def test_speech_shorter_than_the_minimum_is_dropped_unless_it_adjoins_other_speech():
    active = np.zeros((200, 2), dtype=bool)
    active[10 : 10 + MIN_SPEECH_FRAMES - 1, 0] = True  # a blip on its own
    active[50 : 50 + MIN_SPEECH_FRAMES, 0] = True  # long enough
    active[100:140, 0] = True
    active[140:145, 1] = True  # a short turn right after another speaker's

    kept = without_short_speech(active)

    assert not kept[:40].any()
    assert (kept[40:] == active[40:]).all()


def test_speech_bias_turns_a_close_call_between_silence_and_speech_into_speech():
    log_probabilities = np.log(np.array([[0.5, 0.4, 0.02, 0.02, 0.02, 0.02, 0.02]]))

    assert not local_speakers(log_probabilities).any()
    assert (local_speakers(log_probabilities, speech_bias=1.0) == POWERSET[1]).all()


def test_overlap_bias_turns_a_close_call_between_one_and_two_speakers_into_two():
    log_probabilities = np.log(np.array([[0.02, 0.5, 0.02, 0.02, 0.4, 0.02, 0.02]]))

    assert (local_speakers(log_probabilities) == POWERSET[1]).all()
    assert (local_speakers(log_probabilities, overlap_bias=1.0) == POWERSET[4]).all()


def test_vad_hysteresis_starts_at_the_onset_and_ends_under_the_offset():
    probability = np.array([0.1, 0.45, 0.6, 0.4, 0.36, 0.3, 0.5, 0.2])

    assert hysteresis(probability, 0.5, 0.35).tolist() == [False, False, True, True, True, False, True, False]


def test_fbank_puts_a_tone_in_the_mel_band_around_its_frequency():
    tone = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype(np.float32)

    energies = fbank(tone)

    assert energies.shape == (98, 80)  # 1 + (16000 - 400) // 160 frames
    mel = 1127 * np.log(1 + np.array([20.0, 8000.0, 1000.0]) / 700)
    expected_band = (mel[2] - mel[0]) / ((mel[1] - mel[0]) / 81) - 1  # the band centred on 1 kHz
    assert abs(int(np.argmax(energies.mean(axis=0))) - expected_band) <= 1


def test_speech_is_cut_where_the_chunks_speakers_change():
    local = np.zeros((1, 40, 3), dtype=bool)
    local[0, 5:20, 0] = True
    local[0, 20:40, 1] = True
    local[0, 30:40, 0] = True  # speaker 0 back, over speaker 1

    changes = speaker_changes(local, [0], 40)

    assert np.flatnonzero(changes).tolist() == [5, 20, 30]


def test_the_speaker_changes_of_a_frame_are_read_in_the_chunk_centred_nearest_it():
    local = np.zeros((2, 10, 3), dtype=bool)
    local[0, 2, 0] = True  # frame 2: chunk 0's centre (5) is nearer than chunk 1's (10)
    local[1, 1, 2] = True  # frame 6 of chunk 1 (offset 5): nearer chunk 1's centre
    local[0, 6, 1] = True  # frame 6 of chunk 0: not read

    changes = speaker_changes(local, [0, 5], 15)

    assert np.flatnonzero(changes).tolist() == [2, 3, 6, 7]


def test_pieces_are_the_speech_runs_cut_at_changes_with_short_ones_joined():
    speech = np.zeros(200, dtype=bool)
    speech[10:100] = speech[120:200] = True
    changes = np.zeros(200, dtype=bool)
    changes[[50, 55, 123, 150]] = True  # 50..55 and 120..123 are shorter than MIN_PIECE_FRAMES
    assert max(55 - 50, 123 - 120) < MIN_PIECE_FRAMES

    assert pieces(speech, changes) == [(10, 55), (55, 100), (120, 150), (150, 200)]


def _two_voices(seconds_a: float, seconds_b: float, distance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One speaker's lone speech, a frame per feature, whose window embeddings form two groups `distance` apart
    (cosine): the activity, the embeddings and each feature's frame."""
    a, b = int(seconds_a * FEATURES_PER_SECOND), int(seconds_b * FEATURES_PER_SECOND)
    angle = np.arccos(1 - distance)
    first, second = np.zeros(8), np.zeros(8)
    first[0], second[[0, 1]] = 1.0, (np.cos(angle), np.sin(angle))
    noise = np.random.default_rng(0).normal(scale=0.01, size=(a + b, 8))
    windows = normalized(np.vstack([np.tile(first, (a, 1)), np.tile(second, (b, 1))]) + noise)
    return np.ones((a + b, 1), dtype=bool), windows, np.arange(a + b)


def test_a_speaker_holding_two_voices_is_split_in_two():
    active, windows, frames = _two_voices(6, 3, distance=0.8)

    split = split_voices(active, windows, frames, threshold=0.5, max_speakers=None)

    assert split.shape[1] == 2
    assert (split.sum(axis=1) == 1).all()
    assert split[: 6 * FEATURES_PER_SECOND, 0].all() and split[6 * FEATURES_PER_SECOND :, 1].all()


def test_one_voice_is_not_split_nor_a_voice_heard_too_briefly_nor_past_max_speakers():
    one_voice = _two_voices(6, 3, distance=0.3)  # closer than the clustering threshold
    brief = _two_voices(6, SPLIT_MIN_SECONDS / 2, distance=0.8)
    two_voices = _two_voices(6, 3, distance=0.8)

    assert split_voices(*one_voice, threshold=0.5, max_speakers=None).shape[1] == 1
    assert split_voices(*brief, threshold=0.5, max_speakers=None).shape[1] == 1
    assert split_voices(*two_voices, threshold=0.5, max_speakers=1).shape[1] == 1
    assert split_voices(*two_voices, threshold=0.9, max_speakers=None).shape[1] == 1


def test_where_two_speakers_speak_in_every_chunk_the_more_probable_one_is_kept_for_one_voice():
    # Two chunks of 4 frames, offset by 2; in each, local speaker 0 is speaker 1 and local speaker 1 speaker 0.
    # Both speak in every frame (the chunks' decisions tie), speaker 1 with the higher probability.
    probabilities = np.zeros((2, 4, 3))
    probabilities[:, :, 0], probabilities[:, :, 1] = 0.9, 0.6
    units = [(0, 0, 1), (0, 1, 0), (1, 0, 1), (1, 1, 0), (1, 2, -1)]

    activity = speaker_activity(probabilities, units, [0, 2], 6, 2)

    np.testing.assert_allclose(activity, [[0.6, 0.9]] * 6)
    one_voice = most_active(activity, np.ones(6, dtype=int))
    assert one_voice.tolist() == [[False, True]] * 6
    assert most_active(activity, np.full(6, 2)).all()


def test_units_left_without_a_speaker_become_new_speakers_grouped_by_voice():
    # Units 0-1 got speakers 0 and 1; units 2-5 were left out: their chunks hold more units than speakers.
    voices = normalized(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0.1, 1], [0, 0, 1], [1, 1, 1]]))
    chunk_of = np.array([0, 0, 0, 1, 2, 2])
    speakers = np.array([0, 1, -1, -1, -1, -1])

    grouped = the_rest_as_new_speakers(speakers, 2, voices, chunk_of, 0.5, room=None)

    # 2 and 3 alike (one voice); 4 alike too but in 5's chunk, which is another voice: kept apart from it.
    assert grouped.tolist() == [0, 1, 2, 2, 2, 3]
    assert the_rest_as_new_speakers(speakers, 2, voices, chunk_of, 0.5, room=1).tolist() == [0, 1, 2, 2, 2, -1]
    assert the_rest_as_new_speakers(speakers, 2, voices, chunk_of, 0.5, room=0).tolist() == speakers.tolist()


def test_one_at_a_time_keeps_the_most_active_speaker_of_each_frame():
    # frames: A and B (A more active), B alone, A and B (B more active), C (split off from A) alone, nobody
    active = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=bool)
    activity = np.array([[0.9, 0.6], [0.1, 0.8], [0.5, 0.7], [0.9, 0.0], [0.2, 0.0]])

    exclusive = one_at_a_time(active, activity)

    assert exclusive.astype(int).tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]


@pytest.fixture(scope="module")
def campplus() -> CamPlusPlus:
    (weights,) = [files for spec, files in real_weights().items() if spec.source == "modelscope"]
    return CamPlusPlus.from_checkpoint(next(iter(weights.values())))


@pytest.mark.parametrize("block_rows", [4096, 7], ids=["one block", "blocks of 7 rows"])
def test_window_embeddings_pool_the_features_around_each_row(campplus, block_rows, monkeypatch):
    monkeypatch.setattr(voices, "WINDOW_BLOCK_ROWS", block_rows)
    features = np.random.default_rng(1).normal(size=(40, FEATURE_SIZE)).astype(np.float32)

    windows = window_embeddings(features, 5, campplus)

    expected = pooled(features, [np.arange(max(0, i - 5), min(40, i + 6)) for i in range(40)], campplus)
    np.testing.assert_allclose(windows, expected, atol=1e-4)


@pytest.fixture(scope="module")
def segmentation_model() -> SpeakerSegmentation:
    (weights,) = [files for spec, files in real_weights().items() if spec.source == "huggingface"]
    return SpeakerSegmentation.from_checkpoint(next(iter(weights.values())))


def test_segmentation_matches_pyannotes_torch_model_on_real_speech(segmentation_model):
    reference = json.loads((DATA / "segmentation_reference.json").read_text())
    samples, _ = soundfile.read(DATA / "two_speakers.wav", dtype="float32")

    log_probabilities = segmentation_model(samples, reference["starts"])[:, :: reference["every"]]

    np.testing.assert_allclose(log_probabilities, reference["log_probabilities"], atol=3e-3)


def test_segmentation_batches_on_several_threads_give_the_same_scores(segmentation_model, monkeypatch):
    samples, _ = soundfile.read(DATA / "two_speakers.wav", dtype="float32")
    starts = chunk_starts(len(samples), step_frames=20)
    monkeypatch.setattr(segmentation, "BATCH_CHUNKS", 3)

    monkeypatch.setattr(parallel, "cores", lambda: 1)
    one_thread = segmentation_model(samples, starts)
    monkeypatch.setattr(parallel, "cores", lambda: 4)
    threads = segmentation_model(samples, starts)

    assert len(starts) > 3 * parallel.MAX_THREADS
    np.testing.assert_array_equal(threads, one_thread)


def _threads_running(monkeypatch, owner: object, name: str) -> set[str]:
    """The names of the threads that will run owner.<name>, which still does its work."""
    seen: set[str] = set()
    original = getattr(owner, name)

    def recorded(*args, **kwargs):
        seen.add(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)
    return seen


def test_a_thirty_second_request_is_segmented_on_every_core(segmentation_model, monkeypatch):
    samples, _ = soundfile.read(DATA / "two_speakers.wav", dtype="float32")
    monkeypatch.setattr(parallel, "cores", lambda: 2)
    seen = _threads_running(monkeypatch, segmentation_model, "_forward")

    segmentation_model(samples[: 30 * SAMPLE_RATE], chunk_starts(30 * SAMPLE_RATE))

    assert len(seen) == 2


def test_one_long_stretch_of_speech_is_encoded_on_every_core(campplus, monkeypatch):
    samples, _ = soundfile.read(DATA / "two_speakers.wav", dtype="float32")
    n_frames = 20 * SAMPLE_RATE // FRAME_SAMPLES
    monkeypatch.setattr(parallel, "cores", lambda: 2)
    seen = _threads_running(monkeypatch, campplus, "frame_features")

    features, frames = voices.voice_features(samples, [(0, n_frames)], campplus)

    assert len(seen) == 2
    assert len(features) == len(frames) == pytest.approx(20 * FEATURES_PER_SECOND, abs=2)
    assert (np.diff(frames) > 0).all() and frames[0] == 0 and frames[-1] >= n_frames - 2


def test_the_longest_piece_of_speech_is_encoded_first(campplus, monkeypatch):
    """A long piece left for last keeps one core busy while the others wait."""
    samples, _ = soundfile.read(DATA / "two_speakers.wav", dtype="float32")
    monkeypatch.setattr(parallel, "cores", lambda: 1)  # in the order dispatched
    lengths: list[int] = []
    encode = campplus.frame_features
    monkeypatch.setattr(campplus, "frame_features", lambda x: lengths.append(x.shape[1]) or encode(x))
    pieces = [(0, 60), (60, 60 + 5 * SAMPLE_RATE // FRAME_SAMPLES)]

    _, frames = voices.voice_features(samples, pieces, campplus)

    assert lengths == sorted(lengths, reverse=True) and lengths[0] > lengths[1]
    assert (np.diff(frames) > 0).all() and frames[0] == 0  # features in the pieces' order all the same


@pytest.mark.parametrize(
    ("cpu_max", "cfs", "expected"),
    [
        ("150000 100000\n", None, 2),  # a quota of 1.5 CPUs: two threads
        ("max 100000\n", ("50000\n", "100000\n"), 8),  # cgroup v2 without a quota
        (None, ("50000\n", "100000\n"), 1),  # cgroup v1
        (None, ("-1\n", "100000\n"), 8),
        ("not a quota", None, 8),
        (None, None, 8),
    ],
)
def test_threads_stay_within_a_containers_cpu_quota(tmp_path, monkeypatch, cpu_max, cfs, expected):
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    files = {"CGROUP_V2_CPU_MAX": cpu_max, "CGROUP_V1_QUOTA": cfs and cfs[0], "CGROUP_V1_PERIOD": cfs and cfs[1]}
    for name, text in files.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        monkeypatch.setattr(parallel, name, path)

    assert parallel.cores() == expected


@pytest.mark.parametrize("conv_rows", [campplus_module.CONV_BLOCK_ROWS, 1], ids=["bands in blocks", "band by band"])
def test_campplus_matches_3d_speakers_network_on_real_speech(campplus, conv_rows, monkeypatch):
    monkeypatch.setattr(campplus_module, "CONV_BLOCK_ROWS", conv_rows)
    reference = json.loads((DATA / "campplus_reference.json").read_text())
    samples, rate = soundfile.read(DATA / "two_speakers.wav", dtype="float32")
    features = fbank(samples[: reference["seconds"] * rate])
    features -= features.mean(axis=0)

    embedding = campplus.embed_features(features[None])[0]

    np.testing.assert_allclose(embedding, reference["embedding"], atol=1e-3)


def test_campplus_tells_the_two_voices_apart(campplus):
    samples, rate = soundfile.read(DATA / "two_speakers.wav", dtype="float32")
    turns = json.loads((DATA / "two_speakers.json").read_text())["segments"]
    by_speaker: dict[str, list[np.ndarray]] = {}
    for turn in turns:
        features = fbank(samples[int(turn["start"] * rate) : int(turn["end"] * rate)])
        embedding = campplus.embed_features((features - features.mean(axis=0))[None])[0]
        by_speaker.setdefault(turn["speaker"], []).append(embedding / np.linalg.norm(embedding))
    (a, b) = by_speaker.values()

    same = min(float(x @ y) for group in (a, b) for i, x in enumerate(group) for y in group[i + 1 :])
    different = max(float(x @ y) for x in a for y in b)
    assert same > different
