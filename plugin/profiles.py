"""A shopper's stored profile: lock it, recount it from stored orders, and restage it.

Counts are derived from the `orders` and `refunds` rows, never incremented, so the same order arriving
under orders/create, orders/paid and orders/updated (or twice) counts once, and a cancellation or refund
arriving in any order settles to the same totals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import case, exists, func, select, text, update
from sqlalchemy.orm import Session

from plugin.models import Checkout, Order, Refund, Shop, Shopper, StageTransition
from plugin.shoppers import facts_of
from plugin.stages import Thresholds, assess
from plugin.storage import Database


@dataclass
class HandlerContext:
    """What a handler needs: the session of this delivery's transaction, the shop, and the one clock."""

    db: Database
    session: Session
    shop: Shop | None
    topic: str
    now: datetime
    triggered_at: datetime | None = None
    delivery_id: int | None = None
    shop_domain: str | None = None  # the verified header's, even when the shop is not installed
    planned_runs: list[int] = field(default_factory=list)  # queued after commit when due now
    jobs: list[tuple[str, tuple, str]] = field(default_factory=list)  # (function, args, job id), after commit

    def trigger(self, shopper: Shopper, name: str, at: datetime | None, cycle: str, **context) -> None:
        """Plan the rules this event triggers for the shopper (at: when it happened in the store)."""
        from plugin import runs
        from plugin.rules import Trigger

        event = Trigger(
            name=name,
            at=at or self.triggered_at or self.now,
            cycle=cycle,
            source=self.topic,
            context={k: v for k, v in context.items() if v is not None},
        )
        self.planned_runs += runs.plan(
            self.db, self.session, self.shop, runs.profile_of(shopper), event, self.now
        )


def lock_shopper(ctx: HandlerContext, customer_id: int) -> Shopper:
    """Fetch the shopper (creating it if new) with a row lock held until commit.

    PostgreSQL: SELECT ... FOR UPDATE. SQLite: the whole transaction already holds the write lock
    (BEGIN IMMEDIATE, see storage), which serialises writers just as well.
    """
    table = Shopper.__table__
    ctx.session.execute(
        ctx.db.insert(table)
        .values(
            shop_id=ctx.shop.id,
            customer_id=customer_id,
            orders_count=0,
            total_spent=Decimal(0),
            tag_events={},
            checkout_open=False,
            stage="prospect",
        )
        .on_conflict_do_nothing(index_elements=["shop_id", "customer_id"])
    )
    return ctx.session.scalars(
        select(Shopper)
        .where(Shopper.shop_id == ctx.shop.id, Shopper.customer_id == customer_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def lock_order(ctx: HandlerContext, order_id: int) -> None:
    """Serialise the handlers of one order until commit, whichever topic brought it.

    A refund can arrive while its order's first delivery is still being processed: without this, the
    refund's handler finds no order (not yet committed) and the order's handler sums no refund (not yet
    committed), and the refund is never subtracted. PostgreSQL: a transaction-scoped advisory lock taken
    before the shopper's row lock (always in that order, so two handlers cannot deadlock). SQLite: the
    transaction already holds the database's write lock.
    """
    if ctx.db.is_sqlite:
        return
    ctx.session.execute(
        text("SELECT pg_advisory_xact_lock(:shop, :order)"),
        {"shop": ctx.shop.id, "order": order_id % 2_147_483_647},
    )


def recount_orders(ctx: HandlerContext, shopper: Shopper) -> None:
    """Recompute order count, net spend and first/last order time from the stored orders.

    Orders are flushed when stored and refunds inserted directly, so nothing pending matters here: no
    autoflush (which would only write the shopper row early, and again later)."""
    net = Order.total_price - Order.refunded
    with ctx.session.no_autoflush:
        row = ctx.session.execute(
            select(
                func.count(Order.id),
                func.coalesce(func.sum(case((net > 0, net), else_=0)), 0),
                func.min(Order.placed_at),
                func.max(Order.placed_at),
            ).where(
                Order.shop_id == ctx.shop.id,
                Order.customer_id == shopper.customer_id,
                Order.cancelled_at.is_(None),
            )
        ).one()
    shopper.orders_count = row[0]
    shopper.total_spent = Decimal(row[1]).quantize(Decimal("0.01"))
    shopper.first_order_at = _aware(row[2])
    shopper.last_order_at = _aware(row[3])


def refresh_refunded(ctx: HandlerContext, order_id: int) -> None:
    """Set an order's refunded amount to the sum of its distinct refunds (one UPDATE, in SQL)."""
    total = (
        select(func.coalesce(func.sum(Refund.amount), 0))
        .where(Refund.shop_id == ctx.shop.id, Refund.order_id == order_id)
        .scalar_subquery()
    )
    ctx.session.execute(  # "fetch": RETURNING tells the session which loaded Order to read anew
        update(Order)
        .where(Order.shop_id == ctx.shop.id, Order.order_id == order_id)
        .values(refunded=total)
        .execution_options(synchronize_session="fetch")
    )


def refresh_checkout_open(ctx: HandlerContext, shopper: Shopper) -> None:
    """A shopper has an open checkout while one is neither completed nor closed."""
    shopper.checkout_open = bool(
        ctx.session.scalar(
            select(
                exists().where(
                    Checkout.shop_id == ctx.shop.id,
                    Checkout.customer_id == shopper.customer_id,
                    Checkout.completed_at.is_(None),
                    Checkout.closed_at.is_(None),
                )
            )
        )
    )


def restage(ctx: HandlerContext, shopper: Shopper) -> None:
    """Reclassify the shopper as of ctx.now; record a transition when the stage changes."""
    assessment = assess(facts_of(shopper), ctx.now, Thresholds.of(ctx.shop))
    shopper.stage_reason = assessment.reason
    if shopper.stage == assessment.stage and shopper.stage_changed_at is not None:
        return
    ctx.session.add(
        StageTransition(
            shop_id=ctx.shop.id,
            shopper_id=shopper.id,
            from_stage=shopper.stage if shopper.stage_changed_at is not None else None,
            to_stage=assessment.stage,
            at=ctx.now,
            reason=assessment.reason,
            cause=ctx.topic,
        )
    )
    shopper.stage = assessment.stage
    shopper.stage_changed_at = ctx.now
    from plugin import runs

    ctx.session.flush()
    ctx.planned_runs += runs.plan_stage_entry(
        ctx.db, ctx.session, ctx.shop, shopper, ctx.now, ctx.topic, ctx.now
    )


def _aware(value):
    # Aggregates bypass the column type on SQLite (naive strings come back as text or naive datetimes).
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
