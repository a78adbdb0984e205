"""Per-shopper forecasts from a shop's fitted purchase and spend models, and the holdout check.

Everything here takes days (the shop's day numbers) and converts to the purchase fit's unit inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from plugin.core.purchase_history import Occasions, ShopperSummaries, find_occasions, summarise_orders
from plugin.core.purchase_model import (
    BgNbdFit,
    expected_gap,
    expected_repeat_transactions,
    expected_transactions,
    fit_bg_nbd,
    p_alive,
    unit_length,
)
from plugin.core.spend_model import GammaGammaFit, expected_spend, fit_gamma_gamma

ORDERS_HORIZON_DAYS = 90
CLV_HORIZON_DAYS = 365


@dataclass(frozen=True)
class ShopModel:
    """A shop's two fitted models."""

    purchases: BgNbdFit
    spend: GammaGammaFit


@dataclass(frozen=True)
class ShopperPredictions:
    """Forecasts per shopper, aligned with the summaries' `shopper` array.

    `predicted_clv_365d` is undiscounted: expected transactions in the next 365 days times the expected
    spend per transaction. `expected_gap_days` and `predicted_next_order_day` (a fractional day number) are
    NaN for one-time buyers (x = 0) and wherever r + x ≤ 1.
    """

    shopper: NDArray
    p_alive: NDArray[np.float64]
    expected_orders_90d: NDArray[np.float64]
    expected_spend: NDArray[np.float64]
    predicted_clv_365d: NDArray[np.float64]
    expected_gap_days: NDArray[np.float64]
    predicted_next_order_day: NDArray[np.float64]


def fit_shop_model(summaries: ShopperSummaries, *, unit: str = "days") -> ShopModel:
    """Fit both models to a shop's summaries (check `reason_not_to_fit` first)."""
    days = unit_length(unit)
    purchases = fit_bg_nbd(summaries.x, summaries.t_x / days, summaries.T / days, unit=unit)
    spenders = summaries.spend_count > 0
    spend = fit_gamma_gamma(summaries.spend_count[spenders], summaries.spend_mean[spenders])
    return ShopModel(purchases, spend)


def predict_shoppers(model: ShopModel, summaries: ShopperSummaries) -> ShopperPredictions:
    """Forecast every shopper of the summaries: P(alive), orders in 90 days, spend, CLV, next order."""
    fit, days = model.purchases, model.purchases.unit_days
    x, t_x, T = summaries.x, summaries.t_x / days, summaries.T / days
    spend = expected_spend(model.spend, summaries.spend_count, summaries.spend_mean)
    gap = expected_gap(fit, x, T) * days
    return ShopperPredictions(
        shopper=summaries.shopper,
        p_alive=p_alive(fit, x, t_x, T),
        expected_orders_90d=expected_transactions(fit, ORDERS_HORIZON_DAYS / days, x, t_x, T),
        expected_spend=spend,
        predicted_clv_365d=expected_transactions(fit, CLV_HORIZON_DAYS / days, x, t_x, T) * spend,
        expected_gap_days=gap,
        predicted_next_order_day=summaries.last_day + gap,
    )


@dataclass(frozen=True)
class HoldoutCheck:
    """Forecast against actual repeat occasions of the calibration cohort (shoppers first seen by then).

    The weekly series are cumulative repeat occasions from the cohort's first day to each `week_end_day`
    (weeks end on the calibration cutoff, the last point is `end_day`): the forecast is the unconditional
    BG/NBD expectation summed over the cohort, as in FHL 2005's tracking plot. `holdout_forecast` is the
    sum of each shopper's conditional expectation for the holdout period, `holdout_actual` what happened.
    """

    purchases: BgNbdFit
    calibration_end_day: int
    end_day: int
    week_end_day: NDArray[np.int64]
    forecast_cumulative: NDArray[np.float64]
    actual_cumulative: NDArray[np.int64]
    holdout_forecast: float
    holdout_actual: int


def check_holdout(
    shopper: ArrayLike,
    day: ArrayLike,
    net: ArrayLike,
    kept: ArrayLike,
    calibration_end_day: int,
    end_day: int,
    *,
    unit: str = "days",
) -> HoldoutCheck:
    """Fit on orders up to `calibration_end_day`, then compare forecast and actual up to `end_day`."""
    if end_day <= calibration_end_day:
        raise ValueError("the holdout period must end after the calibration period")
    calibration = summarise_orders(shopper, day, net, kept, calibration_end_day)
    days = unit_length(unit)
    fit = fit_bg_nbd(calibration.x, calibration.t_x / days, calibration.T / days, unit=unit)
    repeats = _cohort_repeat_days(find_occasions(shopper, day, net, kept, last_day=end_day), calibration)
    week_end = _week_ends(int(calibration.first_day.min()), calibration_end_day, end_day)
    horizon = (end_day - calibration_end_day) / days
    holdout = expected_transactions(fit, horizon, calibration.x, calibration.t_x / days, calibration.T / days)
    return HoldoutCheck(
        purchases=fit,
        calibration_end_day=int(calibration_end_day),
        end_day=int(end_day),
        week_end_day=week_end,
        forecast_cumulative=_cumulative_forecast(fit, calibration.first_day, week_end),
        actual_cumulative=np.searchsorted(repeats, week_end, side="right").astype(np.int64),
        holdout_forecast=float(holdout.sum()),
        holdout_actual=int(np.count_nonzero(repeats > calibration_end_day)),
    )


def _cohort_repeat_days(occasions: Occasions, calibration: ShopperSummaries) -> NDArray[np.int64]:
    """Return the sorted days of the cohort's repeat occasions (every occasion after a shopper's first)."""
    count = np.bincount(occasions.shopper, minlength=len(occasions.shoppers))
    repeat = np.ones(len(occasions.day), dtype=bool)
    repeat[np.cumsum(count) - count] = False
    in_cohort = np.isin(occasions.shoppers, calibration.shopper)[occasions.shopper]
    return np.sort(occasions.day[repeat & in_cohort])


def _week_ends(first_day: int, calibration_end_day: int, end_day: int) -> NDArray[np.int64]:
    """Return week ends on the calibration cutoff's weekday from the cohort's first week, then end_day."""
    weeks_before = (calibration_end_day - first_day) // 7
    weeks_after = (end_day - calibration_end_day) // 7
    ends = calibration_end_day + 7 * np.arange(-weeks_before, weeks_after + 1, dtype=np.int64)
    return ends if ends[-1] == end_day else np.append(ends, np.int64(end_day))


def _cumulative_forecast(fit: BgNbdFit, first_day: NDArray, week_end: NDArray) -> NDArray[np.float64]:
    """Sum E[X(elapsed)] over the cohort at each week end, grouping shoppers by their first day."""
    firsts, counts = np.unique(first_day, return_counts=True)
    elapsed = np.maximum(week_end[:, None] - firsts[None, :], 0) / fit.unit_days
    return expected_repeat_transactions(fit, elapsed) @ counts
