"""The pieces of inference/diarization.py that decide who is who, on small hand-made inputs."""

from __future__ import annotations

import numpy as np

from inference.diarization import chunk_starts, cluster, voice_tracks
from inference.segmentation import CHUNK_SAMPLES, FRAME_SAMPLES, POWERSET, local_speakers


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


def test_voice_tracks_chain_chunks_but_never_join_two_speakers_of_one_chunk():
    chunk_of = np.array([0, 0, 1, 2])
    same_voice = np.zeros((4, 4), dtype=bool)
    for i, j in [(0, 2), (2, 3), (1, 2)]:  # 1 and 0 share chunk 0: only one of them can join 2
        same_voice[i, j] = same_voice[j, i] = True

    track = voice_tracks(same_voice, chunk_of)

    assert track[0] == track[2] == track[3]
    assert track[1] != track[0]


def test_chunks_cover_the_audio_on_the_frame_grid():
    for seconds in (0.5, 10, 10.3, 30, 61.7):
        n_samples = int(seconds * 16000)
        starts = chunk_starts(n_samples)

        assert starts[0] == 0
        assert all(start % FRAME_SAMPLES == 0 for start in starts)
        assert starts[-1] + CHUNK_SAMPLES >= n_samples
        assert starts[-1] + CHUNK_SAMPLES - FRAME_SAMPLES < max(n_samples, CHUNK_SAMPLES)


def test_speech_bias_turns_a_close_call_between_silence_and_speech_into_speech():
    log_probabilities = np.log(np.array([[0.5, 0.4, 0.02, 0.02, 0.02, 0.02, 0.02]]))

    assert not local_speakers(log_probabilities).any()
    assert (local_speakers(log_probabilities, speech_bias=1.0) == POWERSET[1]).all()
