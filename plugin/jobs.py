"""RQ entry points. Thin: each takes ids, re-reads the rows, and is safe to run twice."""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from plugin import clock, handlers, oauth, payloads, policy, queue, runs, storage
from plugin.actions import ACTIONS, ActionContext
from plugin.actions.base import PermanentActionError, RetryableActionError
from plugin.models import ActionAttempt, ActionRun, Delivery, DeliveryStatus, RunStatus, Shop, Shopper
from plugin.profiles import HandlerContext
from plugin.shopify_client import (
    ShopifyAuthError,
    ShopifyClient,
    ShopifyThrottled,
    ShopifyTransientError,
    ShopifyUserErrors,
)

log = logging.getLogger(__name__)

DRAIN_BATCH = 200  # ids per scan of a slot
DRAIN_SECONDS = 60  # a drain then queues its successor, so no job nears RQ's timeout with a backlog
BATCH_SIZE = 50  # deliveries per transaction
BATCH_SECONDS = 0.25  # ...or fewer, so the write lock (SQLite) and row locks are never held long
# A delivery whose processing raised (database hiccup, a bug) waits this long before its next attempt,
# then is marked failed (and stays replayable). Bad payloads never raise: they are quarantined.
RETRY_DELAYS = (timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10))
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1


def database() -> storage.Database:
    return current_app.extensions["lifecycle.db"]


def drain_deliveries(slot: int) -> dict[str, int]:
    """Process every due delivery of one slot, oldest first, a few per transaction.

    Lowers the slot's flag first (see `queue`), so a delivery committed during the drain either shows up
    in a later scan of this drain or queues the next one. After DRAIN_SECONDS it queues its successor and
    returns, so a long backlog never meets RQ's job timeout mid-transaction. Returns how many ended in
    each status.
    """
    connection = current_app.extensions["lifecycle.redis"]
    queue.lower_drain_flag(connection, slot)
    db, outcomes, after_id = database(), Counter(), 0
    started = time.monotonic()
    while True:
        if time.monotonic() - started > DRAIN_SECONDS:  # hand over to a fresh job, well inside RQ's timeout
            queue.enqueue_drain(connection, slot, force=True)
            return dict(outcomes)
        with db.session() as session:
            ids = storage.due_delivery_ids(
                session, slot, queue.DRAIN_SLOTS, clock.now(), after_id=after_id, limit=DRAIN_BATCH
            )
        if not ids:
            return dict(outcomes)
        pending = list(ids)
        while pending:
            done = process_batch(pending)
            outcomes.update(done.values())
            pending = pending[len(done) :]
        after_id = ids[-1]


def process_batch(delivery_ids: list[int]) -> dict[int, str]:
    """Process deliveries from the front of `delivery_ids` in one transaction; return those it settled.

    One commit per batch instead of one per delivery is most of a worker's speed (every commit is an
    fsync). A batch closes after BATCH_SIZE deliveries or BATCH_SECONDS, so it never holds the write lock
    long. If a delivery raises, the batch rolls back and the deliveries before it are redone as a batch;
    the one that raised then comes first in the next call, which processes it alone (the path that
    records the failure on its row).
    """
    db, settled, planned, jobs = database(), {}, [], []
    started = time.monotonic()
    try:
        with db.session() as session:
            for delivery_id in delivery_ids[:BATCH_SIZE]:
                delivery = storage.lock_delivery(session, delivery_id)
                if delivery is None or delivery.status != DeliveryStatus.RECEIVED:
                    settled[delivery_id] = delivery.status if delivery else "missing"
                else:
                    status, ctx = _process(session, delivery)
                    session.flush()
                    storage.expire_for_next_delivery(session, delivery.topic)
                    settled[delivery_id] = status
                    if ctx is not None:
                        planned += ctx.planned_runs
                        jobs += ctx.jobs
                if time.monotonic() - started > BATCH_SECONDS:
                    break
    except Exception:  # noqa: BLE001 - rolled back; redo the ones before the failure, then it alone
        if 0 < len(settled) < len(delivery_ids):  # strictly shorter: this recursion ends
            return process_batch(delivery_ids[: len(settled)])
        return {delivery_ids[0]: process_delivery(delivery_ids[0])}
    _after_commit(db, planned, jobs)
    return settled


