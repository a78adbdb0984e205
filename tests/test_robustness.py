"""Robustness of the job edge: the scheduler outlives a failed tick, a refused backfill ends `failed` (and a
command retries it), reconciliation stops on a cursor that does not advance and caps its pages."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
import redis as redis_lib
from click.testing import CliRunner
from sqlalchemy import select, update

from plugin.cli import main
from plugin.demo import synthetic as s
from plugin.pipeline import queue
from plugin.pipeline.run_action import Breaker, dispatch_due_runs
from plugin.pipeline.scheduler import run_forever
from plugin.pipeline.tick import tick_app
from plugin.shopify import reconcile
from plugin.store.models import ActionAttempt, ActionRun, Shop, Shopper
from plugin.store.run_rows import store_run
from plugin.web.unsubscribe import consent_run
from tests.conftest import NOW, SHOP, free_port
from tests.test_backfill import deliver_shopify_webhooks
from tests.test_install import open_app_home
from tests.webhook_client import post_webhook


def test_the_scheduler_logs_a_failed_tick_and_runs_the_next(app, shop, redis_connection, caplog):
    working = app.extensions["lifecycle.redis"]
    # the first tick meets a Redis that refuses connections (queueing the shop's reconciliation raises)
    app.extensions["lifecycle.redis"] = redis_lib.Redis(port=free_port(), socket_connect_timeout=1)
    sleeps = []

    def between_ticks(seconds: float) -> None:
        sleeps.append(seconds)
        app.extensions["lifecycle.redis"] = working  # Redis is back for the next tick

    with caplog.at_level(logging.INFO, logger="plugin.pipeline.scheduler"):
        succeeded = run_forever(60.0, app=app, ticks=2, sleep=between_ticks)

    assert succeeded == 1 and len(sleeps) == 1
    assert "tick failed" in caplog.text and "ConnectionError" in caplog.text
    assert "tick done" in caplog.text
    waiting = queue.get_queue(redis_connection, queue.MAINTENANCE).get_job_ids()
    assert f"reconcile-{shop.id}" in waiting  # the second tick did its work


# --- backfill --------------------------------------------------------------------------------------------
def backfill_of(db) -> dict:
    with db.session() as session:
        return dict(session.scalar(select(Shop.backfill).where(Shop.domain == SHOP)) or {})


@pytest.mark.parametrize(
    ("misbehaviour", "reason"),
    [
        ("refuse", "Shopify refused: Bulk queries are not available."),
        ("fail", "bulk operation FAILED (INTERNAL_SERVER_ERROR)"),
        ("cancel", "bulk operation CANCELED"),
    ],
)
def test_a_refused_backfill_ends_failed_and_the_command_retries_it(
    client, app, db, worker, fake_store, redis_connection, request, misbehaviour, reason
):
    cli = request.getfixturevalue("run")
    store = fake_store.store
    store.history = {"customers": 30, "orders": 60, "seed": 2, "now": NOW.isoformat()}
    store.bulk_misbehaviour = misbehaviour
    assert open_app_home(client).status_code == 200  # install, which queues the backfill's first step
    worker.work()
    deliver_shopify_webhooks(client, store, set())
    worker.work()

    progress = backfill_of(db)
    assert (progress["status"], progress["error"]) == ("failed", reason)
    # the tick leaves a failed backfill alone (it used to re-queue it every tick, forever)
    assert tick_app(app).maintenance["backfills_polled"] == 0
    assert not [
        j for j in queue.get_queue(redis_connection, queue.MAINTENANCE).get_job_ids() if "backfill" in j
    ]

    store.bulk_misbehaviour = None  # the cause is fixed; the operator retries
    assert "queued again" in cli("shops", "backfill", SHOP)
    worker.work()
    deliver_shopify_webhooks(client, store, set())
    worker.work()
    deliver_shopify_webhooks(client, store, set())
    worker.work()
    progress = backfill_of(db)
    assert progress["status"] == "done" and progress["customers"] == 30 and progress["orders"] == 60
    # a done backfill is not started again by mistake
    result = CliRunner().invoke(main, ["shops", "backfill", SHOP])
    assert result.exit_code != 0 and "under way or done" in result.output


# --- reconciliation --------------------------------------------------------------------------------------
@pytest.mark.parametrize("misbehaviour", ["stuck", "endless"])
def test_reconciliation_stops_on_a_cursor_that_does_not_advance_and_caps_its_pages(
    app, db, shop, worker, fake_store, misbehaviour
):
    store = fake_store.store
    store.history = {"customers": 30, "orders": 40, "seed": 3, "now": NOW.isoformat()}
    store.page_misbehaviour = misbehaviour
    with db.session() as session:
        session.execute(update(Shop).values(last_reconciled_at=NOW - timedelta(days=900)))
    tick_app(app)
    worker.work()  # before: a "stuck" store was paged forever and this never returned

    pages = [c for c in store.calls if c["field"] == "customers"]
    if misbehaviour == "stuck":
        assert len(pages) == 2  # the second page repeats the first's cursor: stop
    else:
        assert len(pages) == reconcile.MAX_PAGES
    with db.session() as session:
        synced = session.scalar(select(Shop.last_reconciled_at))
    assert NOW - timedelta(days=900) < synced < NOW  # synced as far as it read, not to now


# --- the per-shop breaker --------------------------------------------------------------------------------
def test_an_unreachable_store_opens_the_shops_breaker(app, client, db, shop, worker, redis_connection):
    # nothing listens there: each call is refused, and the client retries 4 times over ~7 s before giving up
    app.config["SHOPIFY_ADMIN_ORIGIN"] = f"http://127.0.0.1:{free_port()}"
    runs = 12
    for n in range(runs):
        post_webhook(client, "customers/create", s.customer_payload(8100 + n, f"b{n}@example.com", NOW))
    worker.work()
    with db.session() as session:  # each shopper unsubscribed: a run tells Shopify, one call each
        for shopper in session.scalars(select(Shopper)):
            store_run(db, session, shop.id, consent_run(shop.id, shopper.id, NOW), NOW)
    with app.app_context():
        dispatch_due_runs(db, NOW)
    started = time.monotonic()
    worker.work()
    elapsed = time.monotonic() - started

    with db.session() as session:
        outcomes = [a.outcome for a in session.scalars(select(ActionAttempt).order_by(ActionAttempt.id))]
        scheduled = session.scalars(select(ActionRun).where(ActionRun.play == "consent_sync")).all()
    assert len(scheduled) == runs
    assert outcomes.count("retry") == 1  # the first run tried (and the client retried in-process)
    assert outcomes.count("breaker") == runs - 1  # the rest waited without a network call
    assert all(r.status == "scheduled" for r in scheduled)
    waiting = [r for r in scheduled if r.attempts == 0]
    assert len(waiting) == runs - 1
    assert all(r.due_at == NOW + timedelta(seconds=60) for r in waiting)
    assert all("breaker open until" in r.deferred_reason for r in waiting)
    assert elapsed < 7 * 3  # one run's in-process retries, not one per run (12 x 7 s before)

    # the window is read from the one clock: past it, runs may try the store again
    later = NOW + timedelta(seconds=61)
    breaker = Breaker(redis_connection, shop.id)
    assert breaker.open_until(later) is None and breaker.open_until(NOW) is not None
