"""The action ledger's storage side: planning runs from triggers into `action_runs` (once per idempotency
key), and picking the runs that are due.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from plugin.core import rules as rules_module
from plugin.core.facts import accepts_marketing
from plugin.core.policy import CONSENT_WAIT, PolicySnapshot, consent_gate, expire_wait
from plugin.core.rules import PlannedRun, Profile, Trigger
from plugin.store.db import Database
from plugin.store.models import (
    ActionRun,
    Checkout,
    Order,
    RunStatus,
    Shop,
    Shopper,
    StageTransition,
    StockSubscription,
)
from plugin.store.shoppers import profile_as_of, profile_of
from plugin.store.shops import shop_rules
from plugin.store.suppressions import is_suppressed

log = logging.getLogger(__name__)


PENDING = (RunStatus.WAITING, RunStatus.SCHEDULED, RunStatus.QUEUED)


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
    return [run_id for run in planned if (run_id := store_run(db, session, shop.id, run, now)) is not None]


def store_run(db: Database, session: Session, shop_id: int, run: PlannedRun, now: datetime) -> int | None:
    """Insert a planned run unless its idempotency key exists; return the new id or None.

    A run whose rule raised while planning (`run.error`) is stored failed, with the error as its reason:
    the merchant sees it on the timeline, and the delivery that triggered it is processed as usual.
    """
    table = ActionRun.__table__
    if run.error is not None:
        status, finished_at, reason = RunStatus.FAILED, now, run.error
    elif run.held_out:
        status, finished_at = RunStatus.HELD_OUT, now
        reason = "held out: in the rule's control group, nothing sent"
    elif run.gate is not None and run.gate.status == RunStatus.SKIPPED:
        status, finished_at, reason = RunStatus.SKIPPED, now, run.gate.why
    else:
        status, finished_at, reason = RunStatus.SCHEDULED, None, None
    values = _run_values(shop_id, run, now, status, finished_at, reason)
    statement = db.insert(table).values(**values).on_conflict_do_nothing(index_elements=["idempotency_key"])
    created = session.execute(statement.returning(table.c.id)).scalar()
    if created is not None:
        return created
    # The key exists. A run cancelled as superseded comes back when its trigger holds again (the shopper
    # is in that stage entry again, a late cancellation restored a welcome's facts): one run per key.
    revive = {k: values[k] for k in ("status", "finished_at", "skip_reason", "deferred_reason", "due_at")}
    return session.execute(
        update(table)
        .where(
            table.c.idempotency_key == run.idempotency_key,
            table.c.status == RunStatus.CANCELLED,
            table.c.skip_reason.like(SUPERSEDED + "%"),
        )
        .values(**revive)
        .returning(table.c.id)
    ).scalar()


def _run_values(shop_id: int, run: PlannedRun, now: datetime, status, finished_at, reason) -> dict:
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
) -> list[int]:
    """Plan the plays of entering the shopper's current stage, and the write-back of the stage to Shopify."""
    created = plan_stage_plays(db, session, shop, shopper, transition_at, source, now, rules, consent_wait)
    if not shop.access_token_encrypted:
        return created  # no token, no Admin API: nothing to write back
    sync = store_run(db, session, shop.id, stage_sync_run(shop.id, shopper.id, transition_at, source), now)
    return created + ([sync] if sync is not None else [])


TIME_STAGES = ("at_risk", "lapsed")


def stage_cycle(shopper: Shopper) -> str:
    """The stage entry a stage play belongs to, from the shopper's facts (not from the order deliveries
    came in): falling at risk or lapsing is counted from the last kept order, so a shopper who buys again
    and falls again is in a new cycle, and the same fall seen twice (or seen while older orders were still
    arriving) is one; other stages by the order count at entry."""
    if shopper.stage in TIME_STAGES and shopper.last_order_at is not None:
        return f"{shopper.stage}:{shopper.last_order_at.isoformat()}"
    return f"{shopper.stage}:{shopper.orders_count or 0}"


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
) -> list[int]:
    """Plan the rules of the shopper's current stage entry; cancel pending plays of other entries."""
    cycle = stage_cycle(shopper)
    supersede_stage_plays(session, shopper, cycle, now)
    trigger = Trigger(name=f"stage:{shopper.stage}", at=at, cycle=cycle, source=source)
    return plan(db, session, shop, profile_of(shopper), trigger, now, rules, consent_wait)


