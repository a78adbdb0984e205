"""Orders → per-shopper summaries, as Fader, Hardie & Lee define them, and the enough-data rule."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.core.purchase_history import reason_not_to_fit, summarise_orders

CUTOFF = 100


def summary_of(rows, cutoff=CUTOFF):
    """Summarise (shopper, day, net, kept) tuples."""
    shopper, day, net, kept = zip(*rows, strict=True)
    return summarise_orders(shopper, day, net, kept, cutoff)


def test_orders_on_one_day_are_one_occasion_with_their_nets_summed():
    # given: a first day, then two orders on day 10 and one on day 30
    rows = [(1, 0, 50.0, True), (1, 10, 20.0, True), (1, 10, 5.0, True), (1, 30, 15.0, True)]
    # when
    summary = summary_of(rows)
    # then: two repeat occasions, the first worth 25
    assert (summary.x[0], summary.t_x[0], summary.T[0]) == (2, 30, 100)
    assert summary.spend_count[0] == 2
    assert summary.spend_mean[0] == pytest.approx((25.0 + 15.0) / 2)


def test_cancelled_orders_and_orders_after_the_cutoff_do_not_count():
    # given: a cancelled order on its own day and a kept one after the cutoff
    rows = [(1, 5, 50.0, True), (1, 20, 30.0, False), (1, CUTOFF + 1, 30.0, True)]
    # when
    summary = summary_of(rows)
    # then
    assert (summary.x[0], summary.t_x[0], summary.T[0]) == (0, 0, CUTOFF - 5)


def test_a_shopper_whose_orders_are_all_cancelled_is_left_out():
    # given
    rows = [(1, 5, 50.0, True), (2, 6, 40.0, False)]
    # when
    summary = summary_of(rows)
    # then
    assert summary.shopper.tolist() == [1]


def test_spend_leaves_out_the_first_occasion_and_unpaid_repeats():
    # given: first order 100, a free repeat (net 0), a refunded one (net -10) and a paid one of 40
    rows = [(7, 0, 100.0, True), (7, 3, 0.0, True), (7, 4, -10.0, True), (7, 9, 40.0, True)]
    # when
    summary = summary_of(rows)
    # then: three repeat occasions, one of them paid
    assert summary.x[0] == 3
    assert (summary.spend_count[0], summary.spend_mean[0]) == (1, 40.0)


def test_a_one_time_buyer_has_no_spend_mean():
    # when
    summary = summary_of([(3, 50, 80.0, True)])
    # then
    assert summary.spend_count[0] == 0
    assert np.isnan(summary.spend_mean[0])


def test_summaries_match_a_plain_loop_over_random_orders():
    # given: random orders, ids not in order, several per day, some cancelled
    rng = np.random.default_rng(3)
    n = 5_000
    shopper = rng.integers(0, 400, size=n) * 7919 % 10_007
    day = rng.integers(0, 150, size=n)
    net = rng.normal(30, 25, size=n).round(2)
    kept = rng.uniform(size=n) < 0.9
    # when
    summary = summarise_orders(shopper, day, net, kept, CUTOFF)
    # then: the same numbers as a loop written straight from the definitions
    expected = {}
    for s, d, v, k in zip(shopper.tolist(), day.tolist(), net.tolist(), kept.tolist(), strict=True):
        if k and d <= CUTOFF:
            expected.setdefault(s, {}).setdefault(d, 0.0)
            expected[s][d] += v
    assert summary.shopper.tolist() == sorted(expected)
    for i, s in enumerate(summary.shopper.tolist()):
        days = sorted(expected[s])
        paid = [expected[s][d] for d in days[1:] if expected[s][d] > 0]
        assert (summary.x[i], summary.t_x[i], summary.T[i]) == (
            len(days) - 1,
            days[-1] - days[0],
            CUTOFF - days[0],
        )
        assert summary.spend_count[i] == len(paid)
        if paid:
            assert summary.spend_mean[i] == pytest.approx(sum(paid) / len(paid))


def shop(repeat_buyers, one_time, first_day):
    """Summaries of a shop with that many repeat and one-time buyers, all first seen on first_day."""
    rows = [(i, first_day, 10.0, True) for i in range(repeat_buyers + one_time)]
    rows += [(i, first_day + 1, 10.0, True) for i in range(repeat_buyers)]
    return summary_of(rows)


@pytest.mark.parametrize(
    ("repeat_buyers", "first_day", "reason"),
    [
        (150, 0, None),
        (150, 20, "80 days of order history, the model needs at least 90"),
        (99, 0, "99 repeat buyers, the model needs at least 100"),
        (100, 10, None),
    ],
)
def test_the_model_is_fitted_only_on_enough_history(repeat_buyers, first_day, reason):
    assert reason_not_to_fit(shop(repeat_buyers, 300, first_day)) == reason


def test_repeat_buyers_without_a_paid_repeat_order_are_not_enough_for_the_spend_model():
    # given: 150 repeat buyers whose repeat orders were free
    rows = [(i, 0, 10.0, True) for i in range(150)] + [(i, 5, 0.0, True) for i in range(150)]
    # when
    reason = reason_not_to_fit(summary_of(rows))
    # then
    assert reason == "0 repeat buyers with a paid repeat order, the spend model needs at least 100"
