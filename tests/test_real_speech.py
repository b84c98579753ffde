"""handler.py's speaker_diarization and vad on real meeting speech: the ten AMI `trn` excerpts of
tests/data/ami (tests/ami.py), scored against their RTTM with tests/der.py. The bounds sit a little
above what bench/diarization_bench.py measured (SERVERLESS_DEPLOYMENT.md), with room for another BLAS or
CPU, so a regression fails here."""

from __future__ import annotations

import base64
import io
import statistics

import numpy as np
import pytest
import soundfile

import handler
from tests import ami
from tests.der import Score, overlap_floor, score, speech_seconds, turns_of, who_is
from tests.test_handler import build_model_cache

MEAN_DER_BOUND = 0.32  # measured: 0.300, with the true number of speakers too
TRN06_DER_BOUND = 0.11  # measured: 0.073 (3 speakers, 12 % overlapping speech)
TRN03_DER_BOUND = 0.03  # measured: 0.005 (2 speakers, one talking 29 s)
TRN00_DER_BOUND = 0.40  # measured: 0.360; 0.487 while its two voices in one local speaker stayed one speaker
TRN01_DER_BOUND = 0.90  # measured: 0.880; 0.924 with a 0.25 s blip of false alarm (5.7 s of speech in all)
TRN09_EXCLUSIVE_DER_BOUND = 0.36  # measured: 0.319, its overlap floor 0.319
MIN_COUNTS_RIGHT = 6  # measured: 7 of 10 speaker counts right with no hint
VAD_MISSED_BOUND = 0.23  # measured: 0.190 of the reference speech, mean over the excerpts
VAD_FALSE_ALARM_BOUND = 0.05  # measured: 0.027


@pytest.fixture(scope="module")
def excerpts() -> dict[str, ami.Excerpt]:
    return {excerpt.uri: excerpt for excerpt in ami.load_excerpts()}


