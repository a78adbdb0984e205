"""The periodic tick: time-based stage moves (engaged → prospect, → at_risk, → lapsed) as set-based SQL,
and re-queueing of deliveries whose job was lost.

`stage_case` is `stages.assess` written as one SQL CASE; tests hold the two to the same answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from sqlalchemy import and_, case, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from plugin import clock, queue, runs, storage
from plugin.models import Shop, Shopper, Stage, StageTransition

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    now: datetime
    moves: dict[str, int] = field(default_factory=dict)  # "from→to" -> count
    requeued: int = 0
    planned: int = 0
    dispatched: int = 0
    maintenance: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "now": self.now.isoformat(),
            "moves": self.moves,
            "planned_runs": self.planned,
            "dispatched_runs": self.dispatched,
            "requeued_deliveries": self.requeued,
            "maintenance": self.maintenance,
        }


def stage_case(shop: Shop, now: datetime):
    """The stage each shopper row should have as of `now`, as a SQL expression (mirrors stages.assess)."""
    active_since = now - timedelta(days=shop.engaged_days)
    no_orders = or_(Shopper.orders_count == 0, Shopper.last_order_at.is_(None))
    return case(
        (
            and_(
                no_orders, or_(Shopper.last_checkout_at >= active_since, Shopper.last_cart_at >= active_since)
            ),
            literal(Stage.ENGAGED.value),
        ),
        (no_orders, literal(Stage.PROSPECT.value)),
        (Shopper.last_order_at <= now - timedelta(days=shop.lapsed_days), literal(Stage.LAPSED.value)),
        (Shopper.last_order_at <= now - timedelta(days=shop.at_risk_days), literal(Stage.AT_RISK.value)),
        (
            or_(
                Shopper.orders_count >= shop.loyal_orders,
                and_(Shopper.orders_count >= shop.loyal_min_orders, Shopper.total_spent >= shop.loyal_spend),
            ),
            literal(Stage.LOYAL.value),
        ),
        (Shopper.orders_count >= 2, literal(Stage.REPEAT.value)),
        else_=literal(Stage.FIRST_TIME.value),
    )


def reason_case(shop: Shop, new_stage, otherwise: str = "Reclassified by the tick as of its clock"):
    """The reason recorded for a move the tick makes (the moves only time can cause)."""
    return case(
        (new_stage == Stage.LAPSED.value, literal(f"No order in the last {shop.lapsed_days} days (lapsed)")),
        (
            new_stage == Stage.AT_RISK.value,
            literal(f"No order in the last {shop.at_risk_days} days (at risk)"),
        ),
        (
            new_stage == Stage.PROSPECT.value,
            literal(f"No order yet and no checkout or cart activity in the last {shop.engaged_days} days"),
        ),
        else_=literal(otherwise),
    )


def move_stages(
    session: Session,
    shop: Shop,
    now: datetime,
    is_postgres: bool,
    cause: str = "tick",
    reason: str | None = None,
) -> dict[str, int]:
    """Apply every due move of one shop in three statements; return counts per move.

    The tick's moves (cause "tick") plan stage plays afterwards; the backfill's (cause "backfill") do not.
    """
    new_stage = stage_case(shop, now)
    why = reason_case(shop, new_stage, reason) if reason else reason_case(shop, new_stage)
    due = and_(Shopper.shop_id == shop.id, Shopper.deleted_at.is_(None), new_stage != Shopper.stage)
    if is_postgres:  # hold the rows against a worker restaging one of them meanwhile
        session.execute(select(Shopper.id).where(due).with_for_update())
    counts = {
        f"{old}→{new}": n
        for old, new, n in session.execute(
            select(Shopper.stage, new_stage, func.count(Shopper.id))
            .where(due)
            .group_by(Shopper.stage, new_stage)
        )
    }
    if not counts:
        return {}
    session.execute(
        insert(StageTransition).from_select(
            ["shop_id", "shopper_id", "from_stage", "to_stage", "at", "reason", "cause"],
            select(
                literal(shop.id),
                Shopper.id,
                Shopper.stage,
                new_stage,
                literal(now, StageTransition.at.type),
                why,
                literal(cause),
            ).where(due),
        )
    )
    session.execute(
        update(Shopper)
        .where(due)
        .values(stage=new_stage, stage_reason=why, stage_changed_at=now)
        .execution_options(synchronize_session=False)
    )
    return counts


def run_tick(
    db: storage.Database, connection: redis.Redis | None, now: datetime, stuck_after: int
) -> TickReport:
    """Move stages for every active shop as of `now`, then re-queue deliveries stuck in `received`."""
    report = TickReport(now=now)
    with db.session() as session:
        shops = list(session.scalars(select(Shop).where(Shop.active.is_(True)).order_by(Shop.id)))
    for shop in shops:
        with db.session() as session:
            for move, count in move_stages(session, shop, now, not db.is_sqlite).items():
                report.moves[move] = report.moves.get(move, 0) + count
            if report.moves:
                report.planned += runs.plan_tick_transitions(db, session, shop, now)
        log.info("tick moved stages for %s", shop.domain)
    if connection is not None:
        report.requeued = requeue_stuck(db, connection, now - timedelta(seconds=stuck_after), now)
    return report


def tick_app(app) -> TickReport:
    """Run the tick with an app's database, Redis and settings, as of the one clock; then queue the
    action runs that are due (delays elapsed, deferrals over, retries)."""
    from plugin.jobs import dispatch_due_runs

    now = clock.now()
    report = run_tick(
        app.extensions["lifecycle.db"],
        app.extensions["lifecycle.redis"],
        now,
        app.config["STUCK_AFTER_SECONDS"],
    )
    with app.app_context():
        report.dispatched = dispatch_due_runs(app.extensions["lifecycle.db"], now)
        report.maintenance = schedule_maintenance(app, now)
    return report


RECONCILE_EVERY = timedelta(minutes=15)
BACKFILL_POLL_AFTER = timedelta(minutes=5)


def schedule_maintenance(app, now: datetime) -> dict[str, int]:
    """Per installed shop: refresh tokens about to lapse, queue reconciliation when due, and wake a
    backfill whose finish webhook has not come (it asks Shopify for the operation's status itself)."""
    from plugin import oauth

    db, connection = app.extensions["lifecycle.db"], app.extensions["lifecycle.redis"]
    done = {"tokens_refreshed": 0, "reconciliations": 0, "backfills_polled": 0}
    try:
        done["tokens_refreshed"] = oauth.refresh_due_tokens(db, app.config)
    except oauth.TokenError as error:
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
                done["backfills_polled"] += queue.enqueue_maintenance(
                    connection, "plugin.jobs.backfill_step", shop.id, job_id=f"backfill-{shop.id}"
                )
        elif shop.last_reconciled_at is None or shop.last_reconciled_at <= now - RECONCILE_EVERY:
            done["reconciliations"] += queue.enqueue_maintenance(
                connection, "plugin.jobs.reconcile_shop", shop.id, job_id=f"reconcile-{shop.id}"
            )
    return done


def requeue_stuck(db: storage.Database, connection: redis.Redis, older_than: datetime, now: datetime) -> int:
    """Queue a drain for every slot holding deliveries left waiting (wake-up lost, or a retry now due)."""
    with db.session() as session:
        ids = storage.stuck_delivery_ids(session, older_than, now)
    for slot in sorted({queue.delivery_slot(delivery_id) for delivery_id in ids}):
        queue.enqueue_drain(connection, slot, force=True)
    return len(ids)
