"""The purchase model's fit, its holdout check and the lift per rule as plain JSON-ready dicts: what
`lifecycle predict --json` and `lifecycle lift --json` print and the admin's overview shows, built once."""

from __future__ import annotations

from datetime import timedelta

from plugin.core.lift import NotEnoughData
from plugin.core.purchase_forecast import HoldoutCheck
from plugin.store.models import PurchaseFit
from plugin.store.predictions import EPOCH
from plugin.store.rule_lift import ATTRIBUTION, RuleLift


def model_report(fit: PurchaseFit) -> dict:
    """The fit's parameters (or why there are none), as `lifecycle predict --json` prints them."""
    report = {
        "model": "BG/NBD (purchases) + Gamma-Gamma (spend)",
        "cutoff_day": fit.cutoff_day.isoformat(),
        "fitted": fit.reason is None,
        "reason": fit.reason,
        "shoppers": fit.shoppers,
        "repeat_buyers": fit.repeat_buyers,
    }
    if fit.reason is None:
        report["bg_nbd"] = {
            "r": fit.r,
            "alpha": fit.alpha,
            "a": fit.a,
            "b": fit.b,
            "unit": fit.unit,
            "log_likelihood": fit.log_likelihood,
        }
        report["gamma_gamma"] = {
            "p": fit.p,
            "q": fit.q,
            "gamma": fit.gamma,
            "log_likelihood": fit.spend_log_likelihood,
        }
    return report


def holdout_report(check: HoldoutCheck | str) -> dict:
    """The holdout check's totals (or why there is none), as `lifecycle predict --json` prints them."""
    if isinstance(check, str):
        return {"reason": check}
    return {
        "calibration_end_day": day_iso(check.calibration_end_day),
        "end_day": day_iso(check.end_day),
        "forecast_repeat_orders": round(check.holdout_forecast, 1),
        "actual_repeat_orders": check.holdout_actual,
    }


def holdout_weeks(check: HoldoutCheck) -> list[dict]:
    """Repeat orders per week of the holdout check, forecast against actual (the plot's points).

    Each entry is the period of `days` days (7, the last one maybe fewer) ending on `week_end`; `holdout`
    is true for periods after the calibration end.
    """
    ends = check.week_end_day.tolist()
    forecast = check.forecast_cumulative.tolist()
    actual = check.actual_cumulative.tolist()
    return [
        {
            "week_end": day_iso(ends[i]),
            "days": ends[i] - ends[i - 1],
            "forecast": round(forecast[i] - forecast[i - 1], 2),
            "actual": int(actual[i] - actual[i - 1]),
            "holdout": ends[i] > check.calibration_end_day,
        }
        for i in range(1, len(ends))
    ]


def day_iso(number: int) -> str:
    """A day number (days since 1970-01-01) as an ISO date."""
    return (EPOCH + timedelta(days=number)).isoformat()


def _arm(counts) -> dict:
    return {"runs": counts.n, "conversions": counts.conversions, "revenue": round(counts.revenue, 2)}


def lift_row(measured: RuleLift) -> dict:
    """One rule's two arms and its lift with the 95 % interval (or why not yet), as `lifecycle lift
    --json` prints it."""
    row = {
        "rule": measured.key,
        "holdout_percent": measured.holdout_percent,
        "attribution_days": ATTRIBUTION.days,
        "sent": _arm(measured.sent),
        "held_out": _arm(measured.held_out),
    }
    result = measured.result
    if isinstance(result, NotEnoughData):
        return row | {"lift": None, "reason": result.reason}
    return row | {
        "lift": {
            "absolute_lift": result.absolute_lift,
            "low": result.low,
            "high": result.high,
            "sent_rate": result.sent_rate,
            "held_out_rate": result.held_out_rate,
            "incremental_revenue": round(result.incremental_revenue, 2),
        },
        "reason": None,
    }
