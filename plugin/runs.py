"""The action ledger's storage side: a shop's rules, planning runs from triggers into `action_runs`
(once per idempotency key), and picking the runs that are due.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from plugin import rules as rules_module
from plugin.models import ActionRun, Rule, RunStatus, Shop, Shopper, StageTransition
from plugin.rules import PlannedRun, Profile, Trigger
from plugin.shoppers import accepts_marketing
from plugin.storage import Database

log = logging.getLogger(__name__)

PENDING = (RunStatus.SCHEDULED, RunStatus.QUEUED)


def ensure_default_rules(session: Session, shop: Shop, now: datetime) -> None:
    """Give a newly installed shop the default plays (existing rules are left as the merchant set them)."""
    have = set(session.scalars(select(Rule.key).where(Rule.shop_id == shop.id)))
    for definition in rules_module.DEFAULT_RULES:
        if definition["key"] in have:
            continue
        rule = rules_module.load_rule(definition)
        session.add(
            Rule(shop_id=shop.id, key=rule["key"], definition=rule, enabled=rule["enabled"], updated_at=now)
        )
    session.flush()
    session.info.pop("shop_rules", None)


def shop_rules(session: Session, shop_id: int) -> list[tuple[int, dict]]:
    """(rule id, definition) of every rule of a shop, `enabled` taken from the column.

    Read once per transaction (a worker's batch plans many runs against the same rules).
    """
    cache = session.info.setdefault("shop_rules", {})
    if shop_id not in cache:
        rows = session.execute(select(Rule.id, Rule.definition, Rule.enabled).where(Rule.shop_id == shop_id))
        cache[shop_id] = [(rule_id, dict(d, enabled=enabled)) for rule_id, d, enabled in rows]
    return cache[shop_id]


def profile_of(shopper: Shopper) -> Profile:
    return Profile(
        shopper_id=shopper.id,
        orders_count=shopper.orders_count or 0,
        total_spent=shopper.total_spent or 0,
        stage=shopper.stage,
        accepts_marketing=accepts_marketing(shopper) and shopper.deleted_at is None,
        locale=shopper.locale,
        last_order_at=shopper.last_order_at,
        tags=tuple(shopper.tags),
        email=shopper.email,
    )


def plan(
    db: Database,
    session: Session,
    shop: Shop,
    profile: Profile,
    trigger: Trigger,
    now: datetime,
    rules: list[tuple[int, dict]] | None = None,
) -> list[int]:
    """Plan and store the runs a trigger creates; return the ids of the runs created now (not duplicates)."""
    planned = rules_module.plan_runs(
        shop.id, rules if rules is not None else shop_rules(session, shop.id), profile, trigger, now
    )
    return [run_id for run in planned if (run_id := store_run(db, session, shop.id, run, now)) is not None]


def store_run(db: Database, session: Session, shop_id: int, run: PlannedRun, now: datetime) -> int | None:
    """Insert a planned run unless its idempotency key exists; return the new id or None."""
    table = ActionRun.__table__
    values = dict(
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
        status=RunStatus.HELD_OUT if run.held_out else RunStatus.SCHEDULED,
        finished_at=now if run.held_out else None,
        skip_reason="held out: in the rule's control group, nothing sent" if run.held_out else None,
    )
    statement = db.insert(table).values(**values).on_conflict_do_nothing(index_elements=["idempotency_key"])
    return session.execute(statement.returning(table.c.id)).scalar()


def plan_stage_entry(
    db: Database,
    session: Session,
    shop: Shop,
    shopper: Shopper,
    transition_at: datetime,
    source: str,
    now: datetime,
    rules=None,
) -> list[int]:
    """Plan the plays of entering the shopper's current stage, and the write-back of the stage to Shopify.

    The cycle of a stage play is the order count at entry: a shopper who buys again and falls at risk
    again is in a new cycle and may get a new win-back; the same fall seen twice is one.
    """
    trigger = Trigger(
        name=f"stage:{shopper.stage}",
        at=transition_at,
        cycle=f"{shopper.stage}:{shopper.orders_count or 0}",
        source=source,
    )
    created = plan(db, session, shop, profile_of(shopper), trigger, now, rules)
    if not shop.access_token_encrypted:
        return created  # no token, no Admin API: nothing to write back
    sync = store_run(db, session, shop.id, stage_sync_run(shop.id, shopper, transition_at, source), now)
    return created + ([sync] if sync is not None else [])


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


def stage_sync_run(shop_id: int, shopper: Shopper, at: datetime, source: str) -> PlannedRun:
    """Write the stage back to Shopify (tag lifecycle:<stage>, metafield lifecycle.stage)."""
    cycle = f"{shopper.stage}@{at.isoformat()}"
    return system_run(shop_id, "stage_sync", "sync_stage", shopper.id, cycle, at, source)


def plan_tick_transitions(db: Database, session: Session, shop: Shop, now: datetime) -> int:
    """Plan the stage plays of every move the tick just made in this shop (cause 'tick', at now)."""
    rules = shop_rules(session, shop.id)
    rows = session.execute(
        select(StageTransition.at, Shopper)
        .join(Shopper, Shopper.id == StageTransition.shopper_id)
        .where(StageTransition.shop_id == shop.id, StageTransition.cause == "tick", StageTransition.at == now)
    ).all()
    return sum(
        len(plan_stage_entry(db, session, shop, shopper, at, "tick", now, rules)) for at, shopper in rows
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


def skip_pending_marketing(session: Session, shopper_id: int, reason: str, now: datetime) -> None:
    """Consent withdrawn: pending marketing runs of the shopper will not be sent (recorded why)."""
    session.execute(
        update(ActionRun)
        .where(
            ActionRun.shopper_id == shopper_id,
            ActionRun.marketing.is_(True),
            ActionRun.status == RunStatus.SCHEDULED,
        )
        .values(status=RunStatus.SKIPPED, skip_reason=reason, finished_at=now)
    )
