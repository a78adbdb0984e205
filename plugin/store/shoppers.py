"""A shopper's stored row: lock it, recount it from stored orders, restage it, and read it as the core's
facts (for stages) and profile (for rules).

Counts are derived from the `orders` and `refunds` rows, never incremented, so the same order arriving
under orders/create, orders/paid and orders/updated (or twice) counts once, and a cancellation or refund
arriving in any order settles to the same totals.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from sqlalchemy import and_, case, exists, func, or_, select, text, update
from sqlalchemy.orm import Session

from plugin.clock import aware
from plugin.core.facts import ShopperFacts, accepts_marketing
from plugin.core.rules import Profile
from plugin.store import batch_locks, shopper_book
from plugin.store.db import Database
from plugin.store.models import Checkout, Order, Refund, Shop, Shopper


class ShopWork(Protocol):
    """What shopper upkeep reads of a handler's context: the database, the transaction, the shop."""

    db: Database
    session: Session
    shop: Shop


def order_net(refunded=Order.refunded):
    """The SQL net value of one order: total less `refunded`, 0 for an order refunded in full or more."""
    net = Order.total_price - refunded
    return case((net > 0, net), else_=0)


def net_spend(refunded=Order.refunded):
    """The SQL sum of the kept orders' net value (`order_net`), shared by the recount, the
    as-of-an-event facts and the history import."""
    return func.coalesce(func.sum(order_net(refunded)), 0)


def lock_shopper(ctx: ShopWork, customer_id: int) -> Shopper:
    """Fetch the shopper (creating it if new) with a row lock held until commit.

    PostgreSQL: SELECT ... FOR UPDATE. SQLite: the whole transaction already holds the write lock
    (BEGIN IMMEDIATE, see storage), which serialises writers just as well.
    """
    book = shopper_book.of(ctx.session)
    if book is not None and (held := book.shopper(ctx.shop.id, customer_id)) is not None:
        return held  # read (and, on PostgreSQL, locked) with the batch's other shoppers
    locked = select(Shopper).where(Shopper.shop_id == ctx.shop.id, Shopper.customer_id == customer_id)
    locked = locked.with_for_update().execution_options(populate_existing=True)
    if (ctx.shop.id, customer_id) in ctx.session.info.get(batch_locks.LOCKED_SHOPPERS, ()):
        shopper = ctx.session.scalars(locked).one_or_none()  # the batch locked it (store.batch_locks)
        if shopper is not None:  # (None: erased since, earlier in the batch)
            return shopper
    ctx.session.execute(
        ctx.db.insert(Shopper.__table__)
        .values(**batch_locks.new_shopper(ctx.shop.id, customer_id))
        .on_conflict_do_nothing(index_elements=["shop_id", "customer_id"])
    )
    return ctx.session.scalars(locked).one()


def lock_order(ctx: ShopWork, order_id: int) -> None:
    """Serialise the handlers of one order until commit, whichever topic brought it.

    A refund can arrive while its order's first delivery is still being processed: without this, the
    refund's handler finds no order (not yet committed) and the order's handler sums no refund (not yet
    committed), and the refund is never subtracted. PostgreSQL: a transaction-scoped advisory lock taken
    before the shopper's row lock (always in that order, so two handlers cannot deadlock). SQLite: the
    transaction already holds the database's write lock.
    """
    if ctx.db.is_sqlite or (ctx.shop.id, order_id) in ctx.session.info.get(batch_locks.LOCKED_ORDERS, ()):
        return
    ctx.session.execute(
        text("SELECT pg_advisory_xact_lock(:shop, :order)"),
        {"shop": ctx.shop.id, "order": order_id % 2_147_483_647},
    )


