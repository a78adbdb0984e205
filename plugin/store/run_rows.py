"""The action ledger's rows: a planned run stored once per idempotency key (a superseded one revived when
its trigger holds again), and the app's own runs (write-backs, consent syncs)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from plugin.core.rules import PlannedRun
from plugin.store.db import Database
from plugin.store.models import ActionRun, RunStatus

PENDING = (RunStatus.WAITING, RunStatus.SCHEDULED, RunStatus.QUEUED)
# Runs with no effect yet whose planning a later-seen history can undo: the pending ones, and those held
# out when planned (in the rule's control group: nothing sent, kept to measure lift)
UNDONE = (*PENDING, RunStatus.HELD_OUT)


def store_run(db: Database, session: Session, shop_id: int, run: PlannedRun, now: datetime) -> int | None:
    """Insert a planned run unless its idempotency key exists; return the new id or None.

    A run whose rule raised while planning (`run.error`) is stored failed, with the error as its reason:
    the merchant sees it on the timeline, and the delivery that triggered it is processed as usual.
    """
    table = ActionRun.__table__
    values = planned_values(shop_id, run, now)
    statement = db.insert(table).values(**values).on_conflict_do_nothing(index_elements=["idempotency_key"])
    created = session.execute(statement.returning(table.c.id)).scalar()
    if created is not None:
        return created
    return revive_superseded(session, values)


def revive_superseded(session: Session, values: dict) -> int | None:
    """The key of `values` exists. A run cancelled as superseded comes back when its trigger holds again
    (the shopper is in that stage entry again, a late cancellation restored a welcome's facts): one run
    per key. Returns its id, or None when the stored run is anything else."""
    table = ActionRun.__table__
    return session.execute(
        update(table)
        .where(
            table.c.idempotency_key == values["idempotency_key"],
            table.c.status == RunStatus.CANCELLED,
            table.c.skip_reason.like(SUPERSEDED + "%"),
        )
        .values(**{name: values[name] for name in REVIVED})
        .returning(table.c.id)
    ).scalar()


REVIVED = ("status", "finished_at", "skip_reason", "deferred_reason", "due_at")  # what a revival rewrites


def planned_values(shop_id: int, run: PlannedRun, now: datetime) -> dict:
    """The row a planned run is stored as: failed, held out, skipped, waiting for consent or scheduled."""
    if run.error is not None:
        status, finished_at, reason = RunStatus.FAILED, now, run.error
    elif run.held_out:
        status, finished_at = RunStatus.HELD_OUT, now
        reason = "held out: in the rule's control group, nothing sent"
    elif run.gate is not None and run.gate.status == RunStatus.SKIPPED:
        status, finished_at, reason = RunStatus.SKIPPED, now, run.gate.why
    else:
        status, finished_at, reason = RunStatus.SCHEDULED, None, None
    return run_values(shop_id, run, now, status, finished_at, reason)


def run_values(shop_id: int, run: PlannedRun, now: datetime, status, finished_at, reason) -> dict:
    """The action_runs row of a planned run."""
    waiting = run.gate is not None and run.gate.status == RunStatus.WAITING and status == RunStatus.SCHEDULED
    return dict(
        shop_id=shop_id,
        rule_id=run.rule_id,
        play=run.play,
        action=run.action,
        shopper_id=run.shopper_id,
        recipient_email=run.recipient_email,
        cycle=run.cycle,
        idempotency_key=run.idempotency_key,
        trigger=run.trigger,
        context=run.context,
        params=run.params,
        priority=run.priority,
        marketing=run.marketing,
        created_at=now,
        due_at=max(run.due_at, now),
        attempts=0,
        status=RunStatus.WAITING if waiting else status,
        finished_at=finished_at,
        skip_reason=reason,
        deferred_reason=run.gate.why if waiting else None,
        event_at=run.event_at,
        wait_until=run.wait_until,
    )


SUPERSEDED = "superseded: "


def system_run(
    shop_id: int, play: str, action: str, shopper_id: int, cycle: str, at: datetime, trigger: str
) -> PlannedRun:
    """A run of the app's own (not a merchant rule): never marketing, top priority, due at `at`."""
    return PlannedRun(
        rule_id=None,
        play=play,
        action=action,
        shopper_id=shopper_id,
        cycle=cycle,
        idempotency_key=f"{shop_id}:{play}:{shopper_id}:{cycle}",
        due_at=at,
        priority=100,
        marketing=False,
        params={},
        context={},
        trigger=trigger,
        held_out=False,
    )