def process_delivery(delivery_id: int) -> str:
    """Turn one recorded webhook into profile and stage updates, exactly once.

    Returns the delivery's status afterwards. A body that is not JSON or does not fit its topic is
    quarantined (acked, never retried); an exception rolls the work back and schedules another attempt,
    and the last allowed attempt marks the delivery failed.
    """
    db = database()
    try:
        with db.session() as session:
            delivery = storage.lock_delivery(session, delivery_id)
            if delivery is None or delivery.status != DeliveryStatus.RECEIVED:
                return delivery.status if delivery else "missing"  # already handled by another drain
            status, ctx = _process(session, delivery)
        if ctx is not None:
            _after_commit(db, ctx.planned_runs, ctx.jobs)
        return status
    except Exception as error:  # noqa: BLE001 - any failure is recorded on the ledger row, then retried
        log.exception("delivery %s raised %s", delivery_id, type(error).__name__)
        return _record_failure(db, delivery_id, error)


def _after_commit(db: storage.Database, planned: list[int], jobs: list[tuple]) -> None:
    """Effects never precede the data they are about: runs and jobs are queued once it is committed."""
    if planned:
        dispatch_due_runs(db, clock.now())
    connection = current_app.extensions["lifecycle.redis"]
    for function, args, job_id in jobs:
        queue.enqueue_maintenance(connection, function, *args, job_id=job_id)


def _process(session, delivery: Delivery) -> tuple[str, HandlerContext | None]:
    now = clock.now()
    shop = storage.batch_shop(session, delivery.shop_domain)
    if (shop is None or not shop.active) and delivery.topic not in payloads.COMPLIANCE_TOPICS:
        return _finish(session, delivery, DeliveryStatus.IGNORED, now, "shop is not installed"), None
    try:
        payload = payloads.load(delivery.topic, delivery.body)
    except KeyError:
        note = f"no handler for topic {delivery.topic}"
        return _finish(session, delivery, DeliveryStatus.IGNORED, now, note), None
    except payloads.PayloadError as error:
        log.warning("quarantined delivery %s (%s): %s", delivery.id, delivery.topic, error)
        return _finish(session, delivery, DeliveryStatus.QUARANTINED, now, str(error)), None
    ctx = HandlerContext(
        database(),
        session,
        shop,
        delivery.topic,
        now,
        delivery.triggered_at,
        delivery.id,
        delivery.shop_domain,
    )
    note = handlers.dispatch(ctx, payload)
    return _finish(session, delivery, DeliveryStatus.PROCESSED, now, note), ctx


def _finish(session, delivery: Delivery, status: str, now, reason: str | None) -> str:
    delivery.attempts += 1  # here, not first: one UPDATE of the delivery row instead of two
    storage.finish_delivery(session, delivery, status, now, reason)
    return status


def _record_failure(db: storage.Database, delivery_id: int, error: Exception) -> str:
    """Count the failed attempt; schedule the next one, or mark the delivery failed after the last."""
    reason = f"{type(error).__name__}: {error}"[:2000]
    now = clock.now()
    with db.session() as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.status != DeliveryStatus.RECEIVED:
            return delivery.status if delivery else "missing"
        delivery.attempts += 1
        if delivery.attempts >= MAX_ATTEMPTS:
            storage.finish_delivery(session, delivery, DeliveryStatus.FAILED, now, reason)
            return DeliveryStatus.FAILED
        delivery.reason = reason
        delivery.next_attempt_at = now + RETRY_DELAYS[delivery.attempts - 1]
        return "retrying"


def dispatch_due_runs(db: storage.Database, now) -> int:
    """Queue every scheduled run whose time has come (the tick calls this too)."""
    with db.session() as session:
        ids = runs.due_run_ids(session, now)
    connection = current_app.extensions["lifecycle.redis"]
    for run_id in ids:
        queue.enqueue_action_run(connection, run_id)
    return len(ids)