SUPERSEDED = "superseded: "


def recheck_conditions(
    session: Session, shop: Shop, shopper: Shopper, since: datetime, now: datetime
) -> None:
    """An order placed at `since` arrived (or changed): pending plays of the shopper's later events whose
    rule's conditions no longer hold as of their event's time are cancelled as superseded (a welcome
    planned before an order placed before the consent had arrived)."""
    pending = list(
        session.scalars(
            select(ActionRun).where(
                ActionRun.shopper_id == shopper.id,
                ActionRun.status.in_(PENDING),
                ActionRun.rule_id.is_not(None),
                ActionRun.event_at > since,
            )
        )
    )
    if not pending:
        return
    rules = dict(shop_rules(session, shop.id))
    for run in pending:
        rule = rules.get(run.rule_id)
        if rule is None or run.play_stage is not None or not rule["conditions"]:
            continue
        profile = profile_as_of(session, shopper, run.event_at)
        if not all(rules_module.condition_holds(c, profile, now) for c in rule["conditions"]):
            run.status, run.finished_at = RunStatus.CANCELLED, now
            run.skip_reason = SUPERSEDED + "its conditions do not hold as of its event, with later orders"


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
            statement, [_run_values(shop.id, run, now, RunStatus.SCHEDULED, None, None) for run in planned]
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


def due_run_ids(session: Session, now: datetime, limit: int = 500) -> list[int]:
    """Scheduled runs whose time has come, highest priority first; marked queued in the same statement."""
    ids = list(
        session.scalars(
            select(ActionRun.id)
            .where(ActionRun.status == RunStatus.SCHEDULED, ActionRun.due_at <= now)
            .order_by(ActionRun.priority.desc(), ActionRun.due_at)
            .limit(limit)
        )
    )
    if ids:
        session.execute(
            update(ActionRun)
            .where(ActionRun.id.in_(ids), ActionRun.status == RunStatus.SCHEDULED)
            .values(status=RunStatus.QUEUED)
        )
    return ids


def cancel_pending(session: Session, shop_id: int, reason: str, now: datetime) -> int:
    """Cancel every pending run of a shop (uninstall)."""
    result = session.execute(
        update(ActionRun)
        .where(ActionRun.shop_id == shop_id, ActionRun.status.in_(PENDING))
        .values(status=RunStatus.CANCELLED, skip_reason=reason, finished_at=now)
    )
    return result.rowcount


def apply_consent(session: Session, shopper: Shopper, now: datetime) -> list[int]:
    """The shopper's consent changed: put each pending marketing run where `policy.consent_gate` says
    (waiting → scheduled when consent came by its deadline, scheduled → skipped on a withdrawal after its
    event, or back to waiting). Runs already queued to a worker are left to the send-time check. Returns
    how many became scheduled (the caller dispatches them after commit)."""
    released = []
    pending = session.scalars(
        select(ActionRun).where(
            ActionRun.shopper_id == shopper.id,
            ActionRun.marketing.is_(True),
            ActionRun.status.in_((RunStatus.WAITING, RunStatus.SCHEDULED)),
            ActionRun.event_at.is_not(None),
            ActionRun.wait_until.is_not(None),
        )
    )
    for run in pending:
        consents = accepts_marketing(shopper) and shopper.deleted_at is None
        gate = consent_gate(consents, shopper.consent_updated_at, run.event_at, run.wait_until)
        if gate.status == RunStatus.SKIPPED:
            run.status, run.skip_reason, run.finished_at = RunStatus.SKIPPED, gate.why, now
        elif gate.status == RunStatus.WAITING:
            run.status, run.deferred_reason = RunStatus.WAITING, gate.why
        elif run.status == RunStatus.WAITING:
            run.status, run.deferred_reason = RunStatus.SCHEDULED, None
            released.append(run.id)
    return released


