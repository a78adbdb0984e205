"""A shop's purchase model in the database: its orders read once into numpy, fitted as of a cutoff day,
stored with that cutoff, and each shopper's forecast written set-based.

The cutoff is the end of the day before *now* in the shop's time zone, so a fit run at 00:05 or at 23:55
of one day sees the same orders and gives the same answers: a stage never depends on when a fit ran.
Order days are days in the shop's time zone (Fader, Hardie & Lee's purchase occasions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import BigInteger, Float, Integer, and_, cast, delete, func, insert, select
from sqlalchemy.orm import Session

from plugin.core.purchase_forecast import HoldoutCheck, check_holdout, fit_shop_model, predict_shoppers
from plugin.core.purchase_history import Occasions, find_occasions, reason_not_to_fit, summarise_occasions
from plugin.core.purchase_model import FitError
from plugin.core.stages import PersonalPrediction
from plugin.store.db import Database
from plugin.store.models import Order, PurchaseFit, Shop, Shopper, ShopperPrediction
from plugin.store.stage_sql import personal_fit

EPOCH = date(1970, 1, 1)
QUARTER_HOUR = 900  # time-zone transitions fall on quarter hours (UTC) in every zone of the modern tz data


@dataclass(frozen=True)
class ShopOrders:
    """A shop's orders, one entry per order: shopper row id, day number in the shop's zone, net, kept."""

    shopper: NDArray[np.int64]
    day: NDArray[np.int64]
    net: NDArray[np.float64]
    kept: NDArray[np.bool_]


def shop_zone(shop: Shop) -> ZoneInfo:
    """The shop's time zone (UTC when unset or unknown)."""
    try:
        return ZoneInfo(shop.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def cutoff_of(now: datetime, zone: ZoneInfo) -> tuple[date, datetime]:
    """Return the cutoff day (the day before `now`'s day in `zone`) and the instant it ends (UTC)."""
    today = now.astimezone(zone).date()
    return today - timedelta(days=1), datetime.combine(today, time(), tzinfo=zone).astimezone(UTC)


def day_number(day: date) -> int:
    """Days since 1970-01-01 (the core's integer days)."""
    return (day - EPOCH).days


def read_orders(session: Session, shop: Shop) -> ShopOrders:
    """Read every order of the shop's (not erased) shoppers in one query, days in the shop's zone."""
    if session.get_bind().dialect.name == "postgresql":
        seconds = cast(func.extract("epoch", Order.placed_at), BigInteger)
    else:
        seconds = cast(func.strftime("%s", Order.placed_at), Integer)
    rows = session.execute(
        select(
            Shopper.id,
            seconds,
            cast(Order.total_price - Order.refunded, Float),
            Order.cancelled_at.is_(None),
        )
        .join(Shopper, and_(Shopper.shop_id == Order.shop_id, Shopper.customer_id == Order.customer_id))
        .where(Order.shop_id == shop.id, Shopper.deleted_at.is_(None))
    ).all()
    table = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return ShopOrders(
        shopper=table[:, 0].astype(np.int64),
        day=local_days(table[:, 1].astype(np.int64), shop_zone(shop)),
        net=table[:, 2],
        kept=table[:, 3].astype(bool),
    )


def local_days(seconds: NDArray[np.int64], zone: ZoneInfo) -> NDArray[np.int64]:
    """Turn Unix seconds into day numbers in `zone`, asking zoneinfo once per distinct quarter hour."""
    if len(seconds) == 0:
        return seconds.astype(np.int64)
    quarters, index = np.unique(seconds // QUARTER_HOUR, return_inverse=True)
    offsets = np.array(
        [
            datetime.fromtimestamp(int(q) * QUARTER_HOUR, zone).utcoffset().total_seconds()
            for q in quarters.tolist()
        ],
        dtype=np.int64,
    )
    return (seconds + offsets[index.ravel()]) // 86400


def second_order_gaps(occasions: Occasions) -> NDArray[np.int64]:
    """Days from the first purchase day to the second, for every shopper with a second."""
    count = np.bincount(occasions.shopper, minlength=len(occasions.shoppers))
    start = (np.cumsum(count) - count)[count >= 2]
    return occasions.day[start + 1] - occasions.day[start]


def fit_shop(db: Database, shop_id: int, now: datetime, *, unit: str = "days") -> PurchaseFit:
    """Fit the shop's models on its orders up to the cutoff for `now`, store the fit and the forecasts.

    Without enough data (core.purchase_history.reason_not_to_fit) the fit is stored with its reason and
    no forecasts: the shop keeps its fixed thresholds. The shop's earlier forecasts are replaced either way.
    """
    with db.session() as session:
        shop = session.scalars(select(Shop).where(Shop.id == shop_id).with_for_update()).one()
        zone = shop_zone(shop)
        cutoff_day, cutoff_at = cutoff_of(now, zone)
        orders = read_orders(session, shop)
        occasions = find_occasions(
            orders.shopper, orders.day, orders.net, orders.kept, last_day=day_number(cutoff_day)
        )
        summaries = summarise_occasions(occasions, day_number(cutoff_day))
        fit = PurchaseFit(
            shop_id=shop_id,
            cutoff_day=cutoff_day,
            cutoff_at=cutoff_at,
            fitted_at=now,
            unit=unit,
            shoppers=len(summaries),
            repeat_buyers=int(np.count_nonzero(summaries.x)),
            reason=reason_not_to_fit(summaries),
        )
        predictions = None
        if fit.reason is None:
            try:
                model = fit_shop_model(summaries, unit=unit)
            except FitError as error:
                fit.reason = f"the fit did not converge: {error}"
            else:
                _set_parameters(fit, model, second_order_gaps(occasions))
                predictions = predict_shoppers(model, summaries)
                broken = [
                    name
                    for name in ("p_alive", "expected_orders_90d")
                    if not np.isfinite(getattr(predictions, name)).all()
                ]
                if broken:  # stored with its reason, as a shop without enough data: fixed thresholds stay
                    fit.reason = f"the fitted model gives no finite forecast ({', '.join(broken)})"
                    predictions = None
        session.add(fit)
        session.flush()
        session.execute(delete(ShopperPrediction).where(ShopperPrediction.shop_id == shop_id))
        if predictions is not None:
            rows = _prediction_rows(fit, summaries.x, predictions, zone)
            session.execute(insert(ShopperPrediction), rows)
        session.expunge(fit)
    return fit


def _set_parameters(fit: PurchaseFit, model, gaps: NDArray[np.int64]) -> None:
    purchases, spend = model.purchases, model.spend
    fit.r, fit.alpha, fit.a, fit.b = purchases.r, purchases.alpha, purchases.a, purchases.b
    fit.p, fit.q, fit.gamma = spend.p, spend.q, spend.gamma
    fit.log_likelihood, fit.spend_log_likelihood = purchases.log_likelihood, spend.log_likelihood
    fit.second_order_p80_days = float(np.percentile(gaps, 80))
    fit.second_order_p95_days = float(np.percentile(gaps, 95))


def _prediction_rows(fit: PurchaseFit, x: NDArray, predictions, zone: ZoneInfo) -> list[dict]:
    next_at = _instants(predictions.predicted_next_order_day, zone)
    columns = zip(
        predictions.shopper.tolist(),
        x.tolist(),
        predictions.p_alive.tolist(),
        predictions.expected_orders_90d.tolist(),
        _nullable(predictions.predicted_clv_365d),
        _nullable(predictions.expected_gap_days),
        next_at,
        strict=True,
    )
    return [
        {
            "shopper_id": shopper,
            "shop_id": fit.shop_id,
            "fit_id": fit.id,
            "repeat_occasions": repeats,
            "p_alive": alive,
            "expected_orders_90d": orders,
            "predicted_clv_365d": clv,
            "expected_gap_days": gap,
            "predicted_next_order_at": at,
        }
        for shopper, repeats, alive, orders, clv, gap, at in columns
    ]


def _nullable(values: NDArray) -> list[float | None]:
    return [None if np.isnan(v) else v for v in values.tolist()]


def _instants(days: NDArray[np.float64], zone: ZoneInfo) -> list[datetime | None]:
    """Turn fractional day numbers in `zone` into UTC instants (None for NaN), one zone lookup per day."""
    known = ~np.isnan(days)
    whole = np.floor(days[known]).astype(np.int64)
    distinct, index = np.unique(whole, return_inverse=True)
    midnight = np.array(
        [
            datetime.combine(EPOCH + timedelta(days=int(d)), time(), tzinfo=zone).timestamp()
            for d in distinct.tolist()
        ]
    )
    seconds = np.full(len(days), np.nan)
    seconds[known] = midnight[index.ravel()] + (days[known] - whole) * 86400
    return [None if np.isnan(s) else datetime.fromtimestamp(round(s), UTC) for s in seconds.tolist()]


def current_fit(session: Session, shop_id: int) -> PurchaseFit | None:
    """The shop's newest fit (by cutoff, then by when it ran), fitted or not."""
    return session.scalars(
        select(PurchaseFit)
        .where(PurchaseFit.shop_id == shop_id)
        .order_by(PurchaseFit.cutoff_day.desc(), PurchaseFit.id.desc())
        .limit(1)
    ).first()


def predictions_by_shopper(session: Session, shop_id: int) -> dict[int, ShopperPrediction]:
    """The shop's current forecasts, by shopper row id."""
    rows = session.scalars(select(ShopperPrediction).where(ShopperPrediction.shop_id == shop_id))
    return {row.shopper_id: row for row in rows}


def personal_predictions(
    session: Session, shop: Shop, shopper_ids: list[int] | None = None
) -> dict[int, PersonalPrediction]:
    """What personal stages read per shopper (all, or these), by shopper row id; empty when they are off
    or the shop has no fitted model (the Python path of stages; the tick's SQL reads the same rows)."""
    fit = personal_fit(session, shop)
    if fit is None:
        return {}
    query = select(ShopperPrediction).where(ShopperPrediction.fit_id == fit.id)
    if shopper_ids is not None:
        query = query.where(ShopperPrediction.shopper_id.in_(shopper_ids))
    return {
        row.shopper_id: PersonalPrediction(
            p_alive=row.p_alive,
            expected_gap_days=row.expected_gap_days,
            cutoff_at=fit.cutoff_at,
            second_order_p80_days=fit.second_order_p80_days,
            second_order_p95_days=fit.second_order_p95_days,
        )
        for row in session.scalars(query)
    }


def holdout_check(db: Database, shop_id: int, now: datetime, *, unit: str = "days") -> HoldoutCheck | str:
    """Fit on the first three quarters of the shop's history up to the cutoff and forecast the rest.

    Returns the check, or why there is not enough data for one.
    """
    with db.session() as session:
        shop = session.get(Shop, shop_id)
        cutoff_day, _ = cutoff_of(now, shop_zone(shop))
        orders = read_orders(session, shop)
    end = day_number(cutoff_day)
    kept = orders.kept & (orders.day <= end)
    if not kept.any():
        return "no orders yet"
    first = int(orders.day[kept].min())
    calibration_end = first + (end - first) * 3 // 4
    calibration = summarise_occasions(
        find_occasions(orders.shopper, orders.day, orders.net, orders.kept, last_day=calibration_end),
        calibration_end,
    )
    reason = reason_not_to_fit(calibration) if len(calibration) else "no orders in the calibration period"
    if reason:
        return f"not enough data in the first three quarters of the history: {reason}"
    try:
        return check_holdout(
            orders.shopper, orders.day, orders.net, orders.kept, calibration_end, end, unit=unit
        )
    except FitError as error:
        return f"the calibration fit did not converge: {error}"
