"""The stage write-back's runs: one per shopper per 10-minute window, planned on each stage entry or in
bulk after the history import, routed to the shop's bulk write-back job and claimed by it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from plugin.core.rules import PlannedRun
from plugin.store.db import Database
from plugin.store.models import ActionRun, RunStatus, Shop, Shopper
from plugin.store.run_rows import PENDING, run_values, system_run

# The stage write-back runs at most once per shopper per window: every change within a window is one run
# (one idempotency key), due at the window's end, which writes the stage the shopper has then. A burst
# (an install's history, a tick moving thousands) is written once, in bulk, by the shop's write-back job.
STAGE_SYNC_WINDOW = timedelta(minutes=10)
STAGE_SYNC_LEASE = timedelta(minutes=15)  # a claimed write-back whose job died is due again after this


def stage_sync_run(shop_id: int, shopper_id: int, at: datetime, source: str) -> PlannedRun:
    """Write the stage back to Shopify (tag lifecycle:<stage>, metafield lifecycle.stage) once per window."""
    window = STAGE_SYNC_WINDOW.total_seconds()
    start = datetime.fromtimestamp(at.timestamp() // window * window, tz=UTC)
    cycle = f"window@{start.isoformat()}"
    return system_run(
        shop_id, "stage_sync", "sync_stage", shopper_id, cycle, start + STAGE_SYNC_WINDOW, source
    )


def plan_stage_syncs(
    db: Database, session: Session, shop: Shop, at: datetime, source: str, now: datetime
) -> int:
    """Plan the write-back of every shopper whose stage Shopify does not hold yet, inserted a thousand at
    a time (after the history import, which moves stages without plays: the tags and metafields of the
    whole store then go in bulk, 25 customers a call). Returns how many were asked for (a key planned
    already is left as it is)."""
    if not shop.access_token_encrypted:
        return 0  # no token, no Admin API: nothing to write back
    differs = or_(Shopper.synced_stage.is_(None), Shopper.synced_stage != Shopper.stage)
    ids = session.scalars(
        select(Shopper.id)
        .where(Shopper.shop_id == shop.id, Shopper.deleted_at.is_(None), differs)
        .order_by(Shopper.id)
    ).all()
    statement = db.insert(ActionRun.__table__).on_conflict_do_nothing(index_elements=["idempotency_key"])
    for start in range(0, len(ids), 1000):  # executemany: batched VALUES, one compiled statement
        chunk = ids[start : start + 1000]
        planned = [stage_sync_run(shop.id, shopper_id, at, source) for shopper_id in chunk]
        session.execute(
            statement, [run_values(shop.id, run, now, RunStatus.SCHEDULED, None, None) for run in planned]
        )
    return len(ids)


def route_due_stage_syncs(session: Session, now: datetime) -> list[int]:
    """Mark due stage write-backs queued (so they never go one by one) and return the shops whose
    write-back job should run: those with queued ones, or claimed ones whose job died (lease over)."""
    session.execute(
        update(ActionRun)
        .where(
            ActionRun.play == "stage_sync",
            ActionRun.status == RunStatus.SCHEDULED,
            ActionRun.due_at <= now,
        )
        .values(status=RunStatus.QUEUED)
        .execution_options(synchronize_session=False)
    )
    return list(
        session.scalars(
            select(ActionRun.shop_id)
            .where(
                ActionRun.play == "stage_sync",
                ActionRun.status.in_((RunStatus.QUEUED, RunStatus.RUNNING)),
                ActionRun.due_at <= now,
            )
            .distinct()
            .order_by(ActionRun.shop_id)
        )
    )


def claim_stage_syncs(
    db: Database, session: Session, shop_id: int, now: datetime, limit: int
) -> list[tuple[int, int, int]]:
    """Claim up to `limit` due stage write-backs of a shop in one statement: (run id, shopper id, attempts).

    Claimed runs are `running` with one more attempt and due again after STAGE_SYNC_LEASE, so a job that
    dies mid-way leaves them to the next one. PostgreSQL skips rows another job holds (SKIP LOCKED).
    """
    due = (
        select(ActionRun.id)
        .where(
            ActionRun.shop_id == shop_id,
            ActionRun.play == "stage_sync",
            ActionRun.status.in_((*PENDING, RunStatus.RUNNING)),
            ActionRun.due_at <= now,
        )
        .order_by(ActionRun.due_at, ActionRun.id)
        .limit(limit)
    )
    if not db.is_sqlite:
        due = due.with_for_update(skip_locked=True)
    claimed = session.execute(
        update(ActionRun)
        .where(ActionRun.id.in_(due.scalar_subquery()))
        .values(status=RunStatus.RUNNING, attempts=ActionRun.attempts + 1, due_at=now + STAGE_SYNC_LEASE)
        .returning(ActionRun.id, ActionRun.shopper_id, ActionRun.attempts)
        .execution_options(synchronize_session=False)
    )
    return [tuple(row) for row in claimed.all()]