def settle_expired_waits(session: Session, now: datetime) -> int:
    """Runs that waited for consent past their deadline end skipped, with the reason (one per run)."""
    expired = session.scalars(
        select(ActionRun).where(ActionRun.status == RunStatus.WAITING, ActionRun.wait_until < now)
    )
    count = 0
    for run in expired:
        run.status, run.skip_reason, run.finished_at = RunStatus.SKIPPED, expire_wait(run.wait_until), now
        count += 1
    return count


def supersede_stage_plays(session: Session, shopper: Shopper, cycle: str, now: datetime) -> None:
    """Pending stage plays of the shopper planned for another stage entry than `cycle` (the current one)
    are cancelled before they act: seen whole, the shopper's history never had that entry (a win-back
    planned while only the oldest of three orders had arrived)."""
    pending = session.scalars(
        select(ActionRun).where(ActionRun.shopper_id == shopper.id, ActionRun.status.in_(PENDING))
    )
    for run in pending:
        if run.play != "stage_sync" and run.play_stage is not None and run.cycle != cycle:
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


def policy_snapshot(session: Session, shop: Shop, run: ActionRun, shopper: Shopper | None, now: datetime):
    """Load what `core.policy.decide` reads for this run, as of `now`."""
    context = run.context or {}
    email = run.recipient_email or (shopper.email if shopper else None)
    values: dict = dict(
        shop_paused=(shop.pause_reason or "the shop is paused") if shop.paused_at else None,
        cap_per_day=shop.cap_per_day,
        cap_per_week=shop.cap_per_week,
        quiet_start_hour=shop.quiet_start_hour,
        quiet_end_hour=shop.quiet_end_hour,
        shop_timezone=shop.timezone,
        suppressed=bool(email and run.marketing and is_suppressed(session, shop.id, email)),
    )
    if shopper is not None:
        values.update(
            shopper_exists=True,
            shopper_deleted=shopper.deleted_at is not None,
            shopper_stage=shopper.stage,
            shopper_email=shopper.email,
            shopper_consents=accepts_marketing(shopper),
            shopper_timezone=shopper.timezone,
            last_order_at=shopper.last_order_at,
        )
        if run.marketing and run.action == "send_email":
            values.update(_cap_facts(session, run, now))
    values.update(_subject_facts(session, shop, context))
    return PolicySnapshot(**values)


def _cap_facts(session: Session, run: ActionRun, now: datetime) -> dict:
    """The shopper's other marketing sends of the last 7 days, and higher-priority runs due now."""
    others = (
        ActionRun.shopper_id == run.shopper_id,
        ActionRun.marketing.is_(True),
        ActionRun.action == "send_email",
        ActionRun.id != run.id,
    )
    sent = session.scalars(
        select(ActionRun.sent_at).where(*others, ActionRun.sent_at > now - timedelta(days=7))
    )
    higher = session.scalar(
        select(func.count(ActionRun.id)).where(
            *others,
            ActionRun.status.in_(PENDING),
            ActionRun.due_at <= now,
            ActionRun.priority > run.priority,
        )
    )
    return {"recent_sends": tuple(sent), "higher_priority_due": higher or 0}


def _subject_facts(session: Session, shop: Shop, context: dict) -> dict:
    """The state of what the run is about: its checkout, its order, its back-in-stock subscription."""
    facts: dict = {}
    if "checkout_token" in context:
        checkout = session.scalar(
            select(Checkout).where(Checkout.shop_id == shop.id, Checkout.token == context["checkout_token"])
        )
        if checkout is not None:
            facts.update(
                checkout_completed=checkout.completed_at is not None,
                checkout_closed=checkout.closed_at is not None,
            )
    if "order_id" in context:
        order = session.scalar(
            select(Order).where(Order.shop_id == shop.id, Order.order_id == context["order_id"])
        )
        if order is not None:
            facts.update(
                order_cancelled=order.cancelled_at is not None,
                order_refunded=bool(order.refunded and order.refunded >= order.total_price),
            )
    if "subscription_id" in context:
        subscription = session.get(StockSubscription, context["subscription_id"])
        facts["subscription_open"] = subscription is not None and subscription.notified_at is None
    return facts
