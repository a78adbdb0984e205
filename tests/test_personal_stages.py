"""Personal at-risk: each shopper's own rhythm from the purchase model replaces the fixed 90/180 days where
a forecast applies; the tick's SQL and the Python rules agree on stage and reason, word for word."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from plugin.core.facts import ShopperFacts
from plugin.core.stages import PersonalPrediction, Stage, Thresholds, assess
from plugin.pipeline.tick import run_tick
from plugin.store import predictions
from plugin.store.models import Order, PurchaseFit, Shop, Shopper, ShopperPrediction
from plugin.store.shoppers import facts_of
from tests.conftest import NOW
from tests.test_predictions import END_DAY, simulated, store_orders

DAY = timedelta(days=1)
PERSONAL = Thresholds(personal=True)


def forecast(p_alive: float, gap: float | None, cutoff_at: datetime = NOW) -> PersonalPrediction:
    return PersonalPrediction(
        p_alive, gap, cutoff_at, second_order_p80_days=40.0, second_order_p95_days=120.5
    )


def bought(orders: int, days_ago: int) -> ShopperFacts:
    return ShopperFacts(orders_count=orders, total_spent=Decimal(90), last_order_at=NOW - days_ago * DAY)


@pytest.mark.parametrize(
    ("facts", "prediction", "stage", "reason"),
    [
        # a weekly buyer silent for seven weeks: at risk long before the fixed 90 days
        (bought(6, 49), forecast(0.38, 21.3), Stage.AT_RISK,
         "orders about every 3 weeks; 7 weeks since the last; 38 % likely still active"),
        (bought(6, 49), forecast(0.61, 21.3), Stage.AT_RISK,
         "orders about every 3 weeks; 7 weeks since the last; 61 % likely still active"),
        (bought(6, 20), forecast(0.15, 21.3), Stage.LAPSED,
         "orders about every 3 weeks; 3 weeks since the last; 15 % likely still active"),
        # a yearly gift buyer at 100 days is fine: the count rules decide
        (bought(3, 100), forecast(0.9, 180.0), Stage.REPEAT, None),
        # one-time buyers: the shop's own second orders decide
        (bought(1, 41), forecast(1.0, None), Stage.AT_RISK,
         "first order 6 weeks ago; 80 % of this shop's repeat buyers order again within 6 weeks"),
        (bought(1, 121), forecast(1.0, None), Stage.LAPSED,
         "first order 4 months ago; 95 % of this shop's repeat buyers order again within 4 months"),
        (bought(1, 40), forecast(1.0, None), Stage.FIRST_TIME, None),
        # an order after the fit's cutoff: the forecast is stale, the fixed thresholds decide
        (bought(2, 0), forecast(0.1, 21.3, cutoff_at=NOW - DAY), Stage.REPEAT, None),
    ],
)  # fmt: skip
def test_personal_rules(facts, prediction, stage, reason):
    assessment = assess(facts, NOW, PERSONAL, prediction)
    assert assessment.stage is stage
    if reason:
        assert assessment.reason == reason


def test_personal_rules_are_off_by_default_and_without_a_forecast():
    assert assess(bought(6, 49), NOW, Thresholds(), forecast(0.1, 7.0)).stage is Stage.LOYAL
    assert assess(bought(6, 100), NOW, PERSONAL, None).stage is Stage.AT_RISK  # fixed: 90 days


def test_tick_sql_agrees_with_the_python_rules_in_personal_mode(db, shop, redis_connection):
    # given: personal stages on, a fitted model (cutoff the end of yesterday), and many shoppers with
    # random facts, most of them with a forecast (repeat and one-time), some who ordered after the cutoff
    rng = random.Random(11)
    cutoff_at = datetime(2026, 11, 1, tzinfo=UTC)  # the end of 31 October, the day before NOW
    with db.session() as session:
        session.get(Shop, shop.id).personal_stages = True
        fit = PurchaseFit(
            shop_id=shop.id, cutoff_day=date(2026, 10, 31), cutoff_at=cutoff_at, fitted_at=NOW, unit="days",
            r=0.8, alpha=60.0, a=0.6, b=6.0, p=6.0, q=4.0, gamma=15.0, shoppers=400, repeat_buyers=200,
            second_order_p80_days=41.7, second_order_p95_days=130.5,
        )  # fmt: skip
        session.add(fit)
        session.flush()
        for i in range(500):
            orders = rng.choice([0, 1, 1, 2, 3, 4, 6])
            last = (
                NOW - rng.randint(0, 400) * DAY - rng.randint(0, 23) * timedelta(hours=1) if orders else None
            )
            shopper = Shopper(
                shop_id=shop.id,
                customer_id=i,
                orders_count=orders,
                total_spent=Decimal(rng.randint(0, 90000)) / 100,
                currency=rng.choice(["EUR", None]),
                last_order_at=last,
                last_checkout_at=NOW - rng.randint(0, 60) * DAY if rng.random() < 0.5 else None,
                tag_events={},
                stage="prospect",
            )
            session.add(shopper)
            session.flush()
            if orders and rng.random() < 0.8:
                session.add(
                    ShopperPrediction(
                        shopper_id=shopper.id, shop_id=shop.id, fit_id=fit.id,
                        repeat_occasions=0 if orders == 1 else orders - 1,
                        p_alive=1.0 if orders == 1 else rng.random(),
                        expected_orders_90d=0.5, predicted_clv_365d=50.0,
                        expected_gap_days=None if orders == 1 else rng.uniform(3, 200),
                    )
                )  # fmt: skip
    # when the tick runs at several later instants, then SQL and Python agree on every shopper
    personal_moves = 0
    for later in (0, 15, 45, 95, 200):
        now = NOW + later * DAY
        run_tick(db, redis_connection, now, 300)
        with db.session() as session:
            shop_row = session.get(Shop, shop.id)
            thresholds = Thresholds.of(shop_row)
            forecasts = predictions.personal_predictions(session, shop_row)
            for shopper in session.scalars(select(Shopper)):
                expected = assess(facts_of(shopper), now, thresholds, forecasts.get(shopper.id))
                assert shopper.stage == expected.stage, (shopper.customer_id, now)
                if shopper.stage_changed_at == now:
                    assert shopper.stage_reason == expected.reason, (shopper.customer_id, now)
                    personal_moves += "likely still active" in expected.reason
                    personal_moves += "repeat buyers order again" in expected.reason
    assert thresholds.personal and len(forecasts) > 250
    assert personal_moves > 150


def test_a_fitted_shop_with_personal_stages_moves_by_rhythm_on_the_tick(db, shop, redis_connection):
    # given: a simulated shop fitted by the store, its shoppers' facts recounted from the orders
    store_orders(db, shop.id, simulated(1500))
    now = datetime(1970, 1, 1, 9, tzinfo=UTC) + (END_DAY + 1) * DAY
    predictions.fit_shop(db, shop.id, now)
    with db.session() as session:
        for shopper in session.scalars(select(Shopper)):
            rows = [
                o
                for o in session.scalars(
                    select(Order).where(
                        Order.customer_id == shopper.customer_id,
                        Order.cancelled_at.is_(None),
                    )
                )
            ]
            shopper.orders_count = len(rows)
            shopper.last_order_at = max((o.placed_at for o in rows), default=None)
    # when: the tick runs with the setting off, then on
    off = run_tick(db, redis_connection, now, 300).moves
    with db.session() as session:
        session.get(Shop, shop.id).personal_stages = True
    on = run_tick(db, redis_connection, now, 300).moves
    # then: turning it on moves shoppers by their own rhythm, each with its reason in words
    assert off and on
    with db.session() as session:
        reasons = list(
            session.scalars(select(Shopper.stage_reason).where(Shopper.stage.in_(["at_risk", "lapsed"])))
        )
    assert any("likely still active" in r for r in reasons)
    assert any("repeat buyers order again within" in r for r in reasons)
