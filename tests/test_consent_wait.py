"""Marketing runs planned without consent wait for it (issue 13): consent arriving by the event's time +
LIFECYCLE_CONSENT_WAIT_HOURS lets them go, whichever webhook came first; otherwise the tick ends them
skipped with the reason. `lifecycle actions` shows the wait and why."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

from click.testing import CliRunner
from sqlalchemy import select

from plugin.cli import main
from plugin.demo import synthetic as s
from plugin.pipeline.tick import run_tick
from plugin.store.models import ActionRun
from tests.conftest import NOW, SHOP
from tests.webhook_client import post_webhook

HOUR = timedelta(hours=1)
ANN = "ann@example.com"


def thank_you(db) -> ActionRun:
    with db.session() as session:
        return session.scalar(select(ActionRun).where(ActionRun.play == "thank_you"))


def paid_order(client, placed=NOW - HOUR):
    post_webhook(
        client,
        "orders/paid",
        s.order_payload(31, 7, placed, Decimal("40.00"), email=ANN),
        triggered_at=s.iso(placed),
    )


def consent(client, at):
    post_webhook(
        client,
        "customers_email_marketing_consent/update",
        s.consent_payload(7, ANN, "subscribed", at),
        triggered_at=s.iso(at),
    )


def test_an_order_before_the_consent_waits_then_goes_when_consent_comes(client, db, shop, worker):
    paid_order(client)
    worker.work()
    run = thank_you(db)
    assert (run.status, run.wait_until) == ("waiting", NOW - HOUR + 48 * HOUR)
    assert run.deferred_reason == f"waiting for email marketing consent until {run.wait_until.isoformat()}"
    consent(client, NOW - HOUR / 2)
    worker.work()
    assert (thank_you(db).status, thank_you(db).deferred_reason) == ("succeeded", None)  # due: sent


def test_consent_processed_first_plans_the_run_scheduled(client, db, shop, worker):
    consent(client, NOW - 2 * HOUR)
    worker.work()
    paid_order(client)
    worker.work()
    assert thank_you(db).status == "scheduled"


def test_without_consent_the_tick_ends_the_wait_skipped_with_the_reason(
    client, db, shop, worker, redis_connection
):
    paid_order(client)
    worker.work()
    assert run_tick(db, redis_connection, NOW + 46 * HOUR, 300).expired_waits == 0
    assert thank_you(db).status == "waiting"
    report = run_tick(db, redis_connection, NOW + 48 * HOUR, 300)
    run = thank_you(db)
    assert (report.expired_waits, run.status) == (1, "skipped")
    assert run.skip_reason == f"no email marketing consent by {(NOW + 47 * HOUR).isoformat()}"


def test_consent_after_the_wait_does_not_release_the_run(client, db, shop, worker):
    paid_order(client, placed=NOW - 47 * HOUR)
    worker.work()
    consent(client, NOW + 2 * HOUR)  # a store clock ahead: given after the deadline (NOW + 1 h)
    worker.work()
    run = thank_you(db)
    assert run.status == "skipped"
    assert run.skip_reason.startswith("consent came after the wait")


def test_lifecycle_actions_shows_the_wait_and_why(client, db, shop, worker, monkeypatch, database_url):
    paid_order(client)
    worker.work()
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("SHOPIFY_API_KEY", "k")
    monkeypatch.setenv("SHOPIFY_API_SECRET", "s")
    monkeypatch.setenv("LIFECYCLE_SECRET_KEY", "k")
    result = CliRunner().invoke(main, ["actions", "--shop", SHOP, "--status", "waiting", "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert (row["play"], row["status"]) == ("thank_you", "waiting")
    assert row["deferred_reason"].startswith("waiting for email marketing consent until ")
