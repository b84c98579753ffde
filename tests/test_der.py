"""tests/der.py, the DER the bench and the real-speech tests report, on cases worked out by hand."""

from __future__ import annotations

import pytest

from tests.der import overlap_floor, score

REFERENCE = [(0.0, 4.0, "alice"), (3.0, 6.0, "bob")]  # 1 s of overlap: 7 s of speaker time
REGION = (0.0, 10.0)


def test_the_reference_itself_scores_zero_whatever_the_labels():
    renamed = [(s, e, {"alice": "SPEAKER_01", "bob": "SPEAKER_00"}[who]) for s, e, who in REFERENCE]

    result = score(REFERENCE, renamed, REGION)

    assert result.speech == pytest.approx(7.0)
    assert result.der == pytest.approx(0.0)


def test_nothing_found_is_all_missed():
    result = score(REFERENCE, [], REGION)

    assert (result.missed, result.false_alarm, result.confusion) == pytest.approx((7.0, 0.0, 0.0))
    assert result.der == pytest.approx(1.0)


def test_one_speaker_per_instant_misses_the_overlap_and_confuses_the_rest():
    # One label for all the speech: mapped to alice (4 s), bob's 2 lone seconds are confusion.
    result = score(REFERENCE, [(0.0, 6.0, "x")], REGION)

    assert (result.missed, result.false_alarm, result.confusion) == pytest.approx((1.0, 0.0, 2.0))
    assert result.der == pytest.approx(3 / 7)


def test_speech_outside_the_reference_is_false_alarm_and_outside_the_region_is_not_scored():
    hypothesis = [*REFERENCE, (7.0, 8.5, "alice"), (10.0, 20.0, "bob")]

    result = score(REFERENCE, hypothesis, REGION)

    assert (result.missed, result.false_alarm, result.confusion) == pytest.approx((0.0, 1.5, 0.0))


def test_each_hypothesis_speaker_maps_to_one_reference_speaker():
    # Both reference speakers found as one label "x" at different times, plus a 2nd label for the overlap.
    hypothesis = [(0.0, 3.0, "x"), (3.0, 4.0, "x"), (3.0, 4.0, "y"), (4.0, 6.0, "x")]

    result = score(REFERENCE, hypothesis, REGION)

    # x -> alice (4 s matched), y -> bob (1 s); bob's lone 2 s labelled x are confusion.
    assert result.confusion == pytest.approx(2.0)
    assert result.missed == pytest.approx(0.0)


def test_overlap_floor_counts_every_speaker_beyond_the_first():
    assert overlap_floor(REFERENCE, REGION) == pytest.approx(1 / 7)
    assert overlap_floor([(0.0, 2.0, "a"), (0.0, 2.0, "b"), (0.0, 2.0, "c")], REGION) == pytest.approx(4 / 6)
    assert overlap_floor([(1.0, 2.0, "a")], REGION) == 0.0
