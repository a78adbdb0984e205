"""RQ entry points. Thin: each takes ids, re-reads the rows, and is safe to run twice."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta

from flask import current_app

from plugin import clock, handlers, payloads, queue, storage
from plugin.models import Delivery, DeliveryStatus
from plugin.profiles import HandlerContext

log = logging.getLogger(__name__)

DRAIN_BATCH = 200
# A delivery whose processing raised (database hiccup, a bug) waits this long before its next attempt,
# then is marked failed (and stays replayable). Bad payloads never raise: they are quarantined.
RETRY_DELAYS = (timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10))
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1


def database() -> storage.Database:
    return current_app.extensions["lifecycle.db"]


def drain_deliveries(slot: int) -> dict[str, int]:
    """Process every due delivery of one slot, oldest first, each in its own transaction.

    Lowers the slot's flag first (see `queue`), so a delivery committed during the drain either shows up
    in a later scan of this drain or queues the next one. Returns how many ended in each status.
    """
    queue.lower_drain_flag(current_app.extensions["lifecycle.redis"], slot)
    db, outcomes, after_id = database(), Counter(), 0
    while True:
        with db.session() as session:
            ids = storage.due_delivery_ids(
                session, slot, queue.DRAIN_SLOTS, clock.now(), after_id=after_id, limit=DRAIN_BATCH
            )
        if not ids:
            return dict(outcomes)
        for delivery_id in ids:
            outcomes[process_delivery(delivery_id)] += 1
        after_id = ids[-1]


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
            return _process(session, delivery)
    except Exception as error:  # noqa: BLE001 - any failure is recorded on the ledger row, then retried
        log.exception("delivery %s raised %s", delivery_id, type(error).__name__)
        return _record_failure(db, delivery_id, error)


def _process(session, delivery: Delivery) -> str:
    now = clock.now()
    delivery.attempts += 1
    shop = storage.get_shop(session, delivery.shop_domain)
    if (shop is None or not shop.active) and delivery.topic not in payloads.COMPLIANCE_TOPICS:
        return _finish(session, delivery, DeliveryStatus.IGNORED, now, "shop is not installed")
    try:
        payload = payloads.load(delivery.topic, delivery.body)
    except KeyError:
        return _finish(
            session, delivery, DeliveryStatus.IGNORED, now, f"no handler for topic {delivery.topic}"
        )
    except payloads.PayloadError as error:
        log.warning("quarantined delivery %s (%s): %s", delivery.id, delivery.topic, error)
        return _finish(session, delivery, DeliveryStatus.QUARANTINED, now, str(error))
    ctx = HandlerContext(database(), session, shop, delivery.topic, now, delivery.triggered_at)
    note = handlers.dispatch(ctx, payload)
    return _finish(session, delivery, DeliveryStatus.PROCESSED, now, note)


def _finish(session, delivery: Delivery, status: str, now, reason: str | None) -> str:
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
