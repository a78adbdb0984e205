"""A batch's orders stored by table, not by delivery: one upsert of the orders, one insert of their
refunds, one update of the refunded sums, one update of the checkouts they complete.

The staleness guard holds as it does one delivery at a time (`handlers.orders.store_order`): versions of
one order within the batch are folded in delivery order first (a version older than the one held is
dropped, so the newest `updated_at` wins and a tie goes to the later delivery; PostgreSQL's
`ON CONFLICT DO UPDATE` refuses a key twice in one statement), and the upsert only overwrites a stored row
whose `source_updated_at` is not newer. Versions without an `updated_at` are left to the per-delivery path
(the fold and the guard could disagree about them). Rows are written in key order, so two batches
writing the same orders cannot deadlock.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from plugin.core.facts import is_stale
from plugin.store import column_insert
from plugin.store.db import Database
from plugin.store.models import Checkout, Order, Refund

# `orders` below are `shopify.payloads.OrderData` (the store room does not import the shopify room)
OrderData = Any

UPDATED_COLUMNS = (
    "customer_id",
    "name",
    "placed_at",
    "source_updated_at",
    "cancelled_at",
    "currency",
    "total_price",
    "financial_status",
    "fulfillment_status",
    "checkout_token",
    "line_items",
    "discount_codes",
)


def can_store_in_bulk(order: OrderData) -> bool:
    return order.updated_at is not None


def fold_versions(orders: list[OrderData]) -> list[OrderData]:
    """One version per order id, as applying them in this (delivery) order would leave it; by id."""
    held: dict[int, OrderData] = {}
    for order in orders:
        current = held.get(order.id)
        if current is None or not is_stale(current.updated_at, order.updated_at):
            held[order.id] = order
    return [held[order_id] for order_id in sorted(held)]


def store_orders(
    db: Database, session: Session, shop_id: int, orders: list[OrderData], refunds: list = ()
) -> None:
    """Store the batch's orders of one shop (all versions, any order), their refunds and those of
    refunds/create deliveries (`refunds`), refunded sums and completed checkouts, a statement per table."""
    if not orders and not refunds:
        return
    if orders:
        column_insert.insert_rows(
            db,
            session,
            Order.__table__,
            [_order_row(shop_id, order) for order in fold_versions(orders)],
            upsert=column_insert.Upsert(
                ("shop_id", "order_id"), UPDATED_COLUMNS, newer_by="source_updated_at"
            ),
        )
    refunds = {r.id: r for r in [*(r for order in orders for r in order.refunds), *refunds]}
    if refunds:
        session.execute(
            db.insert(Refund.__table__).on_conflict_do_nothing(index_elements=["shop_id", "refund_id"]),
            [
                dict(
                    shop_id=shop_id,
                    refund_id=r.id,
                    order_id=r.order_id,
                    amount=r.amount,
                    created_at=r.created_at,
                )
                for _, r in sorted(refunds.items())
            ],
        )
    _refresh_refunded(
        db, session, shop_id, sorted({o.id for o in orders} | {r.order_id for r in refunds.values()})
    )
    completions = {}
    for order in orders:  # the first delivery naming a checkout completes it, as one at a time
        if order.checkout_token and order.checkout_token not in completions:
            completions[order.checkout_token] = order.created_at
    if completions:
        checkouts = Checkout.__table__
        session.execute(
            update(checkouts)
            .where(
                checkouts.c.shop_id == shop_id,
                checkouts.c.token == bindparam("checkout_token"),
                checkouts.c.completed_at.is_(None),
            )
            .values(completed_at=bindparam("at")),
            [{"checkout_token": token, "at": at} for token, at in sorted(completions.items())],
        )


def _refresh_refunded(db: Database, session: Session, shop_id: int, order_ids: list[int]) -> None:
    total = (
        select(func.coalesce(func.sum(Refund.amount), 0))
        .where(Refund.shop_id == Order.shop_id, Refund.order_id == Order.order_id)
        .scalar_subquery()
    )
    session.execute(
        update(Order)
        .where(
            Order.shop_id == shop_id,
            db.among(Order.order_id, order_ids),
            Order.refunded.is_distinct_from(total),  # most have no refund: no new row version for them
        )
        .values(refunded=total)
        .execution_options(synchronize_session=False)
    )


def _order_row(shop_id: int, order: OrderData) -> dict:
    return dict(
        shop_id=shop_id,
        order_id=order.id,
        customer_id=order.customer.id if order.customer else None,
        name=order.name,
        placed_at=order.processed_at or order.created_at,
        source_updated_at=order.updated_at,
        cancelled_at=order.cancelled_at,
        currency=order.currency,
        total_price=order.total_price if order.total_price is not None else Decimal(0),
        refunded=Decimal(0),
        financial_status=order.financial_status,
        fulfillment_status=order.fulfillment_status,
        checkout_token=order.checkout_token,
        line_items=[
            {
                "product_id": li.product_id,
                "variant_id": li.variant_id,
                "quantity": li.quantity,
                "price": str(li.price),
            }
            for li in order.line_items
        ],
        discount_codes=order.discount_codes,
    )
