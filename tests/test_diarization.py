"""The pieces of inference/ that decide who is who and where speech is, on small hand-made inputs, and the
numpy ports of the two models against their own torch networks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from inference.campplus import CamPlusPlus, fbank
from inference.diarization import MIN_HINTED_THRESHOLD, THRESHOLD_STEP, chunk_starts, cluster, cluster_with_hint
from inference.segmentation import CHUNK_SAMPLES, FRAME_SAMPLES, POWERSET, SpeakerSegmentation, local_speakers
from inference.vad import hysteresis
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


@pytest.fixture(scope="module")
def campplus() -> CamPlusPlus:
    (weights,) = [files for spec, files in real_weights().items() if spec.source == "modelscope"]
    return CamPlusPlus.from_checkpoint(next(iter(weights.values())))


def test_campplus_matches_3d_speakers_network_on_real_speech(campplus):
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


def test_segmentation_matches_pyannotes_torch_model_on_real_speech():
    reference = json.loads((DATA / "segmentation_reference.json").read_text())
    (weights,) = [files for spec, files in real_weights().items() if spec.source == "huggingface"]
    segmentation = SpeakerSegmentation.from_checkpoint(next(iter(weights.values())))
    samples, _ = soundfile.read(DATA / "two_speakers.wav", dtype="float32")

    log_probabilities = segmentation(samples, reference["starts"])[:, :: reference["every"]]

    np.testing.assert_allclose(log_probabilities, reference["log_probabilities"], atol=3e-3)
