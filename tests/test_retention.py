"""Raw webhook bodies are kept LIFECYCLE_WEBHOOK_RETENTION_DAYS (30 by default) once a delivery is done with;
the tick then replaces them with a marker in one statement. Waiting and failed deliveries keep theirs."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from plugin.demo import synthetic as s
from plugin.pipeline.tick import tick_app
from plugin.store.deliveries import PRUNED_BODY
from plugin.store.models import Delivery
from tests.conftest import NOW
from tests.webhook_client import post_webhook

EMAIL = "retained.rita@example.org"


def bodies(db) -> dict[str, tuple[str, bytes]]:
    with db.session() as session:
        return {d.webhook_id: (d.status, bytes(d.body)) for d in session.scalars(select(Delivery))}


def test_the_tick_prunes_bodies_past_the_retention_period(app, client, db, shop, worker, monkeypatch):
    customer = s.customer_payload(6101, EMAIL, NOW - timedelta(days=1))
    post_webhook(client, "customers/create", customer, webhook_id="old-processed")
    post_webhook(client, "customers/create", {"id": "not-a-number"}, webhook_id="old-quarantined")
    worker.work()
    assert {status for status, _ in bodies(db).values()} == {"processed", "quarantined"}

    later = NOW + timedelta(days=30, minutes=1)
    monkeypatch.setenv("LIFECYCLE_NOW", later.isoformat())
    post_webhook(client, "customers/update", customer, webhook_id="waiting")  # not drained yet
    report = tick_app(app)

    after = bodies(db)
    assert report.pruned_bodies == 2 and report.as_dict()["pruned_bodies"] == 2
    assert after["old-processed"] == ("processed", PRUNED_BODY)
    assert after["old-quarantined"] == ("quarantined", PRUNED_BODY)
    assert after["waiting"][0] == "received" and EMAIL.encode() in after["waiting"][1]
    assert tick_app(app).pruned_bodies == 0  # already pruned: nothing to do


def test_bodies_younger_than_the_setting_stay(app, client, db, shop, worker, monkeypatch):
    app.config["WEBHOOK_RETENTION_DAYS"] = 90
    post_webhook(client, "customers/create", s.customer_payload(6102, EMAIL, NOW), webhook_id="young")
    worker.work()
    monkeypatch.setenv("LIFECYCLE_NOW", (NOW + timedelta(days=31)).isoformat())
    assert tick_app(app).pruned_bodies == 0
    assert EMAIL.encode() in bodies(db)["young"][1]