def recount_orders(ctx: ShopWork, shopper: Shopper) -> None:
    """Recompute order count, net spend and first/last order time from the stored orders.

    Orders are flushed when stored and refunds inserted directly, so nothing pending matters here: no
    autoflush (which would only write the shopper row early, and again later)."""
    book = shopper_book.holding(ctx.session, shopper)
    if book is not None:
        counts = book.counts(shopper)
        shopper.orders_count, shopper.total_spent = counts.orders_count, counts.total_spent
        shopper.first_order_at, shopper.last_order_at = counts.first_order_at, counts.last_order_at
        return
    with ctx.session.no_autoflush:
        row = ctx.session.execute(
            select(
                func.count(Order.id),
                net_spend(),
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
    shopper.first_order_at = aware(row[2])
    shopper.last_order_at = aware(row[3])


def kept_orders(session: Session, shop_id: int, shopper: Shopper) -> list[tuple[datetime, Decimal]]:
    """The shopper's kept orders as (placed at, net value), in the order they were placed: from the
    batch's book when it holds the shopper, else from the stored orders (as `recount_orders` counts)."""
    book = shopper_book.holding(session, shopper)
    if book is not None:
        return sorted(book.kept_orders(shopper))
    with session.no_autoflush:
        rows = session.execute(
            select(Order.placed_at, order_net()).where(
                Order.shop_id == shop_id,
                Order.customer_id == shopper.customer_id,
                Order.cancelled_at.is_(None),
            )
        ).all()
    return sorted((aware(placed), Decimal(value)) for placed, value in rows)


def refresh_refunded(ctx: ShopWork, order_id: int) -> None:
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


def refresh_checkout_open(ctx: ShopWork, shopper: Shopper) -> None:
    """A shopper has an open checkout while one is neither completed nor closed."""
    book = shopper_book.holding(ctx.session, shopper)
    if book is not None:
        shopper.checkout_open = book.checkout_open(shopper)
        return
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


def facts_of(shopper: Shopper) -> ShopperFacts:
    """The facts classification reads."""
    activity = [t for t in (shopper.last_checkout_at, shopper.last_cart_at) if t is not None]
    return ShopperFacts(
        orders_count=shopper.orders_count or 0,
        total_spent=shopper.total_spent or 0,
        last_order_at=shopper.last_order_at,
        last_activity_at=max(activity) if activity else None,
        currency=shopper.currency,
    )


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
        consent_at=shopper.consent_updated_at,
    )


def profile_as_of(session: Session, shopper: Shopper, at: datetime) -> Profile:
    """The shopper's profile with its order facts as of `at` (an event's time), from the stored orders:
    orders placed before `at` and not cancelled by then, net of refunds made by then. A function of the
    stored data, so a play reads the same facts whatever order the deliveries came in."""
    book = shopper_book.holding(session, shopper)
    if book is not None:
        counts = book.counts_as_of(shopper, at)
        return replace(
            profile_of(shopper),
            orders_count=counts.orders_count,
            total_spent=counts.total_spent,
            last_order_at=counts.last_order_at,
        )
    refunded = (
        select(func.coalesce(func.sum(Refund.amount), 0))
        .where(Refund.shop_id == Order.shop_id, Refund.order_id == Order.order_id, Refund.created_at < at)
        .scalar_subquery()
    )
    with session.no_autoflush:
        count, spent, last = session.execute(
            select(
                func.count(Order.id),
                net_spend(refunded),
                func.max(Order.placed_at),
            ).where(
                Order.shop_id == shopper.shop_id,
                Order.customer_id == shopper.customer_id,
                Order.placed_at < at,
                or_(Order.cancelled_at.is_(None), Order.cancelled_at > at),
            )
        ).one()
    return replace(
        profile_of(shopper),
        orders_count=count,
        total_spent=Decimal(spent).quantize(Decimal("0.01")),
        last_order_at=aware(last),
    )


def current_shoppers(shop_id: int):
    """The shop's shoppers that count: all but those deleted in Shopify (a deleted customer keeps its
    row, with `deleted_at`, for its orders and history)."""
    return and_(Shopper.shop_id == shop_id, Shopper.deleted_at.is_(None))


def count_by_stage(session: Session, shop_id: int) -> dict[str, int]:
    """How many current shoppers each stage holds (stages with none are absent)."""
    rows = session.execute(
        select(Shopper.stage, func.count(Shopper.id)).where(current_shoppers(shop_id)).group_by(Shopper.stage)
    )
    return dict(rows.all())
