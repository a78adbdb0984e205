"""Faults during ingest: Redis emptied while webhooks arrive (queued drains, flags and run jobs all
lost), with duplicate deliveries, still ends with every order counted once and no email sent twice."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import func, select

from plugin.demo import synthetic as s
from plugin.pipeline.tick import run_tick
from plugin.store.models import ActionRun, Delivery, DeliveryStatus, Order, Shopper
from tests.conftest import NOW
from tests.webhook_client import post_webhook

DAY = timedelta(days=1)
SHOPPERS = 12


def _history() -> list[tuple[str, dict, str]]:
    """(topic, payload, webhook id): each shopper signs up, consents, and pays two orders, today."""
    deliveries = []
    for n in range(SHOPPERS):
        customer_id, email = 100 + n, f"shopper{n}@example.com"
        signed_up = NOW - timedelta(hours=6) + n * timedelta(minutes=5)
        deliveries.append(("customers/create", s.customer_payload(customer_id, email, signed_up), f"c-{n}"))
        deliveries.append(
            (
                "customers_email_marketing_consent/update",
                s.consent_payload(customer_id, email, "subscribed", signed_up + timedelta(minutes=5)),
                f"m-{n}",
            )
        )
        for k in range(2):
            placed = signed_up + (k + 1) * timedelta(hours=1)
            order = s.order_payload(5000 + 10 * n + k, customer_id, placed, Decimal("25.00"), email=email)
            deliveries.append(("orders/paid", order, f"o-{n}-{k}"))
    return deliveries


def test_redis_emptied_mid_ingest_loses_nothing_and_repeats_nothing(
    client, db, shop, worker, redis_connection, smtp, monkeypatch
):
    history = _history()
    half = len(history) // 2
    for topic, payload, webhook_id in history[:half]:
        assert post_webhook(client, topic, payload, webhook_id=webhook_id).status_code == 200
    worker.work()  # some of it processed, runs planned and queued
    for topic, payload, webhook_id in history[half - 6 : half + 6]:  # duplicates straddling the fault
        assert post_webhook(client, topic, payload, webhook_id=webhook_id).status_code == 200
    redis_connection.flushdb()  # Redis loses every queued drain, flag and run job
    for topic, payload, webhook_id in history[half + 6 :]:
        assert post_webhook(client, topic, payload, webhook_id=webhook_id).status_code == 200
    redis_connection.flushdb()  # …and again, after the acks
    # The tick finds what waits and queues it again; the workers drain it; then delayed plays come due.
    for later in (timedelta(minutes=10), timedelta(minutes=20), DAY, 2 * DAY, 3 * DAY):
        monkeypatch.setenv("LIFECYCLE_NOW", (NOW + later).isoformat())  # one clock for tick and workers
        run_tick(db, redis_connection, NOW + later, 300)
        worker.work()

    with db.session() as session:
        statuses = Counter(session.scalars(select(Delivery.status)))
        assert statuses == {DeliveryStatus.PROCESSED: len(history)}
        assert session.scalar(select(func.count()).select_from(Order)) == 2 * SHOPPERS
        assert sorted(session.scalars(select(Shopper.orders_count))) == [2] * SHOPPERS
        sent = session.scalar(
            select(func.count())
            .select_from(ActionRun)
            .where(ActionRun.action == "send_email", ActionRun.status == "succeeded")
        )
        keys = list(session.scalars(select(ActionRun.idempotency_key)))
    assert len(keys) == len(set(keys))
    assert sent > 0
    assert len(smtp.messages) == sent  # one email per sent run: none sent twice
    per_shopper = Counter((m["To"], m["Subject"]) for m in smtp.messages)
    welcomes = [key for key in per_shopper if "welcome" in key[1].lower()]
    assert all(per_shopper[key] == 1 for key in welcomes)
