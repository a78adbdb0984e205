"""The locks a batch of deliveries takes before it applies anything, in one global order.

Deliveries are claimed by id (`deliveries.claim_due_deliveries`), not by shop or shopper, so one busy
store uses every worker. Two batches may then touch the same shopper or order; each recounts its shoppers
from the stored orders, so the second must not read before the first has committed. We chose **locks in
ascending key order** over claiming by shopper hash: a batch takes, before its first write, every order
lock (transaction-scoped advisory locks, by (shop, order id) ascending) and then every shopper row lock
(by (shop, customer id) ascending), creating missing shopper rows first. The handlers' own
`shoppers.lock_order` / `lock_shopper` calls then find their locks already held (both are re-entrant),
and since every batch takes them in the same order, two batches wait for each other instead of
deadlocking. A lock the keys below cannot foresee (a cart linked to its shopper, a tag change) is taken
by its handler; if that ever closes a cycle, PostgreSQL aborts one batch and the failure split
(`pipeline.deliveries.process_batch`) applies it again in halves.

SQLite has one writer (BEGIN IMMEDIATE): nothing to take.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from sqlalchemy import and_, or_, select, text
from sqlalchemy.orm import Session

from plugin.store import column_insert
from plugin.store.db import Database
from plugin.store.models import Order, Shopper

# session.info keys: what this transaction holds already, so the handlers' lock calls skip a round trip
LOCKED_ORDERS, LOCKED_SHOPPERS = "batch_locked_orders", "batch_locked_shoppers"
BUYERS = "batch_buyers"  # (shop id, order id) → customer id of the locked orders stored with a buyer

ADVISORY_MODULUS = 2_147_483_647  # as shoppers.lock_order: the order id folded into a 32-bit key

_LOCK_ORDERS = text(
    "SELECT count(pg_advisory_xact_lock(s, o)) FROM "
    "(SELECT unnest(CAST(:shops AS integer[])) AS s, unnest(CAST(:orders AS integer[])) AS o "
    "ORDER BY 1, 2) AS k"
)


def _pairs(db: Database, shop_column, key_column, pairs: Iterable[tuple[int, int]]):
    """`(shop_column, key_column) IN pairs`, as one `shop = s AND key = ANY(:keys)` per shop: a statement
    text that does not grow with the batch (see `Database.among`; a tuple IN list writes two placeholders
    per pair) and that the planner answers from the (shop, key) index."""
    by_shop: dict[int, list[int]] = {}
    for shop, key in sorted(pairs):
        by_shop.setdefault(shop, []).append(key)
    return or_(*(and_(shop_column == shop, db.among(key_column, keys)) for shop, keys in by_shop.items()))


def lock_batch_keys(
    db: Database,
    session: Session,
    orders: Iterable[tuple[int, int]],
    customers: Iterable[tuple[int, int]],
) -> None:
    """Take the order locks ((shop id, order id) pairs) then the shopper locks ((shop id, customer id)
    pairs), each in ascending order; shoppers of stored orders named by id only (refunds, fulfillments)
    are locked too (not created). No-op on SQLite."""
    if db.is_sqlite:
        return
    order_keys = sorted({(shop, order % ADVISORY_MODULUS, order) for shop, order in orders})
    named = sorted(set(customers))
    buyers: dict[tuple[int, int], int] = {}
    if order_keys:
        session.execute(
            _LOCK_ORDERS,
            {"shops": [k[0] for k in order_keys], "orders": [k[1] for k in order_keys]},
        )
        buyers = _stored_buyers(db, session, [(k[0], k[2]) for k in order_keys])
    if named:  # created as the handlers would (they all create the shoppers their payloads name)
        column_insert.insert_rows(
            db,
            session,
            Shopper.__table__,
            [new_shopper(shop, customer) for shop, customer in named],
            skip_conflicts_on=("shop_id", "customer_id"),
        )
    customer_keys = sorted(set(named) | {(shop, customer) for (shop, _), customer in buyers.items()})
    session.info[LOCKED_ORDERS] = {(shop, order) for shop, _, order in order_keys}
    session.info[BUYERS] = buyers
    if not customer_keys:
        return
    locked = session.execute(
        select(Shopper.shop_id, Shopper.customer_id)
        .where(_pairs(db, Shopper.shop_id, Shopper.customer_id, customer_keys))
        .order_by(Shopper.shop_id, Shopper.customer_id)
        .with_for_update()
    )
    session.info[LOCKED_SHOPPERS] = {tuple(row) for row in locked}  # `lock_shopper` inserts none of these


def _stored_buyers(db: Database, session: Session, orders: list[tuple[int, int]]) -> dict:
    rows = session.execute(
        select(Order.shop_id, Order.order_id, Order.customer_id).where(
            _pairs(db, Order.shop_id, Order.order_id, orders),
            Order.customer_id.is_not(None),
        )
    )
    return {(shop, order): customer for shop, order, customer in rows}


def stored_buyers(session: Session) -> dict[tuple[int, int], int] | None:
    """The buyers of the orders this transaction locked, as stored when it locked them (None on SQLite,
    which takes no locks: ask the database)."""
    return session.info.get(BUYERS)


def new_shopper(shop_id: int, customer_id: int) -> dict:
    """The row of a customer seen first (`shoppers.lock_shopper`, the batch's locks and its book)."""
    return dict(
        shop_id=shop_id,
        customer_id=customer_id,
        orders_count=0,
        total_spent=Decimal(0),
        tag_events={},
        checkout_open=False,
        stage="prospect",
    )
