"""Reconciliation: what changed in the store since the last sync is pulled through GraphQL and lands
through the webhook path, so a webhook Shopify never delivered still counts; pulling again adds nothing."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from plugin.demo.fake_bulk import history_lines
from plugin.pipeline.tick import tick_app
from plugin.store.models import Delivery, Order, Shop, Shopper
from tests.conftest import NOW


def test_missed_orders_land_through_reconciliation(app, db, shop, worker, fake_store):
    history = {"customers": 40, "orders": 600, "seed": 3, "now": NOW.isoformat()}
    fake_store.store.history = history
    since = NOW - timedelta(days=3)
    with db.session() as session:
        session.execute(update(Shop).values(last_reconciled_at=since))
    window = (since - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    missed = {
        int(line["id"].rsplit("/", 1)[1])
        for line in history_lines(root="orders", **history)
        if "__parentId" not in line and line["updatedAt"] > window
    }
    assert missed  # the generated store has recent orders we never got webhooks for

    report = tick_app(app)
    assert report.maintenance["reconciliations"] == 1
    worker.work()  # reconcile (records deliveries), then the drains process them

    with db.session() as session:
        stored = set(session.scalars(select(Order.order_id)))
        statuses = dict(
            session.execute(
                select(Delivery.status, func.count(Delivery.id))
                .where(Delivery.webhook_id.like("reconcile:%"))
                .group_by(Delivery.status)
            ).all()
        )
        buyers = session.scalar(select(func.count(Shopper.id)).where(Shopper.orders_count > 0))
        reconciled_at = session.scalar(select(Shop.last_reconciled_at))
    assert stored == missed
    assert set(statuses) == {"processed"}
    assert buyers > 0
    assert reconciled_at == NOW

    # a second pass right after finds nothing new and records nothing twice
    with db.session() as session:
        session.execute(update(Shop).values(last_reconciled_at=since))
    tick_app(app)
    worker.work()
    with db.session() as session:
        again = session.scalar(select(func.count(Delivery.id)).where(Delivery.webhook_id.like("reconcile:%")))
        assert session.scalar(select(func.count(Order.id))) == len(missed)
    assert again == sum(statuses.values())
