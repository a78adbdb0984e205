"""Per-shopper forecasts from a shop's orders, and the holdout check, on simulated shops."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.core.purchase_forecast import check_holdout, fit_shop_model, predict_shoppers
from plugin.core.purchase_history import summarise_orders
from plugin.core.purchase_model import expected_transactions
from plugin.core.purchase_simulation import TrueParameters, simulate_orders

TRUTH = TrueParameters(r=0.8, alpha=60.0, a=0.6, b=6.0, p=6.0, q=4.0, gamma=15.0)
END = 545  # 78 weeks of day numbers, as the paper's CDNOW study
CALIBRATION_END = 272  # 39 weeks


def shop(seed=0, shoppers=20_000):
    """A simulated shop: first orders over 26 weeks, 5 % split orders, 5 % cancelled ones."""
    return simulate_orders(
        np.random.default_rng(seed),
        TRUTH,
        shoppers=shoppers,
        first_day=0,
        acquisition_days=182,
        end_day=END,
        split_share=0.05,
        cancelled_share=0.05,
    )


def test_the_shop_model_recovers_the_parameters_from_order_rows():
    # given
    orders = shop()
    summaries = summarise_orders(orders.shopper, orders.day, orders.net, orders.kept, END)
    # when
    model = fit_shop_model(summaries)
    # then
    purchases, spend = model.purchases, model.spend
    assert (purchases.r, purchases.alpha) == pytest.approx((TRUTH.r, TRUTH.alpha), rel=0.10)
    assert (purchases.a, purchases.b) == pytest.approx((TRUTH.a, TRUTH.b), rel=0.20)
    mean_spend = spend.p * spend.gamma / (spend.q - 1)
    assert mean_spend == pytest.approx(TRUTH.p * TRUTH.gamma / (TRUTH.q - 1), rel=0.05)


def test_predictions_do_not_depend_on_the_fits_time_unit():
    # given
    orders = shop(seed=1, shoppers=5_000)
    summaries = summarise_orders(orders.shopper, orders.day, orders.net, orders.kept, END)
    # when
    in_days = predict_shoppers(fit_shop_model(summaries), summaries)
    in_weeks = predict_shoppers(fit_shop_model(summaries, unit="weeks"), summaries)
    # then
    for name in ("p_alive", "expected_orders_90d", "predicted_clv_365d", "predicted_next_order_day"):
        np.testing.assert_allclose(getattr(in_days, name), getattr(in_weeks, name), rtol=1e-4, err_msg=name)


def test_predictions_per_shopper():
    # given
    orders = shop(seed=2, shoppers=5_000)
    summaries = summarise_orders(orders.shopper, orders.day, orders.net, orders.kept, END)
    model = fit_shop_model(summaries)
    # when
    predicted = predict_shoppers(model, summaries)
    # then
    assert predicted.shopper is summaries.shopper
    assert np.all((predicted.p_alive >= 0) & (predicted.p_alive <= 1))
    one_time = summaries.x == 0
    assert np.all(np.isnan(predicted.predicted_next_order_day[one_time]))
    np.testing.assert_allclose(
        predicted.predicted_next_order_day[~one_time],
        summaries.last_day[~one_time]
        + (model.purchases.alpha + summaries.T[~one_time]) / (model.purchases.r + summaries.x[~one_time] - 1),
    )
    in_a_year = expected_transactions(model.purchases, 365, summaries.x, summaries.t_x, summaries.T)
    np.testing.assert_allclose(predicted.predicted_clv_365d, in_a_year * predicted.expected_spend)
    assert np.all(predicted.expected_orders_90d < in_a_year)


def test_holdout_forecast_is_close_to_what_happened():
    # given
    orders = shop(seed=3)
    # when
    check = check_holdout(orders.shopper, orders.day, orders.net, orders.kept, CALIBRATION_END, END)
    # then
    assert check.holdout_forecast == pytest.approx(check.holdout_actual, rel=0.08)
    assert check.forecast_cumulative[-1] == pytest.approx(check.actual_cumulative[-1], rel=0.05)
    at_cutoff = int(np.searchsorted(check.week_end_day, CALIBRATION_END))
    assert check.week_end_day[at_cutoff] == CALIBRATION_END and check.week_end_day[-1] == END
    assert check.actual_cumulative[-1] - check.actual_cumulative[at_cutoff] == check.holdout_actual
    assert np.all(np.diff(check.forecast_cumulative) >= 0)


def test_holdout_counts_the_calibration_cohorts_repeat_occasions_per_week():
    # given: shopper 1 first buys on day 0, again on days 3 (twice), 9, and 16 (after the cutoff);
    # shopper 2 first buys after the cutoff and is not in the cohort; a cancelled order never counts
    rows = [
        (1, 0, True),
        (1, 3, True),
        (1, 3, True),
        (1, 9, True),
        (1, 16, True),
        (2, 15, True),
        (1, 19, False),
    ]
    shopper, day, kept = (np.array(column) for column in zip(*rows, strict=True))
    net = np.full(len(rows), 10.0)
    # when
    check = check_holdout(shopper, day, net, kept, calibration_end_day=13, end_day=20)
    # then: weeks end on days 6 and 13 (the cutoff), then 20
    assert check.week_end_day.tolist() == [6, 13, 20]
    assert check.actual_cumulative.tolist() == [1, 2, 3]
    assert check.holdout_actual == 1
