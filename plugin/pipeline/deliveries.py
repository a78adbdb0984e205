"""Draining the delivery ledger: claim due deliveries (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so any
number of workers share one backlog), apply them a batch per transaction (`pipeline.batch`), split a
failing batch until the failure is alone, queue effects after commit. Entry points are safe to run twice.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from plugin import clock
from plugin.pipeline import batch, queue
from plugin.pipeline.run_action import database
from plugin.store import deliveries
from plugin.store.db import Database
from plugin.store.models import Delivery, DeliveryStatus

log = logging.getLogger(__name__)


CLAIM_FIRST = 100  # deliveries the first claim of a drain takes; later claims aim at BATCH_SECONDS
CLAIM_MIN, CLAIM_MAX = 20, 500


DRAIN_SECONDS = 60  # a drain then queues its successor, so no job nears RQ's timeout with a backlog


BATCH_SECONDS = 0.5  # about this much work per transaction, so row locks are held briefly
SQLITE_BATCH_SECONDS = 0.25  # SQLite's one write lock also holds up the webhook endpoint's inserts


# After a partial batch during which more webhooks arrived, a drain waits this long before its next claim,
# so a steady stream is applied in batches of hundreds rather than of the few that arrived while the last
# batch ran. Every batch pays the same fixed cost (its locks, the book's reads, a commit, dispatching the
# runs it planned), so small batches cost up to twice the CPU per delivery, CPU the webhook endpoint
# shares; a delivery waits at most this long more. Nothing waits when nothing arrives meanwhile.
BATCH_LINGER_SECONDS = 0.5


# A delivery whose processing raised (database hiccup, a bug) waits this long before its next attempt,
# then is marked failed (and stays replayable). Bad payloads never raise: they are quarantined.
RETRY_DELAYS = (timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10))


MAX_ATTEMPTS = len(RETRY_DELAYS) + 1


def drain_deliveries(slot: int | None = None) -> dict[str, int]:
    """Claim and apply due deliveries a batch per transaction until none is left; return how many ended
    in each status. (`slot` is accepted from drain jobs queued before the backlog was shared; ignored.)

    Lowers the wake-up flag first (see `queue`), so a delivery committed during the drain is either
    claimed by it or queues the next drain. A full claim means more are waiting: it raises the flag and
    queues one more drain, so an idle worker joins (at most one drain waits at a time, however many
    run). A partial claim during which webhooks kept arriving (the flag is up again) is followed by
    BATCH_LINGER_SECONDS of waiting, so a stream is applied in large batches. The claim size follows the
    measured time per delivery, aiming at BATCH_SECONDS a batch (SQLITE_BATCH_SECONDS on SQLite).
    After DRAIN_SECONDS it queues its successor and returns, so a long backlog never meets RQ's job
    timeout mid-transaction.
    """
    connection = current_app.extensions["lifecycle.redis"]
    queue.lower_drain_flag(connection)
    outcomes, size, started = Counter(), CLAIM_FIRST, time.monotonic()
    aim = SQLITE_BATCH_SECONDS if database().is_sqlite else BATCH_SECONDS
    while True:
        if time.monotonic() - started > DRAIN_SECONDS:  # hand over to a fresh job, well inside RQ's timeout
            queue.enqueue_drain(connection, force=True)
            return dict(outcomes)
        batch_started = time.monotonic()
        done = process_batch(limit=size)
        if not done:
            return dict(outcomes)
        outcomes.update(done.values())
        per_delivery = (time.monotonic() - batch_started) / len(done)
        claimed, size = size, max(CLAIM_MIN, min(CLAIM_MAX, int(aim / max(per_delivery, 1e-4))))
        if len(done) >= claimed:
            queue.enqueue_drain(connection)  # a backlog: let another worker share it
        elif queue.drain_flag_raised(connection):  # a stream: let the next batch gather
            time.sleep(BATCH_LINGER_SECONDS)


def process_batch(delivery_ids: list[int] | None = None, limit: int = CLAIM_MAX) -> dict[int, str]:
    """Claim due deliveries (those of `delivery_ids` still waiting, or the oldest `limit`), apply them
    in one transaction, and return the status each ended in.

    One commit per batch instead of one per delivery is most of a worker's speed. When the batch raises,
    it is rolled back and split in halves, each applied on its own, until the failing delivery is alone:
    it takes the retry ledger (`_record_failure`, with its reason) and every other one commits. One
    poison delivery costs its batch about 2·log2(size) extra transactions and stalls nothing.
    """
    db, claimed_ids = database(), []
    try:
        with db.session() as session:
            claimed = deliveries.claim_due_deliveries(session, clock.now(), limit, ids=delivery_ids)
            claimed_ids = [delivery.id for delivery in claimed]
            if not claimed:
                return {}
            result = batch.apply_batch(db, session, claimed, clock.now(), current_app.config["CONSENT_WAIT"])
    except Exception as error:  # noqa: BLE001 - rolled back: split it, or record the failure of the one
        if not claimed_ids:
            raise  # the claim itself failed (database down): the job fails, the tick re-queues
        if len(claimed_ids) == 1:
            log.exception("delivery %s raised %s", claimed_ids[0], type(error).__name__)
            return {claimed_ids[0]: _record_failure(db, claimed_ids[0], error)}
        half = len(claimed_ids) // 2
        return process_batch(claimed_ids[:half], half) | process_batch(
            claimed_ids[half:], len(claimed_ids) - half
        )
    _after_commit(result)
    return result.settled


def process_delivery(delivery_id: int) -> str:
    """Turn one recorded webhook into profile and stage updates, exactly once; return its status after.

    A body that is not JSON or does not fit its topic is quarantined (acked, never retried); an exception
    rolls the work back and schedules another attempt, and the last allowed attempt marks it failed.
    """
    settled = process_batch([delivery_id], 1)
    if delivery_id in settled:
        return settled[delivery_id]
    with database().session() as session:  # not claimed: settled already, locked by a drain, or absent
        delivery = session.get(Delivery, delivery_id)
        return delivery.status if delivery else "missing"


def _after_commit(result: batch.BatchResult) -> None:
    """Effects never precede the data they are about: the runs the batch marked queued, its shops'
    stage write-backs and its maintenance jobs are queued once it is committed. (Should Redis lose them,
    the tick queues them again: `queue.requeue_lost_runs`, `stage_syncs.route_due_stage_syncs`.)"""
    connection = current_app.extensions["lifecycle.redis"]
    for shop_id in result.writeback_shops:
        queue.enqueue_stage_writeback(connection, shop_id)
    queue.enqueue_action_runs(connection, result.queued_runs)
    for name, shop_id in result.jobs:
        queue.MAINTENANCE_JOBS[name](connection, shop_id)


def _record_failure(db: Database, delivery_id: int, error: Exception) -> str:
    """Count the failed attempt; schedule the next one, or mark the delivery failed after the last."""
    reason = f"{type(error).__name__}: {error}"[:2000]
    now = clock.now()
    with db.session() as session:
        delivery = session.scalar(  # a delivery another drain holds is that drain's to settle
            select(Delivery).where(Delivery.id == delivery_id).with_for_update(skip_locked=True)
        )
        if delivery is None:
            return "claimed elsewhere"
        if delivery.status != DeliveryStatus.RECEIVED:
            return delivery.status
        delivery.attempts += 1
        if delivery.attempts >= MAX_ATTEMPTS:
            deliveries.finish_delivery(session, delivery, DeliveryStatus.FAILED, now, reason)
            return DeliveryStatus.FAILED
        delivery.reason = reason
        delivery.next_attempt_at = now + RETRY_DELAYS[delivery.attempts - 1]
        return "retrying"
