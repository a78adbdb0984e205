"""The action ledger's storage side: planning runs from triggers into `action_runs` (once per idempotency
key), and picking the runs that are due.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from plugin.core import rules as rules_module
from plugin.core.facts import accepts_marketing
from plugin.core.policy import CONSENT_WAIT, consent_gate, expire_wait
from plugin.core.rules import Profile, Trigger
from plugin.core.stages import Thresholds, assess
from plugin.store import predictions, shopper_book
from plugin.store.db import Database
from plugin.store.models import (
    ActionAttempt,
    ActionRun,
    RunStatus,
    Shop,
    Shopper,
    StageTransition,
)
from plugin.store.run_rows import PENDING, SUPERSEDED, UNDONE, planned_values, store_run
from plugin.store.shoppers import facts_of, kept_orders, profile_as_of, profile_of
from plugin.store.shops import shop_rules
from plugin.store.stage_syncs import stage_sync_run

log = logging.getLogger(__name__)

UNREAD = object()  # the shopper's personal prediction, not read yet (None is a prediction: there is none)


def plan(
    db: Database,
    session: Session,
    shop: Shop,
    profile: Profile,
    trigger: Trigger,
    now: datetime,
    rules: list[tuple[int, dict]] | None = None,
    consent_wait: timedelta = CONSENT_WAIT,
) -> list[int]:
    """Plan and store the runs a trigger creates; return the ids of the runs created now (not duplicates)."""
    planned = rules_module.plan_runs(
        shop.id,
        rules if rules is not None else shop_rules(session, shop.id),
        profile,
        trigger,
        now,
        consent_wait,
    )
    return [run_id for run in planned if (run_id := _store(db, session, shop.id, run, now)) is not None]


def plan_stage_entry(
    db: Database,
    session: Session,
    shop: Shop,
    shopper: Shopper,
    transition_at: datetime,
    source: str,
    now: datetime,
    rules=None,
    consent_wait: timedelta = CONSENT_WAIT,
    prediction=UNREAD,
) -> list[int]:
    """Plan the plays of entering the shopper's current stage, and the write-back of the stage to Shopify
    (`prediction`: the shopper's personal prediction, when the caller has read it)."""
    created = plan_stage_plays(
        db, session, shop, shopper, transition_at, source, now, rules, consent_wait, prediction
    )
    if not shop.access_token_encrypted:
        return created  # no token, no Admin API: nothing to write back
    sync = _store(db, session, shop.id, stage_sync_run(shop.id, shopper.id, transition_at, source), now)
    return created + ([sync] if sync is not None else [])


def _store(db: Database, session: Session, shop_id: int, run, now: datetime) -> int | None:
    """Store a planned run: in the batch's book when it holds the shopper (written with the batch), else
    in the database at once (`run_rows.store_run`)."""
    book = shopper_book.of(session)
    if book is not None and run.shopper_id in book.by_id:
        return book.store_run(planned_values(shop_id, run, now))
    return store_run(db, session, shop_id, run, now)


def _pending_runs(session: Session, shopper: Shopper, held_out: bool = False) -> list[ActionRun]:
    """The shopper's runs not yet acted on (and, with `held_out`, those held out when planned), from the
    batch's book when it holds the shopper."""
    book = shopper_book.holding(session, shopper)
    if book is not None:
        return book.pending_runs(shopper, held_out)
    wanted = UNDONE if held_out else PENDING
    return list(
        session.scalars(
            select(ActionRun).where(ActionRun.shopper_id == shopper.id, ActionRun.status.in_(wanted))
        )
    )


TIME_STAGES = ("at_risk", "lapsed")


def stage_cycle(session: Session, shop: Shop, shopper: Shopper, now: datetime, prediction=UNREAD) -> str:
    """The stage entry a stage play belongs to, from the shopper's facts (not from the order deliveries
    came in, nor from how they were batched): falling at risk or lapsing is counted from the last kept
    order, so a shopper who buys again and falls again is in a new cycle, and the same fall seen twice (or
    seen while older orders were still arriving) is one; other stages by the order count at entry
    (`entry_count`)."""
    if shopper.stage in TIME_STAGES and shopper.last_order_at is not None:
        return f"{shopper.stage}:{shopper.last_order_at.isoformat()}"
    return f"{shopper.stage}:{entry_count(session, shop, shopper, now, prediction)}"


def entry_count(session: Session, shop: Shop, shopper: Shopper, now: datetime, prediction=UNREAD) -> int:
    """How many kept orders the shopper had when they entered their current stage: the smallest count
    from which the shopper's orders, taken in the order they were placed, assess to that stage at every
    count up to now's (each count's facts as of `now`, as a restage after that order would have seen
    them). The count the shopper has when a restage sees the stage change depends on the order the
    deliveries were applied in (two workers' batches commit in either order): a shopper loyal from their
    third order whose fourth was applied first entered at 4 (bench/replay.py --check-runs found it)."""
    if (shopper.orders_count or 0) <= 1:  # nothing to look back on (the tick's moves to prospect)
        return shopper.orders_count or 0
    orders = kept_orders(session, shop.id, shopper)
    if prediction is UNREAD:
        prediction = personal_prediction(session, shop, shopper)
    thresholds, facts = Thresholds.of(shop), facts_of(shopper)
    count, spent = len(orders), sum((net for _, net in orders), Decimal(0))
    while count > 1:
        spent -= orders[count - 1][1]
        before = replace(facts, orders_count=count - 1, total_spent=spent, last_order_at=orders[count - 2][0])
        if assess(before, now, thresholds, prediction=prediction).stage.value != shopper.stage:
            break
        count -= 1
    return count


def plan_stage_plays(
    db: Database,
    session: Session,
    shop: Shop,
    shopper: Shopper,
    at: datetime,
    source: str,
    now: datetime,
    rules=None,
    consent_wait: timedelta = CONSENT_WAIT,
    prediction=UNREAD,
) -> list[int]:
    """Plan the rules of the shopper's current stage entry; cancel pending plays of other entries."""
    cycle = stage_cycle(session, shop, shopper, now, prediction)
    supersede_stage_plays(db, session, shopper, cycle, now)
    trigger = Trigger(name=f"stage:{shopper.stage}", at=at, cycle=cycle, source=source)
    return plan(db, session, shop, profile_of(shopper), trigger, now, rules, consent_wait)


def replan_stage_entry(
    db: Database,
    session: Session,
    shop: Shop,
    shopper: Shopper,
    source: str,
    now: datetime,
    consent_wait: timedelta = CONSENT_WAIT,
    prediction=UNREAD,
) -> list[int]:
    """The shopper's stage did not change, but the entry it counts from may have.

    At risk or lapsed, the entry is dated by the last kept order: a newer order arriving late moves it,
    so the stage's plays are planned for the current entry (`plan_stage_plays`, at now), replacing those
    of the entry seen before. Other stages count the orders placed before the entry: an order placed
    before the stage change may be applied after it (an older order in a later batch), so seen whole the
    shopper entered this stage at another order count (`entry_count`). Pending plays of the entry planned
    under the count seen before are superseded, and their rules planned again under the count the whole
    history gives, at the entry's own time; so are plays held out under the count seen before (the
    control group of an entry the history never had; the new entry draws its own). Plays already acted
    on stay as they are: their effect happened once, and planning them again would repeat it."""
    if shopper.stage in TIME_STAGES:
        return plan_stage_plays(db, session, shop, shopper, now, source, now, None, consent_wait, prediction)
    stale = [
        run
        for run in _pending_runs(session, shopper, held_out=True)
        if run.play != "stage_sync" and run.rule_id is not None and run.play_stage == shopper.stage
    ]
    if not stale:
        return []  # nothing pending nor held out: nothing planned under a count this could correct
    cycle = stage_cycle(session, shop, shopper, now, prediction)
    stale = still_pending(db, session, [run for run in stale if run.cycle != cycle])
    if not stale:
        return []
    rule_ids = {run.rule_id for run in stale}
    at = min(run.event_at or now for run in stale)
    for run in stale:
        run.status, run.finished_at = RunStatus.CANCELLED, now
        run.skip_reason = f"{SUPERSEDED}the shopper's stage entry is now {cycle}"
    rules = [(rule_id, rule) for rule_id, rule in shop_rules(session, shop.id) if rule_id in rule_ids]
    trigger = Trigger(name=f"stage:{shopper.stage}", at=at, cycle=cycle, source=source)
    return plan(db, session, shop, profile_of(shopper), trigger, now, rules, consent_wait)


def still_pending(db: Database, session: Session, stale: list[ActionRun]) -> list[ActionRun]:
    """Of runs read as pending when the batch began, those still pending, locked until the batch commits
    (one statement): a worker may have taken a queued one since (`run_action` locks it and marks it
    running before it acts), and a run being carried out must neither be cancelled nor planned again.
    A run the lock finds taken gets the status it has now. A run held out when planned stays (no worker
    takes one). SQLite's one writer needs no lock: nothing changed since the batch's reads; neither do
    the runs the batch's book locked as it read them (`ShopperBook.locked_runs`)."""
    book = shopper_book.of(session)
    locked = book.locked_runs if book is not None else ()
    stored = sorted(run.id for run in stale if run.id is not None and run.id not in locked)
    if not stored or db.is_sqlite:
        return stale
    with session.no_autoflush:  # the batch's changes are written with its book, not before
        now_status = dict(
            session.execute(
                select(ActionRun.id, ActionRun.status)
                .where(db.among(ActionRun.id, stored))
                .order_by(ActionRun.id)
                .with_for_update()
            ).all()
        )
    for run in stale:
        if run.id in now_status and now_status[run.id] != run.status:
            set_committed_value(run, "status", now_status[run.id])  # as stored; nothing to write back
    return [run for run in stale if run.status in UNDONE]


def personal_prediction(session: Session, shop: Shop, shopper: Shopper):
    """The shopper's personal prediction (None without one): from the batch's book when it holds the
    shopper, else read."""
    book = shopper_book.holding(session, shopper)
    if book is not None:
        return book.predictions.get(shopper.id)
    return predictions.personal_predictions(session, shop, [shopper.id]).get(shopper.id)


def recheck_conditions(
    db: Database, session: Session, shop: Shop, shopper: Shopper, since: datetime, now: datetime
) -> None:
    """An order placed at `since` arrived (or changed): pending plays of the shopper's later events whose
    rule's conditions no longer hold as of their event's time are cancelled as superseded (a welcome
    planned before an order placed before the consent had arrived), if still pending once locked
    (`still_pending`: one a worker took meanwhile is left to the send-time check)."""
    pending = [
        run
        for run in _pending_runs(session, shopper)
        if run.rule_id is not None and run.event_at is not None and run.event_at > since
    ]
    if not pending:
        return
    rules = dict(shop_rules(session, shop.id))
    stale = []
    for run in pending:
        rule = rules.get(run.rule_id)
        if rule is None or run.play_stage is not None or not rule["conditions"]:
            continue
        profile = profile_as_of(session, shopper, run.event_at)
        if not all(rules_module.condition_holds(c, profile, now) for c in rule["conditions"]):
            stale.append(run)
    for run in still_pending(db, session, stale):
        run.status, run.finished_at = RunStatus.CANCELLED, now
        run.skip_reason = SUPERSEDED + "its conditions do not hold as of its event, with later orders"


def plan_tick_transitions(
    db: Database, session: Session, shop: Shop, now: datetime, consent_wait: timedelta = CONSENT_WAIT
) -> int:
    """Plan the stage plays of every move the tick just made in this shop (cause 'tick', at now)."""
    rules = shop_rules(session, shop.id)
    rows = session.execute(
        select(StageTransition.at, Shopper)
        .join(Shopper, Shopper.id == StageTransition.shopper_id)
        .where(StageTransition.shop_id == shop.id, StageTransition.cause == "tick", StageTransition.at == now)
    ).all()
    return sum(
        len(plan_stage_entry(db, session, shop, shopper, at, "tick", now, rules, consent_wait))
        for at, shopper in rows
    )


def queue_due_planned(
    db: Database, session: Session, run_ids: list[int], now: datetime
) -> tuple[list[tuple[int, int]], list[int]]:
    """Of the runs a batch just planned (or released), mark those due now queued, in the batch's own
    transaction and one statement: (runs to queue after commit as (id, attempts), highest priority first; shop
    ids whose stage write-back job to queue). A released or revived run may have had attempts. Runs due later,
    and any other run come due meanwhile, are the tick's (`dispatch_due_runs`): a batch does not pay a
    transaction of its own to look for them."""
    run_ids = sorted({run_id for run_id in run_ids if run_id is not None})
    if not run_ids:
        return [], []
    rows = session.execute(
        update(ActionRun)
        .where(
            db.among(ActionRun.id, run_ids),
            ActionRun.status == RunStatus.SCHEDULED,
            ActionRun.due_at <= now,
        )
        .values(status=RunStatus.QUEUED)
        .returning(
            ActionRun.id,
            ActionRun.attempts,
            ActionRun.play,
            ActionRun.shop_id,
            ActionRun.priority,
            ActionRun.due_at,
        )
        .execution_options(synchronize_session=False)
    ).all()
    actions = sorted((row for row in rows if row.play != "stage_sync"), key=lambda r: (-r.priority, r.due_at))
    shops = sorted({row.shop_id for row in rows if row.play == "stage_sync"})
    return [(row.id, row.attempts) for row in actions], shops


def due_runs(session: Session, now: datetime, limit: int = 500) -> list[tuple[int, int]]:
    """Scheduled runs whose time has come, highest priority first, marked queued: (id, attempts). Locked
    as read, skipping those a batch holds (its book locks its shoppers' runs until it commits, and may
    cancel one): the next tick finds them if they are still due. Waiting for one while holding those
    locked before it could deadlock with a batch whose read waits for one of those."""
    due = [
        (row.id, row.attempts)
        for row in session.execute(
            select(ActionRun.id, ActionRun.attempts)
            .where(ActionRun.status == RunStatus.SCHEDULED, ActionRun.due_at <= now)
            .order_by(ActionRun.priority.desc(), ActionRun.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ]
    if due:
        session.execute(
            update(ActionRun)
            .where(ActionRun.id.in_([run_id for run_id, _ in due]), ActionRun.status == RunStatus.SCHEDULED)
            .values(status=RunStatus.QUEUED)
        )
    return due


def queued_runs(session: Session, due_before: datetime, limit: int = 1000) -> list[tuple[int, int]]:
    """Runs marked queued to a worker and due before `due_before`, oldest first, as (id, attempts): their job
    is normally waiting in Redis or running, but may have been lost (Redis emptied, a worker killed before it
    took the run); `queue.requeue_lost_runs` tells which. Stage write-backs are left out: the tick routes
    their shops again whatever their jobs became (`stage_syncs.route_due_stage_syncs`)."""
    return [
        (row.id, row.attempts)
        for row in session.execute(
            select(ActionRun.id, ActionRun.attempts)
            .where(
                ActionRun.status == RunStatus.QUEUED,
                ActionRun.due_at <= due_before,
                ActionRun.play != "stage_sync",
            )
            .order_by(ActionRun.due_at, ActionRun.id)
            .limit(limit)
        )
    ]


INTERRUPTED = "an attempt was interrupted (its worker stopped before recording how it ended)"


def lock_interrupted(session: Session, now: datetime, limit: int = 1000) -> list:
    """Runs still `running` whose lease is over (their attempt stopped without recording how it ended),
    locked until the transaction ends, skipping any another tick holds: (id, attempts, lease_until,
    context) rows for `take_back_interrupted`. Stage write-backs are left out: their claim has a lease
    of its own (`stage_syncs`)."""
    return session.execute(
        select(ActionRun.id, ActionRun.attempts, ActionRun.lease_until, ActionRun.context)
        .where(
            ActionRun.status == RunStatus.RUNNING,
            ActionRun.lease_until <= now,
            ActionRun.play != "stage_sync",
        )
        .order_by(ActionRun.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()


def take_back_interrupted(
    session: Session, interrupted: list, now: datetime, max_attempts: int, lease: timedelta
) -> tuple[list[int], int]:
    """The runs `lock_interrupted` found: each gets an attempt row saying it was interrupted (started when
    its lease began); a run on its `max_attempts`-th attempt ends failed, with why (and "outcome
    unknown" when its email's send had begun); the others are marked queued, due as they were. Returns
    those marked queued as (id, attempts), and how many failed."""
    if not interrupted:
        return [], 0
    resumed, failed = [], []
    for run_id, attempts, _, context in interrupted:
        if attempts < max_attempts:
            resumed.append((run_id, attempts))
            continue
        sending = "; outcome unknown: its email's send had begun" if (context or {}).get("sending_at") else ""
        failed.append(
            {
                "b_id": run_id,
                "reason": f"gave up after {attempts} attempts; the last was interrupted{sending}",
            }
        )
    if failed:
        table = ActionRun.__table__
        session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                status=RunStatus.FAILED, finished_at=now, lease_until=None, skip_reason=bindparam("reason")
            ),
            failed,
        )
    if resumed:
        session.execute(
            update(ActionRun)
            .where(ActionRun.id.in_([run_id for run_id, _ in resumed]))
            .values(status=RunStatus.QUEUED, lease_until=None, deferred_reason=f"{INTERRUPTED}; trying again")
            .execution_options(synchronize_session=False)
        )
    session.execute(
        insert(ActionAttempt),
        [
            {
                "run_id": run_id,
                "started_at": lease_until - lease,
                "outcome": "interrupted",
                "error": INTERRUPTED,
            }
            for run_id, _, lease_until, _ in interrupted
        ],
    )
    return resumed, len(failed)


def fail_queued_runs(session: Session, reasons: dict[int, str], now: datetime) -> int:
    """Runs still marked queued whose every job ended before it acted (run id → the reason;
    `queue.requeue_lost_runs` read their jobs' statuses) end failed, with the reason: nothing was done, and
    the merchant sees why, rather than the run staying queued for ever (or going out a month late once
    RQ forgets the job). One statement per reason (a rare path)."""
    by_reason: dict[str, list[int]] = {}
    for run_id, reason in reasons.items():
        by_reason.setdefault(reason, []).append(run_id)
    ended = 0
    for reason, run_ids in sorted(by_reason.items()):
        ended += session.execute(
            update(ActionRun)
            .where(ActionRun.id.in_(run_ids), ActionRun.status == RunStatus.QUEUED)
            .values(status=RunStatus.FAILED, skip_reason=reason, finished_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
    return ended


def cancel_pending(session: Session, shop_id: int, reason: str, now: datetime) -> int:
    """Cancel every pending run of a shop (uninstall)."""
    result = session.execute(
        update(ActionRun)
        .where(ActionRun.shop_id == shop_id, ActionRun.status.in_(PENDING))
        .values(status=RunStatus.CANCELLED, skip_reason=reason, finished_at=now)
    )
    return result.rowcount


def apply_consent(db: Database, session: Session, shopper: Shopper, now: datetime) -> list[int]:
    """The shopper's consent changed: put each pending marketing run where `policy.consent_gate` says
    (waiting → scheduled when consent came by its deadline, scheduled → skipped on a withdrawal after its
    event, or back to waiting). Runs already queued to a worker are left to the send-time check, those
    the tick queued since the batch read them included (`still_pending` locks them and reads their
    status now). Returns the ids of the runs that became scheduled (dispatched after commit)."""
    released = []
    candidates = [
        run
        for run in _pending_runs(session, shopper)
        if run.marketing
        and run.status in (RunStatus.WAITING, RunStatus.SCHEDULED)
        and run.event_at is not None
        and run.wait_until is not None
    ]
    pending = [
        run
        for run in still_pending(db, session, candidates)
        if run.status in (RunStatus.WAITING, RunStatus.SCHEDULED)
    ]
    for run in pending:
        consents = accepts_marketing(shopper) and shopper.deleted_at is None
        gate = consent_gate(consents, shopper.consent_updated_at, run.event_at, run.wait_until)
        if gate.status == RunStatus.SKIPPED:
            run.status, run.skip_reason, run.finished_at = RunStatus.SKIPPED, gate.why, now
        elif gate.status == RunStatus.WAITING:
            run.status, run.deferred_reason = RunStatus.WAITING, gate.why
        elif run.status == RunStatus.WAITING:
            run.status, run.deferred_reason = RunStatus.SCHEDULED, None
            if run.id is not None:  # a run new in the batch's book has none yet: `book.write` returns it
                released.append(run.id)
    return released


def settle_expired_waits(session: Session, now: datetime) -> int:
    """Runs that waited for consent past their deadline end skipped, with the reason (one per run)."""
    expired = session.scalars(  # locked, skipping those a batch holds: the next tick settles them
        select(ActionRun)
        .where(ActionRun.status == RunStatus.WAITING, ActionRun.wait_until < now)
        .order_by(ActionRun.id)
        .with_for_update(skip_locked=True)
    )
    count = 0
    for run in expired:
        run.status, run.skip_reason, run.finished_at = RunStatus.SKIPPED, expire_wait(run.wait_until), now
        count += 1
    return count


def supersede_stage_plays(
    db: Database, session: Session, shopper: Shopper, cycle: str, now: datetime
) -> None:
    """Pending stage plays of the shopper planned for another stage entry than `cycle` (the current one)
    are cancelled before they act: seen whole, the shopper's history never had that entry (a win-back
    planned while only the oldest of three orders had arrived). Only those still pending once locked
    (`still_pending`): one a worker has taken since the batch read it is being carried out, and stays
    as the worker records it. Plays held out (a control group) stay: the entry they measured may have
    been real (the shopper left it since)."""
    stale = [
        run
        for run in _pending_runs(session, shopper)
        if run.play != "stage_sync" and run.play_stage is not None and run.cycle != cycle
    ]
    for run in still_pending(db, session, stale):
        run.status, run.finished_at = RunStatus.CANCELLED, now
        run.skip_reason = f"{SUPERSEDED}the shopper's stage entry is now {cycle}"


def skip_pending_marketing(session: Session, shopper_id: int, reason: str, now: datetime) -> None:
    """The address unsubscribed: pending marketing runs of the shopper will not be sent (recorded why)."""
    session.execute(
        update(ActionRun)
        .where(
            ActionRun.shopper_id == shopper_id,
            ActionRun.marketing.is_(True),
            ActionRun.status.in_((RunStatus.WAITING, RunStatus.SCHEDULED)),
        )
        .values(status=RunStatus.SKIPPED, skip_reason=reason, finished_at=now)
    )
