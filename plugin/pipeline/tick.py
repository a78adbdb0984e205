"""The periodic tick: time-based stage moves (set-based, `store/stage_sql.py`), due runs, re-queueing of
deliveries whose wake-up was lost, token refresh, reconciliation and backfill polling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from sqlalchemy import select

from plugin import clock
from plugin.core.policy import CONSENT_WAIT
from plugin.pipeline import maintenance, queue
from plugin.pipeline.run_action import dispatch_due_runs, take_back_interrupted
from plugin.shopify import tokens
from plugin.store import deliveries, runs
from plugin.store.db import Database
from plugin.store.models import Shop
from plugin.store.stage_sql import move_stages

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    now: datetime
    moves: dict[str, int] = field(default_factory=dict)  # "from→to" -> count
    requeued: int = 0
    requeued_runs: int = 0  # runs queued again: their job was lost or dropped (`queue.requeue_lost_runs`)
    revived_runs: int = 0  # runs given a new job: theirs ended before acting (`queue.JOB_REVIVALS`)
    failed_runs: int = 0  # runs whose every job ended before acting, or interrupted too often, now failed
    resumed_runs: int = 0  # runs whose attempt was interrupted, queued again (`take_back_interrupted`)
    planned: int = 0
    dispatched: int = 0
    maintenance: dict[str, int] = field(default_factory=dict)
    pruned_bodies: int = 0  # webhook bodies past LIFECYCLE_WEBHOOK_RETENTION_DAYS replaced by a marker
    expired_waits: int = 0  # marketing runs whose consent did not come in time, now skipped

    def as_dict(self) -> dict:
        return {
            "now": self.now.isoformat(),
            "moves": self.moves,
            "planned_runs": self.planned,
            "dispatched_runs": self.dispatched,
            "requeued_deliveries": self.requeued,
            "requeued_runs": self.requeued_runs,
            "revived_runs": self.revived_runs,
            "failed_runs": self.failed_runs,
            "resumed_runs": self.resumed_runs,
            "maintenance": self.maintenance,
            "pruned_bodies": self.pruned_bodies,
            "expired_waits": self.expired_waits,
        }


def run_tick(
    db: Database,
    connection: redis.Redis | None,
    now: datetime,
    stuck_after: int,
    consent_wait: timedelta = CONSENT_WAIT,
) -> TickReport:
    """Settle expired consent waits, move stages for every active shop as of `now`, then re-queue
    deliveries stuck in `received`, runs whose attempt was interrupted and runs whose job was lost."""
    report = TickReport(now=now)
    with db.session() as session:
        report.expired_waits = runs.settle_expired_waits(session, now)
    with db.session() as session:
        shops = list(session.scalars(select(Shop).where(Shop.active.is_(True)).order_by(Shop.id)))
    for shop in shops:
        with db.session() as session:
            for move, count in move_stages(session, shop, now, not db.is_sqlite).items():
                report.moves[move] = report.moves.get(move, 0) + count
            if report.moves:
                report.planned += runs.plan_tick_transitions(db, session, shop, now, consent_wait)
        log.info("tick moved stages for %s", shop.domain)
    if connection is not None:
        stuck_since = now - timedelta(seconds=stuck_after)
        report.requeued = requeue_stuck(db, connection, stuck_since, now)
        resumed, report.failed_runs = take_back_interrupted(db, connection, now)
        report.resumed_runs, just_queued = len(resumed), {run_id for run_id, _ in resumed}
        with db.session() as session:  # less the runs just queued again: their jobs are on their way
            queued = [run for run in runs.queued_runs(session, stuck_since) if run[0] not in just_queued]
        lost = queue.requeue_lost_runs(connection, queued)
        report.requeued_runs, report.revived_runs = lost.requeued, lost.revived
        with db.session() as session:
            report.failed_runs += runs.fail_queued_runs(session, lost.failed, now)
    return report


def tick_app(app) -> TickReport:
    """Run the tick with an app's database, Redis and settings, as of the one clock; then queue the
    action runs that are due (delays elapsed, deferrals over, retries)."""

    now = clock.now()
    report = run_tick(
        app.extensions["lifecycle.db"],
        app.extensions["lifecycle.redis"],
        now,
        app.config["STUCK_AFTER_SECONDS"],
        app.config["CONSENT_WAIT"],
    )
    with app.app_context():
        report.dispatched = dispatch_due_runs(app.extensions["lifecycle.db"], now)
        report.maintenance = schedule_maintenance(app, now)
    report.pruned_bodies = deliveries.prune_bodies(
        app.extensions["lifecycle.db"], now - timedelta(days=app.config["WEBHOOK_RETENTION_DAYS"])
    )
    return report


RECONCILE_EVERY = timedelta(minutes=15)


BACKFILL_POLL_AFTER = timedelta(minutes=5)


def schedule_maintenance(app, now: datetime) -> dict[str, int]:
    """Per installed shop: refresh tokens about to lapse, queue reconciliation when due, and wake a
    backfill whose finish webhook has not come (it asks Shopify for the operation's status itself)."""

    db, connection = app.extensions["lifecycle.db"], app.extensions["lifecycle.redis"]
    done = {"tokens_refreshed": 0, "reconciliations": 0, "backfills_polled": 0}
    try:
        done["tokens_refreshed"] = tokens.refresh_due_tokens(db, app.config)
    except tokens.TokenError as error:
        log.warning("token refresh: %s", error)
    with db.session() as session:
        shops = list(
            session.scalars(
                select(Shop).where(Shop.active.is_(True), Shop.access_token_encrypted.is_not(None))
            )
        )
    for shop in shops:
        backfill = shop.backfill or {}
        if backfill.get("status") in ("running", "importing", "pending"):
            started = backfill.get("started_at")
            if started is None or datetime.fromisoformat(started) <= now - BACKFILL_POLL_AFTER:
                done["backfills_polled"] += queue.enqueue_backfill(connection, shop.id)
        elif shop.last_reconciled_at is None or shop.last_reconciled_at <= now - RECONCILE_EVERY:
            done["reconciliations"] += queue.enqueue_reconcile(connection, shop.id)
    done["model_fits"] = maintenance.queue_due_fits(db, connection, now)
    return done


def requeue_stuck(db: Database, connection: redis.Redis, older_than: datetime, now: datetime) -> int:
    """Queue a drain when deliveries are left waiting (wake-up lost, or a retry now due); how many wait."""
    with db.session() as session:
        ids = deliveries.stuck_delivery_ids(session, older_than, now)
    if ids:
        queue.enqueue_drain(connection, force=True)
    return len(ids)
