"""What the admin shows of the purchase model: the fit and its holdout check (cached per fit), lift per
rule, the predicted value of the at-risk stage, and one shopper's forecast (or why there is none).

The holdout check refits the model on three quarters of the history, too slow for every page load: it is
computed on the first overview after a fit and kept in Redis under the fit's id (`holdout_key`), so a
new fit (a new id) gets a new check and an old one expires on its own.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from plugin.clock import iso
from plugin.store import predictions
from plugin.store.db import Database
from plugin.store.models import Shop, Shopper, ShopperPrediction, Stage
from plugin.store.prediction_reports import holdout_report, holdout_weeks, lift_row, model_report
from plugin.store.rule_lift import lift_by_rule
from plugin.store.shoppers import current_shoppers

HOLDOUT_KEPT = timedelta(days=3)  # a fit is replaced daily; its check need not outlive it by much
NO_FIT_YET = "not fitted yet: the model is fitted once a day, from the stored orders"


def holdout_key(fit_id: int) -> str:
    return f"lifecycle:holdout:{fit_id}"


def model_panel(db: Database, connection: redis.Redis, shop_id: int) -> dict:
    """The shop's newest fit as `lifecycle predict --json` reports it, with its holdout check and the
    weekly forecast against actual repeat orders; or why the shop has no fit."""
    with db.session() as session:
        fit = predictions.current_fit(session, shop_id)
    if fit is None:
        return {"fitted": False, "reason": NO_FIT_YET}
    report = model_report(fit)
    if report["fitted"]:
        report["holdout"] = cached_holdout(db, connection, shop_id, fit)
    return report


def cached_holdout(db: Database, connection: redis.Redis, shop_id: int, fit) -> dict:
    """The fit's holdout check, from Redis when this fit's was computed already."""
    key = holdout_key(fit.id)
    kept = connection.get(key)
    if kept is not None:
        return json.loads(kept)
    # As of the fit's cutoff (the instant its day ends), whenever this runs: the check sees the fit's orders.
    check = predictions.holdout_check(db, shop_id, fit.cutoff_at, unit=fit.unit)
    report = holdout_report(check)
    if not isinstance(check, str):
        report["weeks"] = holdout_weeks(check)
    connection.set(key, json.dumps(report), ex=HOLDOUT_KEPT)
    return report


def lift_panel(session: Session, shop: Shop, now: datetime) -> list[dict]:
    """Lift per rule with a hold-out group, as `lifecycle lift --json` reports it."""
    return [lift_row(measured) for measured in lift_by_rule(session, shop, now)]


def at_risk_value(session: Session, shop: Shop) -> dict:
    """The at-risk stage's shoppers, how many have a forecast, and their predicted 365-day value summed."""
    shoppers, forecast, value = session.execute(
        select(
            func.count(Shopper.id),
            func.count(ShopperPrediction.shopper_id),
            func.coalesce(func.sum(ShopperPrediction.predicted_clv_365d), 0.0),
        )
        .outerjoin(ShopperPrediction, ShopperPrediction.shopper_id == Shopper.id)
        .where(current_shoppers(shop.id), Shopper.stage == Stage.AT_RISK.value)
    ).one()
    return {
        "shoppers": shoppers,
        "with_forecast": forecast,
        "predicted_clv_365d": round(float(value), 2),
        "currency": shop.currency or _one_currency(session, shop.id),
    }


def _one_currency(session: Session, shop_id: int) -> str | None:
    """The shoppers' currency when they all spend in one (the shop's own is known once Shopify sent it)."""
    found = session.scalars(
        select(Shopper.currency)
        .where(current_shoppers(shop_id), Shopper.currency.is_not(None))
        .distinct()
        .limit(2)
    ).all()
    return found[0] if len(found) == 1 else None


def shopper_forecast(session: Session, shopper: Shopper) -> dict:
    """The shopper's forecast under the names `lifecycle customers --json` uses, or `forecast_missing`."""
    row = session.get(ShopperPrediction, shopper.id)
    if row is not None:
        return {
            "p_alive": row.p_alive,
            "expected_orders_90d": row.expected_orders_90d,
            "predicted_next_order_at": iso(row.predicted_next_order_at),
            "predicted_clv_365d": row.predicted_clv_365d,
            "forecast_missing": None,
        }
    fit = predictions.current_fit(session, shopper.shop_id)
    if fit is None:
        why = NO_FIT_YET
    elif fit.reason is not None:
        why = f"not fitted: {fit.reason}"
    else:
        why = f"no kept order up to the model's cutoff ({fit.cutoff_day.isoformat()})"
    empty = dict.fromkeys(("p_alive", "expected_orders_90d", "predicted_next_order_at", "predicted_clv_365d"))
    return empty | {"forecast_missing": why}
