"""The tick: time-based moves as set-based SQL, with a moved clock; stuck deliveries re-queued."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from plugin.core.stages import Thresholds, assess
from plugin.demo import synthetic as s
from plugin.pipeline import queue
from plugin.pipeline.tick import run_tick
from plugin.store.models import Delivery, Shop, Shopper, StageTransition
from plugin.store.shoppers import facts_of
from tests.conftest import NOW
from tests.webhook_client import post_webhook

DAY = timedelta(days=1)


def stages(db) -> dict[int, str]:
    with db.session() as session:
        return {sh.customer_id: sh.stage for sh in session.scalars(select(Shopper))}


def test_moving_the_clock_moves_buyers_to_at_risk_then_lapsed(client, db, shop, worker, redis_connection):
    post_webhook(
        client, "orders/paid", s.order_payload(1, 7, NOW - 10 * DAY, Decimal(30), email="a@example.com")
    )
    worker.work()
    assert stages(db) == {7: "first_time"}
    run_tick(db, redis_connection, NOW + 80 * DAY, 300)
    assert stages(db) == {7: "at_risk"}
    run_tick(db, redis_connection, NOW + 170 * DAY, 300)
    assert stages(db) == {7: "lapsed"}
    with db.session() as session:
        moves = [
            (t.from_stage, t.to_stage, t.cause)
            for t in session.scalars(select(StageTransition).order_by("id"))
        ]
    assert moves[1:] == [("first_time", "at_risk", "tick"), ("at_risk", "lapsed", "tick")]


def test_engaged_falls_back_to_prospect_after_30_quiet_days(client, db, shop, worker, redis_connection):
    post_webhook(
        client, "checkouts/create", s.checkout_payload("t", 7, "a@example.com", NOW - DAY, Decimal(5))
    )
    worker.work()
    report = run_tick(db, redis_connection, NOW + 29 * DAY, 300)
    assert stages(db) == {7: "engaged"} and report.moves == {}
    report = run_tick(db, redis_connection, NOW + 30 * DAY, 300)
    assert stages(db) == {7: "prospect"}
    assert report.moves == {"engaged→prospect": 1}


def test_a_second_tick_at_the_same_time_moves_nothing(client, db, shop, worker, redis_connection):
    post_webhook(client, "orders/paid", s.order_payload(1, 7, NOW - 100 * DAY, Decimal(30)))
    worker.work()
    run_tick(db, redis_connection, NOW + 100 * DAY, 300)
    assert run_tick(db, redis_connection, NOW + 100 * DAY, 300).moves == {}


def test_tick_sql_agrees_with_the_python_rules(db, shop, redis_connection):
    # given many shoppers with random facts, staged by Python as of NOW
    rng = random.Random(3)
    with db.session() as session:
        for i in range(400):
            orders = rng.choice([0, 0, 1, 2, 3, 4, 6])
            last = NOW - rng.randint(0, 400) * DAY if orders else None
            activity = NOW - rng.randint(0, 60) * DAY if rng.random() < 0.5 else None
            session.add(
                Shopper(
                    shop_id=shop.id,
                    customer_id=i,
                    orders_count=orders,
                    total_spent=Decimal(rng.randint(0, 90000)) / 100,
                    currency=rng.choice(["EUR", None]),
                    last_order_at=last,
                    last_checkout_at=activity,
                    last_cart_at=NOW - rng.randint(0, 60) * DAY if rng.random() < 0.3 else None,
                    tag_events={},
                    stage="prospect",
                )
            )
    # when the tick runs at several later instants, then SQL and Python agree on every shopper's stage,
    # and every move the tick made carries the reason Python gives, word for word
    moved = 0
    for later in (0, 15, 45, 95, 200):
        now = NOW + later * DAY
        run_tick(db, redis_connection, now, 300)
        with db.session() as session:
            thresholds = Thresholds.of(session.get(Shop, shop.id))
            for shopper in session.scalars(select(Shopper)):
                expected = assess(facts_of(shopper), now, thresholds)
                assert shopper.stage == expected.stage, shopper.customer_id
                if shopper.stage_changed_at == now:
                    moved += 1
                    assert shopper.stage_reason == expected.reason, shopper.customer_id
    assert moved > 300


def test_tick_requeues_deliveries_whose_job_was_lost(client, db, shop, worker, redis_connection):
    post_webhook(client, "orders/paid", s.order_payload(1, 7, NOW - DAY, Decimal(30)), webhook_id="lost")
    redis_connection.flushdb()  # Redis lost the job after the ack
    assert queue.get_queue(redis_connection, queue.WEBHOOKS).count == 0
    report = run_tick(db, redis_connection, NOW + timedelta(minutes=10), 300)
    assert report.requeued == 1
    worker.work()
    with db.session() as session:
        assert session.scalar(select(Delivery.status)) == "processed"
    assert stages(db) == {7: "first_time"}