def run_action(run_id: int) -> str:
    """Carry out one planned effect once: re-check it, act, and record the attempt (saleor's shape).

    ShopifyThrottled and passing failures put the run back on the schedule (the tick re-queues it);
    user errors, auth errors and bad templates fail it for good, with the reason.
    """
    db, now = database(), clock.now()
    with db.session() as session:  # the token first: a refresh must not wait on this run's lock
        shop = session.scalar(
            select(Shop).join(ActionRun, ActionRun.shop_id == Shop.id).where(ActionRun.id == run_id)
        )
        shop_ref = (shop.id, shop.domain) if shop else None
    try:
        client = shop_client(db, *shop_ref) if shop_ref else None
    except oauth.TokenError as error:
        log.warning("run %s: %s", run_id, error)
        client = None
    with db.session() as session:
        run = session.get(ActionRun, run_id, with_for_update=True)
        if run is None or run.status not in (RunStatus.QUEUED, RunStatus.SCHEDULED, RunStatus.RUNNING):
            return run.status if run else "missing"  # already done: a duplicate job
        ctx = _action_context(db, session, run, now, client)
        decision = policy.decide(session, ctx.shop, run, ctx.shopper, now)
        if decision.skip:
            return _end(session, run, RunStatus.SKIPPED, now, "skipped", reason=decision.skip)
        if decision.defer_until:
            run.status, run.due_at, run.deferred_reason = (
                RunStatus.SCHEDULED,
                decision.defer_until,
                decision.why,
            )
            _attempt(session, run, now, "deferred", decision.why)
            return "deferred"
        run.status, run.attempts = RunStatus.RUNNING, run.attempts + 1
        session.commit()
        started = time.monotonic()
        try:
            ACTIONS[run.action](ctx)
        except (ShopifyThrottled, ShopifyTransientError, RetryableActionError) as error:
            return _retry_later(session, run, now, error, started)
        except (ShopifyUserErrors, ShopifyAuthError, PermanentActionError) as error:
            return _end(session, run, RunStatus.FAILED, now, "failed", reason=str(error), started=started)
        return _end(session, run, RunStatus.SUCCEEDED, now, "succeeded", started=started)


RUN_RETRY_DELAYS = (60, 300, 1800, 7200)


def shop_client(db: storage.Database, shop_id: int, domain: str) -> ShopifyClient | None:
    """An Admin API client for the shop with a fresh token (refreshed first if it lapses soon)."""
    config = current_app.config
    token = oauth.access_token(db, shop_id, config)
    if token is None:
        return None
    return ShopifyClient(
        domain, token, config["SHOPIFY_API_VERSION"], origin=config.get("SHOPIFY_ADMIN_ORIGIN")
    )


def backfill_step(shop_id: int) -> dict:
    """Advance a shop's history backfill (launched on install, woken by bulk_operations/finish)."""
    from plugin import backfill

    db = database()
    with db.session() as session:
        shop = session.get(Shop, shop_id)
        domain = shop.domain if shop and shop.active else None
    client = shop_client(db, shop_id, domain) if domain else None
    if client is None:
        return {"status": "skipped", "why": "shop not installed or without a token"}
    return backfill.step(db, client, shop_id)


def reconcile_shop(shop_id: int) -> dict:
    """Pull what changed since the last sync and drain it like webhooks (the tick schedules this)."""
    from plugin import reconcile

    db = database()
    with db.session() as session:
        shop = session.get(Shop, shop_id)
        domain = shop.domain if shop and shop.active else None
    client = shop_client(db, shop_id, domain) if domain else None
    if client is None:
        return {"status": "skipped", "why": "shop not installed or without a token"}
    counts = reconcile.reconcile(db, client, shop_id)
    connection = current_app.extensions["lifecycle.redis"]
    for slot in sorted({queue.delivery_slot(i) for i in counts.pop("ids")}):
        queue.enqueue_drain(connection, slot)
    return counts


def _action_context(db, session, run: ActionRun, now, client) -> ActionContext:
    shop = session.get(Shop, run.shop_id)
    shopper = session.get(Shopper, run.shopper_id) if run.shopper_id else None
    config = current_app.config
    settings = dict(
        SMTP_URL=config.get("SMTP_URL"),
        APP_URL=config["APP_URL"],
        SECRET_KEY=config["SECRET_KEY"],
        OUTBOX=config["OUTBOX"],
    )
    return ActionContext(db, session, shop, run, shopper, client, now, settings)


def _attempt(session, run: ActionRun, now, outcome: str, error: str | None = None, started=None) -> None:
    duration = int((time.monotonic() - started) * 1000) if started else None
    session.add(
        ActionAttempt(run_id=run.id, started_at=now, duration_ms=duration, outcome=outcome, error=error)
    )


def _end(session, run: ActionRun, status: str, now, outcome: str, reason=None, started=None) -> str:
    run.status, run.finished_at = status, now
    if reason:
        run.skip_reason = reason
    _attempt(session, run, now, outcome, reason, started)
    return status


def _retry_later(session, run: ActionRun, now, error: Exception, started) -> str:
    if run.attempts > len(RUN_RETRY_DELAYS):
        return _end(
            session, run, RunStatus.FAILED, now, "failed", reason=f"gave up: {error}", started=started
        )
    wait = getattr(error, "retry_after", None) or RUN_RETRY_DELAYS[run.attempts - 1]
    run.status, run.due_at = RunStatus.SCHEDULED, now + timedelta(seconds=wait)
    run.deferred_reason = f"retry after {type(error).__name__}: {error}"
    _attempt(session, run, now, "retry", str(error), started)
    return "retrying"