@pytest.fixture(scope="module")
def diarize(tmp_path_factory):
    """job fields -> handler result, for an excerpt, with the real models served offline from a cache."""
    cache = build_model_cache(tmp_path_factory.mktemp("real-speech-models"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_CACHE_DIR", str(cache))
        patch.setenv("HF_HUB_OFFLINE", "1")

        def run(excerpt: ami.Excerpt, task: str = "speaker_diarization", **fields) -> dict:
            buffer = io.BytesIO()
            soundfile.write(buffer, excerpt.audio, 16000, format="WAV", subtype="FLOAT")
            audio = base64.b64encode(buffer.getvalue()).decode()
            result = handler.handler({"id": "test", "input": {"task": task, "audio_base64": audio, **fields}})
            assert "error" not in result, result
            return result

        yield run


def _score(excerpt: ami.Excerpt, result: dict) -> Score:
    return score(excerpt.reference, turns_of(result["segments"]), (0.0, excerpt.duration))


@pytest.fixture(scope="module")
def results(excerpts, diarize) -> dict[str, dict]:
    return {uri: diarize(excerpt) for uri, excerpt in excerpts.items()}


def _speakers(excerpt: ami.Excerpt) -> int:
    return len({speaker for _, _, speaker in excerpt.reference})


def test_mean_der_on_the_ten_excerpts(excerpts, results):
    ders = {uri: _score(excerpts[uri], result).der for uri, result in results.items()}

    assert len(ders) == 10
    assert statistics.mean(ders.values()) <= MEAN_DER_BOUND, ders


def test_mean_der_with_the_true_number_of_speakers(excerpts, diarize):
    ders = {uri: _score(e, diarize(e, num_speakers=_speakers(e))).der for uri, e in excerpts.items()}

    assert statistics.mean(ders.values()) <= MEAN_DER_BOUND, ders


def test_the_number_of_speakers_is_estimated(excerpts, results):
    found = {uri: (result["num_speakers"], _speakers(excerpts[uri])) for uri, result in results.items()}

    assert sum(got == want for got, want in found.values()) >= MIN_COUNTS_RIGHT, found


def test_vad_finds_far_field_speech(excerpts, diarize):
    missed, false_alarm = [], []
    for excerpt in excerpts.values():
        segments = diarize(excerpt, task="vad")["segments"]
        errors = score(
            [(s, e, "speech") for s, e, _ in excerpt.reference],
            [(s["start"], s["end"], "speech") for s in segments],
            (0.0, excerpt.duration),
        )
        missed.append(errors.missed / errors.speech)
        false_alarm.append(errors.false_alarm / errors.speech)

    assert statistics.mean(missed) <= VAD_MISSED_BOUND, missed
    assert statistics.mean(false_alarm) <= VAD_FALSE_ALARM_BOUND, false_alarm


def test_speech_is_found_in_every_excerpt(excerpts, results):
    for uri, result in results.items():
        assert result["segments"], uri
        assert _score(excerpts[uri], result).missed < _score(excerpts[uri], {"segments": []}).missed, uri


@pytest.mark.parametrize(
    ("uri", "bound"),
    [("trn06", TRN06_DER_BOUND), ("trn03", TRN03_DER_BOUND), ("trn00", TRN00_DER_BOUND), ("trn01", TRN01_DER_BOUND)],
)
def test_der_of_one_excerpt(excerpts, results, uri, bound):
    assert _score(excerpts[uri], results[uri]).der <= bound, results[uri]


def test_two_speakers_taking_turns_are_told_apart(results):
    assert results["trn03"]["num_speakers"] == 2


def test_two_voices_the_segmentation_follows_as_one_speaker_are_parted(results):
    # trn00: in most chunks one local speaker holds both MEE068 and MEO069; the third voice is MEE067.
    assert results["trn00"]["num_speakers"] == 3


def test_overlapping_speech_gives_overlapping_turns_of_different_speakers(results):
    # trn09: two people talk at once for about a third of its speech.
    segments = results["trn09"]["segments"]
    overlapping = [
        (a, b)
        for i, a in enumerate(segments)
        for b in segments[i + 1 :]
        if a["speaker"] != b["speaker"] and min(a["end"], b["end"]) - max(a["start"], b["start"]) > 0.5
    ]
    assert overlapping, segments


def test_exclusive_turns_are_the_same_speech_and_speakers_one_at_a_time(excerpts, results, diarize):
    # trn09: two people talk at once for about a third of its speech.
    excerpt = excerpts["trn09"]
    result = diarize(excerpt, exclusive=True)
    exclusive = result["exclusive_segments"]

    assert result["segments"] == results["trn09"]["segments"]  # asking for them changes nothing else
    assert all(a["end"] <= b["start"] for a, b in zip(exclusive, exclusive[1:], strict=False))
    for turn in exclusive:  # within a turn of the same speaker
        assert any(
            s["speaker"] == turn["speaker"] and s["start"] <= turn["start"] and turn["end"] <= s["end"]
            for s in result["segments"]
        ), turn
    speech = speech_seconds(turns_of(result["segments"]), (0.0, excerpt.duration))
    assert abs(sum(t["end"] - t["start"] for t in exclusive) - speech) < 0.01
    exclusive_der = _score(excerpt, {"segments": exclusive}).der
    assert overlap_floor(excerpt.reference, (0.0, excerpt.duration)) <= exclusive_der <= TRN09_EXCLUSIVE_DER_BOUND


def test_a_speakers_embedding_finds_them_in_another_recording(excerpts, diarize):
    # trn03 cut in two: MEE067 and MÉO069 take turns in the first half, MÉO069 speaks alone in the second.
    halves = [excerpts["trn03"].cropped(0.0, 15.0), excerpts["trn03"].cropped(15.0, 30.0)]
    first, second = (diarize(half, embeddings=True) for half in halves)
    ((alone, voice),) = second["embeddings"].items()
    similarity = {name: float(np.dot(mine, voice)) for name, mine in first["embeddings"].items()}

    assert all(abs(np.linalg.norm(mine) - 1) < 1e-4 for mine in first["embeddings"].values())
    assert set(similarity) == {s["speaker"] for s in first["segments"]} and len(similarity) == 2
    same = max(similarity, key=similarity.get)
    assert who_is(halves[0].reference, turns_of(first["segments"]), same) == who_is(
        halves[1].reference, turns_of(second["segments"]), alone
    )
    assert similarity[same] > 0.7 and min(similarity.values()) < 0.3, similarity


def test_speaker_bounds_are_kept(excerpts, diarize):
    one = diarize(excerpts["trn06"], max_speakers=1)
    two = diarize(excerpts["trn06"], num_speakers=2)

    assert one["num_speakers"] == 1
    assert two["num_speakers"] == 2
