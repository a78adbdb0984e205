"""RQ entry points. Thin: each takes ids, re-reads the rows, and is safe to run twice."""

from __future__ import annotations

import logging

from flask import current_app
from rq import get_current_job

from plugin import clock, handlers, payloads, storage
from plugin.models import Delivery, DeliveryStatus
from plugin.profiles import HandlerContext

log = logging.getLogger(__name__)


def database() -> storage.Database:
    return current_app.extensions["lifecycle.db"]


def process_delivery(delivery_id: int) -> str:
    """Turn one recorded webhook into profile and stage updates, exactly once.

    Returns the delivery's final status. A body that is not JSON or does not fit its topic is quarantined
    (acked, never retried); an exception is retried by RQ and, once retries run out, marks it failed.
    """
    db = database()
    try:
        with db.session() as session:
            delivery = session.get(Delivery, delivery_id)
            if delivery is None or delivery.status != DeliveryStatus.RECEIVED:
                return delivery.status if delivery else "missing"  # already handled: a duplicate job
            return _process(db, session, delivery)
    except Exception as error:
        _fail_if_final(db, delivery_id, error)
        raise


def _process(db: storage.Database, session, delivery: Delivery) -> str:
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
    ctx = HandlerContext(db, session, shop, delivery.topic, now, delivery.triggered_at)
    note = handlers.dispatch(ctx, payload)
    return _finish(session, delivery, DeliveryStatus.PROCESSED, now, note)


def _finish(session, delivery: Delivery, status: str, now, reason: str | None) -> str:
    storage.finish_delivery(session, delivery, status, now, reason)
    return status


def _fail_if_final(db: storage.Database, delivery_id: int, error: Exception) -> None:
    """Mark the delivery failed when RQ will not retry it again (or when run outside RQ)."""
    job = get_current_job()
    if job is not None and (job.retries_left or 0) > 0:
        log.warning("delivery %s raised %s; RQ will retry", delivery_id, type(error).__name__)
        return
    log.error("delivery %s failed: %s", delivery_id, type(error).__name__)
    with db.session() as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is not None and delivery.status == DeliveryStatus.RECEIVED:
            reason = f"{type(error).__name__}: {error}"[:2000]
            storage.finish_delivery(session, delivery, DeliveryStatus.FAILED, clock.now(), reason)
