"""Lift over the hold-out group: Newcombe's interval against his paper, and when it is too early to say."""

from __future__ import annotations

import pytest
from scipy import stats

from plugin.core.lift import ArmCounts, Lift, NotEnoughData, measure_lift, newcombe_interval, wilson_interval


# Newcombe (1998), Statistics in Medicine 17, 873-890, Table II, method 10 (score, no continuity correction).
@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "low", "high"),
    [
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (0, 10, 0, 10, -0.2775, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0000),
        (10, 10, 0, 10, 0.6075, 1.0000),
    ],
)
def test_newcombe_interval_matches_the_papers_examples(x1, n1, x2, n2, low, high):
    assert newcombe_interval(x1, n1, x2, n2) == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize(("successes", "n"), [(0, 10), (3, 10), (56, 70), (10, 10), (1, 1000)])
def test_wilson_interval_matches_scipy(successes, n):
    expected = stats.binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(successes, n) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_lift_of_a_play_with_its_interval_and_incremental_revenue():
    # given: 200 sent, 30 bought for 1,500; 100 held out, 8 bought for 400
    sent, held_out = ArmCounts(200, 30, 1500.0), ArmCounts(100, 8, 400.0)
    # when
    lift = measure_lift(sent, held_out)
    # then
    assert isinstance(lift, Lift)
    assert lift.absolute_lift == pytest.approx(0.15 - 0.08)
    assert (lift.low, lift.high) == pytest.approx(newcombe_interval(30, 200, 8, 100))
    assert lift.incremental_revenue == pytest.approx(1500.0 - 200 * 4.0)


@pytest.mark.parametrize(
    ("sent", "held_out", "reason"),
    [
        (ArmCounts(29, 10, 100.0), ArmCounts(300, 10, 100.0), "29 sent and 300 held out"),
        (ArmCounts(300, 3, 100.0), ArmCounts(30, 1, 10.0), "4 conversions, at least 5"),
    ],
)
def test_too_early_to_say(sent, held_out, reason):
    result = measure_lift(sent, held_out)
    assert isinstance(result, NotEnoughData)
    assert result.reason.startswith("not enough data yet")
    assert reason in result.reason


def test_counts_that_cannot_be_are_refused():
    with pytest.raises(ValueError, match="conversions"):
        ArmCounts(10, 11, 0.0)
