"""Draining the delivery ledger: claim due deliveries, apply them a batch per transaction, queue effects
after commit. RQ entry points take ids, re-read the rows, and are safe to run twice.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import timedelta

from flask import current_app

from plugin import clock, handlers
from plugin.handlers import compliance
from plugin.handlers.context import HandlerContext
from plugin.pipeline import queue
from plugin.pipeline.run_action import database, dispatch_due_runs
from plugin.shopify import payloads
from plugin.store import deliveries, shops
from plugin.store.db import Database
from plugin.store.models import Delivery, DeliveryStatus

log = logging.getLogger(__name__)


DRAIN_BATCH = 200  # ids per scan of a slot


DRAIN_SECONDS = 60  # a drain then queues its successor, so no job nears RQ's timeout with a backlog


BATCH_SIZE = 50  # deliveries per transaction


BATCH_SECONDS = 0.25  # ...or fewer, so the write lock (SQLite) and row locks are never held long


# A delivery whose processing raised (database hiccup, a bug) waits this long before its next attempt,
# then is marked failed (and stays replayable). Bad payloads never raise: they are quarantined.
RETRY_DELAYS = (timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10))


MAX_ATTEMPTS = len(RETRY_DELAYS) + 1


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
            ids = deliveries.due_delivery_ids(
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
                delivery = deliveries.lock_delivery(session, delivery_id)
                if delivery is None or delivery.status != DeliveryStatus.RECEIVED:
                    settled[delivery_id] = delivery.status if delivery else "missing"
                else:
                    status, ctx = _process(session, delivery)
                    session.flush()
                    shops.expire_for_next_delivery(session, delivery.topic)
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
            delivery = deliveries.lock_delivery(session, delivery_id)
            if delivery is None or delivery.status != DeliveryStatus.RECEIVED:
                return delivery.status if delivery else "missing"  # already handled by another drain
            status, ctx = _process(session, delivery)
        if ctx is not None:
            _after_commit(db, ctx.planned_runs, ctx.jobs)
        return status
    except Exception as error:  # noqa: BLE001 - any failure is recorded on the ledger row, then retried
        log.exception("delivery %s raised %s", delivery_id, type(error).__name__)
        return _record_failure(db, delivery_id, error)


def _after_commit(db: Database, planned: list[int], jobs: list[tuple]) -> None:
    """Effects never precede the data they are about: runs and jobs are queued once it is committed."""
    if planned:
        dispatch_due_runs(db, clock.now())
    connection = current_app.extensions["lifecycle.redis"]
    for name, shop_id in jobs:
        queue.MAINTENANCE_JOBS[name](connection, shop_id)


def _process(session, delivery: Delivery) -> tuple[str, HandlerContext | None]:
    now = clock.now()
    shop = shops.batch_shop(session, delivery.shop_domain)
    not_served = _not_served(shop, delivery.topic)
    if not_served:
        return _finish(session, delivery, DeliveryStatus.IGNORED, now, not_served), None
    try:
        payload = payloads.load(delivery.topic, delivery.body)
        _check_shop(payloads.shop_of(payload), delivery.shop_domain)
    except payloads.UnknownTopicError:
        note = f"no handler for topic {delivery.topic}"
        return _finish(session, delivery, DeliveryStatus.IGNORED, now, note), None
    except payloads.PayloadError as error:
        return _quarantine(session, delivery, now, str(error)), None
    ctx = HandlerContext(
        database(),
        session,
        shop,
        delivery.topic,
        now,
        delivery.triggered_at,
        delivery.id,
        delivery.shop_domain,
        consent_wait=current_app.config["CONSENT_WAIT"],
    )
    try:
        note = handlers.dispatch(ctx, payload)
    except compliance.ShopStillInstalledError as error:  # nothing erased; replayable after a real uninstall
        return _quarantine(session, delivery, now, str(error)), None
    return _finish(session, delivery, DeliveryStatus.PROCESSED, now, note), ctx


def _not_served(shop, topic: str) -> str | None:
    """Why a delivery of this shop is not processed (not installed, sending paused), or None.

    Compliance topics are processed whatever the shop's state; app/uninstalled also for a paused shop
    (a later one may be the one whose token Shopify refuses).
    """
    if topic in payloads.COMPLIANCE_TOPICS:
        return None
    if shop is None or not shop.active:
        return "shop is not installed"
    if shop.paused_at is not None and topic != "app/uninstalled":
        return f"sending paused: {shop.pause_reason}"
    return None


def _check_shop(named: str | None, header_domain: str) -> None:
    """The shop a body names must be the one X-Shopify-Shop-Domain names: the HMAC covers the body only,
    so a header naming another shop is a replayed or forged delivery."""
    if named is not None and named != header_domain:
        raise payloads.PayloadError(f"the body names shop {named[:255]!r}, the header {header_domain!r}")


def _quarantine(session, delivery: Delivery, now, reason: str) -> str:
    log.warning("quarantined delivery %s (%s): %s", delivery.id, delivery.topic, reason)
    return _finish(session, delivery, DeliveryStatus.QUARANTINED, now, reason)


def _finish(session, delivery: Delivery, status: str, now, reason: str | None) -> str:
    delivery.attempts += 1  # here, not first: one UPDATE of the delivery row instead of two
    deliveries.finish_delivery(session, delivery, status, now, reason)
    return status


def _record_failure(db: Database, delivery_id: int, error: Exception) -> str:
    """Count the failed attempt; schedule the next one, or mark the delivery failed after the last."""
    reason = f"{type(error).__name__}: {error}"[:2000]
    now = clock.now()
    with db.session() as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.status != DeliveryStatus.RECEIVED:
            return delivery.status if delivery else "missing"
        delivery.attempts += 1
        if delivery.attempts >= MAX_ATTEMPTS:
            deliveries.finish_delivery(session, delivery, DeliveryStatus.FAILED, now, reason)
            return DeliveryStatus.FAILED
        delivery.reason = reason
        delivery.next_attempt_at = now + RETRY_DELAYS[delivery.attempts - 1]
        return "retrying"
