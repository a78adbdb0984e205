"""The purchase model in the database: the shop's stored orders fitted as of a cutoff day, stored with it,
each shopper's forecast written with the fit; days in the shop's time zone; thin shops keep the fixed rules.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlalchemy import func, insert, select

from plugin.core.purchase_forecast import fit_shop_model, predict_shoppers
from plugin.core.purchase_history import summarise_orders
from plugin.core.purchase_simulation import TrueParameters, simulate_orders
from plugin.store import predictions
from plugin.store.models import Order, PurchaseFit, Shop, Shopper, ShopperPrediction

TRUTH = TrueParameters(r=0.8, alpha=60.0, a=0.6, b=6.0, p=6.0, q=4.0, gamma=15.0)
FIRST_DAY = 20_000  # 2024-10-04; END_DAY is 2025-11-08
END_DAY = FIRST_DAY + 400
EPOCH = date(1970, 1, 1)


def simulated(shoppers: int, seed: int = 5):
    return simulate_orders(
        np.random.default_rng(seed),
        TRUTH,
        shoppers=shoppers,
        first_day=FIRST_DAY,
        acquisition_days=200,
        end_day=END_DAY,
        split_share=0.05,
        cancelled_share=0.05,
    )


def store_orders(db, shop_id: int, orders, *, hour: int = 12, first_order_id: int = 1) -> None:
    """Store the simulated orders as rows: at `hour` UTC of their day, a tenth of them partly refunded."""
    with db.session() as session:
        known = set(session.scalars(select(Shopper.customer_id).where(Shopper.shop_id == shop_id)))
        new = sorted(set(orders.shopper.tolist()) - known)
        if new:
            session.execute(
                insert(Shopper),
                [{"shop_id": shop_id, "customer_id": c, "stage": "prospect", "tag_events": {}} for c in new],
            )
        rows = []
        for i, (shopper, day, net, kept) in enumerate(
            zip(
                orders.shopper.tolist(),
                orders.day.tolist(),
                orders.net.tolist(),
                orders.kept.tolist(),
                strict=True,
            )
        ):
            placed = datetime(1970, 1, 1, hour, tzinfo=UTC) + timedelta(days=day)
            refunded = Decimal("2.00") if i % 10 == 0 else Decimal(0)
            rows.append(
                {
                    "shop_id": shop_id,
                    "order_id": first_order_id + i,
                    "customer_id": shopper,
                    "placed_at": placed,
                    "cancelled_at": None if kept else placed,
                    "total_price": Decimal(f"{net:.2f}") + refunded,
                    "refunded": refunded,
                    "line_items": [],
                    "discount_codes": [],
                }
            )
        session.execute(insert(Order), rows)


def noon_after(day: int) -> datetime:
    """Noon UTC of the day after `day`: the cutoff is then `day`."""
    return datetime(1970, 1, 1, 12, tzinfo=UTC) + timedelta(days=day + 1)


def test_the_fit_is_the_cores_on_the_stored_orders_and_every_shopper_gets_a_forecast(db, shop):
    # given: a simulated shop's orders stored as rows (cancelled ones, refunds, same-day splits)
    orders = simulated(3000)
    store_orders(db, shop.id, orders)
    # when
    fit = predictions.fit_shop(db, shop.id, noon_after(END_DAY))
    # then: the same fit as the core's on the same orders (nets rounded to cents, as stored)
    net = np.round(orders.net, 2)
    summaries = summarise_orders(orders.shopper, orders.day, net, orders.kept, END_DAY)
    model = fit_shop_model(summaries)
    assert fit.reason is None and fit.cutoff_day == EPOCH + timedelta(days=END_DAY)
    assert fit.cutoff_at == datetime.combine(fit.cutoff_day + timedelta(days=1), datetime.min.time(), UTC)
    assert (fit.r, fit.alpha, fit.a, fit.b) == pytest.approx(
        (model.purchases.r, model.purchases.alpha, model.purchases.a, model.purchases.b), rel=1e-6
    )
    assert (fit.p, fit.q, fit.gamma) == pytest.approx(
        (model.spend.p, model.spend.q, model.spend.gamma), rel=1e-6
    )
    assert (fit.shoppers, fit.repeat_buyers) == (len(summaries), int(np.count_nonzero(summaries.x)))
    assert fit.second_order_p80_days < fit.second_order_p95_days
    # and: one forecast per shopper, the core's numbers, keyed by the shopper's row
    expected = predict_shoppers(model, summaries)
    with db.session() as session:
        ids = {c: i for c, i in session.execute(select(Shopper.customer_id, Shopper.id))}
        stored = predictions.predictions_by_shopper(session, shop.id)
    assert len(stored) == len(summaries)
    for k in (0, 7, len(summaries) - 1):
        row = stored[ids[int(summaries.shopper[k])]]
        assert row.fit_id == fit.id and row.repeat_occasions == int(summaries.x[k])
        assert row.p_alive == pytest.approx(expected.p_alive[k], rel=1e-6)
        assert row.expected_orders_90d == pytest.approx(expected.expected_orders_90d[k], rel=1e-6)
        assert row.predicted_clv_365d == pytest.approx(expected.predicted_clv_365d[k], rel=1e-6)
        if summaries.x[k] == 0:
            assert row.expected_gap_days is None and row.predicted_next_order_at is None
        else:
            assert row.expected_gap_days == pytest.approx(expected.expected_gap_days[k], rel=1e-6)
            next_day = (
                row.predicted_next_order_at - datetime(1970, 1, 1, tzinfo=UTC)
            ).total_seconds() / 86400
            assert next_day == pytest.approx(expected.predicted_next_order_day[k], abs=1e-4)


def test_a_fit_sees_the_same_orders_whenever_it_runs_on_a_day(db, shop):
    # given: a shop's history, and more orders placed on the day of the fit itself
    store_orders(db, shop.id, simulated(1500))
    today = simulated(300, seed=9)
    store_orders(db, shop.id, type(today)(today.shopper, today.day * 0 + END_DAY + 1, today.net, today.kept),
                 first_order_id=10**6)  # fmt: skip
    start_of_today = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=END_DAY + 1)
    # when: fitted early and late in that day
    early = predictions.fit_shop(db, shop.id, start_of_today + timedelta(minutes=5))
    late = predictions.fit_shop(db, shop.id, start_of_today + timedelta(hours=23, minutes=55))
    # then: one cutoff, the same model; today's orders are for tomorrow's fit
    assert early.cutoff_day == late.cutoff_day == EPOCH + timedelta(days=END_DAY)
    assert (early.r, early.alpha, early.a, early.b, early.gamma) == (
        late.r,
        late.alpha,
        late.a,
        late.b,
        late.gamma,
    )
    tomorrow = predictions.fit_shop(db, shop.id, start_of_today + timedelta(days=1, hours=1))
    assert tomorrow.r != late.r
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(PurchaseFit)) == 3
        assert predictions.current_fit(session, shop.id).id == tomorrow.id
        fits = set(session.scalars(select(ShopperPrediction.fit_id)))
    assert fits == {tomorrow.id}  # the earlier fits' forecasts were replaced


def test_a_thin_shop_is_not_fitted_and_says_why(db, shop):
    # given: a fitted shop whose orders are then mostly cancelled (too few repeat buyers remain)
    store_orders(db, shop.id, simulated(1500))
    predictions.fit_shop(db, shop.id, noon_after(END_DAY))
    with db.session() as session:
        session.execute(
            Order.__table__.update().where(Order.order_id % 20 != 0).values(cancelled_at=Order.placed_at)
        )
    # when
    fit = predictions.fit_shop(db, shop.id, noon_after(END_DAY))
    # then: the reason is stored, without parameters, and no forecast remains
    assert fit.reason is not None and "repeat buyers, the model needs at least 100" in fit.reason
    assert fit.r is None and fit.p is None
    with db.session() as session:
        assert predictions.predictions_by_shopper(session, shop.id) == {}


def test_a_shop_with_no_orders_is_not_fitted(db, shop):
    fit = predictions.fit_shop(db, shop.id, noon_after(END_DAY))
    assert fit.reason == "0 days of order history, the model needs at least 90"
    assert fit.shoppers == 0


def test_order_days_and_the_cutoff_are_in_the_shops_time_zone(db, shop):
    # given: a shop in New York, and orders placed at 02:00 UTC (the evening before, there)
    with db.session() as session:
        session.get(Shop, shop.id).timezone = "America/New_York"
    seconds = np.array([int(datetime(2026, 3, 10, 2, tzinfo=UTC).timestamp()),
                        int(datetime(2026, 7, 10, 3, 59, tzinfo=UTC).timestamp()),
                        int(datetime(2026, 7, 10, 4, 0, tzinfo=UTC).timestamp())])  # fmt: skip
    # when
    days = predictions.local_days(seconds, ZoneInfo("America/New_York"))
    # then: EST (UTC-5) in March, EDT (UTC-4) in July
    assert [str(EPOCH + timedelta(days=int(d))) for d in days] == ["2026-03-09", "2026-07-09", "2026-07-10"]
    # and the cutoff: at 03:00 UTC on 1 November it is still 31 October in New York
    cutoff_day, cutoff_at = predictions.cutoff_of(
        datetime(2026, 11, 1, 3, tzinfo=UTC), ZoneInfo("America/New_York")
    )
    assert cutoff_day == date(2026, 10, 30)
    assert cutoff_at == datetime(2026, 10, 31, 4, tzinfo=UTC)
    with db.session() as session:
        orders = predictions.read_orders(session, session.get(Shop, shop.id))
    assert len(orders.day) == 0
