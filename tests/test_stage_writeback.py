"""The stage write-back in bulk: once per shopper per 10-minute window, the stage the shopper has then,
25 customers a call, through the fake store's cost bucket (scaled clock); our own tags come back and do
nothing. Time is moved, never slept."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from sqlalchemy import func, select, update

from plugin.demo import synthetic as s
from plugin.pipeline.tick import tick_app
from plugin.store.models import ActionRun, Delivery, Shop, Shopper
from tests.conftest import NOW
from tests.webhook_client import post_webhook

WINDOW = timedelta(minutes=10)
GID = "gid://shopify/Customer/{}"
WRITE_OPERATIONS = {"StageWriteBack", "TagsAdd", "TagsRemove", "MetafieldsSet"}


@pytest.fixture
def shop(shop, db):
    """The installed shop, just reconciled: the ticks below leave the store to the write-back."""
    with db.session() as session:
        session.execute(update(Shop).values(last_reconciled_at=NOW + timedelta(hours=1)))
    return shop


def control(fake_store, **settings) -> None:
    requests.post(fake_store.origin + "/_fake/control", json=settings, timeout=5)


def fake_state(fake_store) -> dict:
    return requests.get(fake_store.origin + "/_fake/state", timeout=5).json()


def writes(fake_store) -> list[dict]:
    """The calls that wrote stages (the tick's reconciliation reads the store too)."""
    return [c for c in fake_store.store.calls if c["operation"] in WRITE_OPERATIONS]


def tick_at(app, monkeypatch, when):
    monkeypatch.setenv("LIFECYCLE_NOW", when.isoformat())
    return tick_app(app)


def stage_syncs(db) -> list[ActionRun]:
    with db.session() as session:
        return list(session.scalars(select(ActionRun).where(ActionRun.play == "stage_sync")))


def first_timers_falling_at_risk(db, shop: Shop, count: int) -> None:
    """`count` shoppers, inserted in one statement, whose one order is 100 days old: the tick moves them
    all to at_risk (as the app would, planning a write-back each)."""
    rows = s.first_timer_rows(shop.id, count, NOW - timedelta(days=100))
    with db.session() as session:
        session.execute(db.insert(Shopper.__table__), rows)


def test_a_burst_is_written_in_bulk_within_the_call_budget(app, db, shop, worker, fake_store, monkeypatch):
    # given a 100-points/s store whose bucket runs 50 times faster than the wall clock
    control(fake_store, maximum=1000, restore_rate=100, time_scale=50)
    count = 600
    first_timers_falling_at_risk(db, shop, count)
    # when the tick moves them all to at_risk, and the write-back window ends
    assert tick_at(app, monkeypatch, NOW).moves == {"first_time→at_risk": count}
    worker.work()
    assert writes(fake_store) == []  # nothing written before the window ends
    tick_at(app, monkeypatch, NOW + WINDOW)
    worker.work()
    # then a tenth of a call per change at most, none lost to throttling, every final stage in Shopify
    state = fake_state(fake_store)
    assert len(writes(fake_store)) <= count // 10
    assert state["invalid_documents"] == 0
    assert {r.status for r in stage_syncs(db)} == {"succeeded"}
    for i in range(count):
        customer = state["customers"][GID.format(1000 + i)]
        assert [t for t in customer["tags"] if t.startswith("lifecycle:")] == ["lifecycle:at_risk"]
        assert customer["metafields"]["lifecycle.stage"]["value"] == "at_risk"
    with db.session() as session:
        assert set(session.scalars(select(Shopper.synced_stage))) == {"at_risk"}


def test_two_changes_within_the_window_are_written_once_with_the_later(
    app, client, db, shop, worker, fake_store, monkeypatch
):
    # given a new customer (prospect) who orders three minutes later (first_time)
    post_webhook(client, "customers/create", s.customer_payload(7, "ann@example.com", NOW, first="Ann"))
    worker.work()
    monkeypatch.setenv("LIFECYCLE_NOW", (NOW + timedelta(minutes=3)).isoformat())
    post_webhook(client, "orders/paid", s.order_payload(31, 7, NOW, Decimal(60), email="ann@example.com"))
    worker.work()
    # when the window ends
    tick_at(app, monkeypatch, NOW + WINDOW)
    worker.work()
    # then one write, of the later stage only
    calls = writes(fake_store)
    assert [c["operation"] for c in calls] == ["StageWriteBack"]
    assert calls[0]["variables"]["stage_0"] == ["lifecycle:first_time"]
    customer = fake_state(fake_store)["customers"][GID.format(7)]
    assert [t for t in customer["tags"] if t.startswith("lifecycle:")] == ["lifecycle:first_time"]
    assert customer["metafields"]["lifecycle.stage"]["value"] == "first_time"
    assert [r.status for r in stage_syncs(db)] == ["succeeded"]


def test_a_throttled_write_back_waits_on_the_ledger_then_lands(
    app, db, shop, worker, fake_store, monkeypatch
):
    # given a store whose bucket is empty and barely refills
    control(fake_store, available=0, restore_rate=0.001)
    first_timers_falling_at_risk(db, shop, 30)
    tick_at(app, monkeypatch, NOW)
    # when the window ends
    tick_at(app, monkeypatch, NOW + WINDOW)
    worker.work()
    # then every run is back on the schedule with the reason, none failed
    runs = stage_syncs(db)
    assert {r.status for r in runs} == {"scheduled"}
    assert all("ShopifyThrottled" in r.deferred_reason for r in runs)
    # and once the bucket is back, the next tick writes them all
    control(fake_store, available=1000, restore_rate=50)
    tick_at(app, monkeypatch, NOW + 2 * WINDOW)
    worker.work()
    assert {r.status for r in stage_syncs(db)} == {"succeeded"}
    assert len(fake_state(fake_store)["customers"]) == 30


def test_a_refused_customer_fails_alone_with_the_reason(app, db, shop, worker, fake_store, monkeypatch):
    # given 30 shoppers of whom Shopify no longer knows one
    control(fake_store, missing_customers=[GID.format(1003)], time_scale=50)
    first_timers_falling_at_risk(db, shop, 30)
    tick_at(app, monkeypatch, NOW)
    # when the window ends and the tick after it runs
    tick_at(app, monkeypatch, NOW + WINDOW)
    worker.work()
    tick_at(app, monkeypatch, NOW + WINDOW + timedelta(minutes=5))
    worker.work()
    # then that one's run failed with Shopify's reason, and the other 29 landed
    with db.session() as session:
        outcome = dict(
            session.execute(
                select(Shopper.customer_id, ActionRun.status)
                .join(ActionRun, ActionRun.shopper_id == Shopper.id)
                .where(ActionRun.play == "stage_sync")
            ).all()
        )
        [reason] = session.scalars(select(ActionRun.skip_reason).where(ActionRun.status == "failed"))
    assert outcome.pop(1003) == "failed" and "Customer does not exist" in reason
    assert set(outcome.values()) == {"succeeded"}
    customers = fake_state(fake_store)["customers"]
    assert GID.format(1003) not in customers
    assert all(c["metafields"]["lifecycle.stage"]["value"] == "at_risk" for c in customers.values())


def test_our_own_tags_coming_back_trigger_nothing(client, db, shop, worker):
    # given a known shopper
    post_webhook(client, "customers/create", s.customer_payload(7, "ann@example.com", NOW, first="Ann"))
    worker.work()
    with db.session() as session:
        runs_before = session.scalar(select(func.count(ActionRun.id)))
    # when our stage tag comes back for them, and for a customer we have never seen
    post_webhook(client, "customer.tags_added", s.tags_payload(7, ["lifecycle:at_risk"], NOW))
    post_webhook(client, "customer.tags_removed", s.tags_payload(7, ["lifecycle:first_time"], NOW))
    post_webhook(client, "customer.tags_added", s.tags_payload(99, ["lifecycle:loyal"], NOW))
    worker.work()
    # then nothing is recorded, created or planned
    with db.session() as session:
        shoppers = list(session.scalars(select(Shopper)))
        notes = list(session.scalars(select(Delivery.reason).where(Delivery.topic.like("customer.tags%"))))
        assert session.scalar(select(func.count(ActionRun.id))) == runs_before
    assert [(p.customer_id, p.tag_events) for p in shoppers] == [(7, {})]
    assert notes == ["our own tags (lifecycle:*): nothing to do"] * 3


def test_a_merchant_tag_beside_ours_is_still_recorded(client, db, shop, worker):
    # when a webhook carries the merchant's tag with ours
    post_webhook(client, "customer.tags_added", s.tags_payload(7, ["lifecycle:at_risk", "wholesale"], NOW))
    worker.work()
    # then the merchant's tag is kept, ours is not
    with db.session() as session:
        [shopper] = session.scalars(select(Shopper))
    assert shopper.tags == ["wholesale"]


def test_an_unreachable_store_opens_the_breaker_and_the_write_back_waits_for_it(
    app, db, shop, worker, fake_store, monkeypatch, redis_connection
):
    from plugin.pipeline.run_action import Breaker
    from plugin.store.models import ActionAttempt
    from tests.conftest import free_port

    first_timers_falling_at_risk(db, shop, 30)
    tick_at(app, monkeypatch, NOW)
    # given a store that does not answer when the window ends
    app.config["SHOPIFY_ADMIN_ORIGIN"] = f"http://127.0.0.1:{free_port()}"
    tick_at(app, monkeypatch, NOW + WINDOW)
    worker.work()
    # then the runs wait on the ledger with the reason, and the shop's breaker is open
    assert {r.status for r in stage_syncs(db)} == {"scheduled"}
    assert all("ShopifyTransientError" in r.deferred_reason for r in stage_syncs(db))
    breaker = Breaker(redis_connection, shop.id)
    assert breaker.open_until(NOW + WINDOW) is not None
    breaker.trip(
        NOW + WINDOW, RuntimeError("still down")
    )  # a second trip: open for longer than the runs wait
    until, _why = breaker.open_until(NOW + WINDOW)
    assert max(r.due_at for r in stage_syncs(db)) < until - timedelta(seconds=1)
    with db.session() as session:
        tries = session.scalar(select(func.count()).select_from(ActionAttempt))
    # when the runs come due again while the breaker is open: nothing is claimed, no attempt is made
    tick_at(app, monkeypatch, until - timedelta(seconds=1))
    worker.work()
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(ActionAttempt)) == tries
    # and once it closes and the store is back, the next tick writes them all
    app.config["SHOPIFY_ADMIN_ORIGIN"] = fake_store.origin
    tick_at(app, monkeypatch, until + 2 * WINDOW)
    worker.work()
    assert {r.status for r in stage_syncs(db)} == {"succeeded"}
