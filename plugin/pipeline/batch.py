"""Applying one claimed batch of deliveries inside one transaction: parse every body first, take the
batch's locks in ascending key order, apply, then settle every delivery in one statement.

The caller (`pipeline.deliveries.process_batch`) owns the transaction, the claim and the failure split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from plugin import handlers
from plugin.handlers import compliance
from plugin.handlers.batch_keys import lock_keys
from plugin.handlers.context import HandlerContext
from plugin.shopify import payloads
from plugin.shopify.payloads import OrderData, RefundData
from plugin.store import batch_locks, bulk_orders, deliveries, runs, shops
from plugin.store.db import Database
from plugin.store.deliveries import ClaimedDelivery
from plugin.store.models import DeliveryStatus, Order, Shop
from plugin.store.shopper_book import ShopperBook

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """What a committed batch leaves to do: statuses by delivery id, runs planned, the runs and stage
    write-backs it marked queued (to queue after commit), maintenance jobs."""

    settled: dict[int, str] = field(default_factory=dict)
    planned: list[int] = field(default_factory=list)
    queued_runs: list[tuple[int, int]] = field(default_factory=list)  # (id, attempts)
    writeback_shops: list[int] = field(default_factory=list)
    jobs: list[tuple[str, int]] = field(default_factory=list)


def apply_batch(
    db: Database, session: Session, claimed: list[ClaimedDelivery], now: datetime, consent_wait: timedelta
) -> BatchResult:
    """Apply claimed deliveries in id order in the caller's transaction; raise to have it rolled back.

    Order, customer, consent and refund deliveries whose shoppers, orders and checkouts no other kind
    of delivery of the batch touches are applied against the batch's book (`store.shopper_book`): their
    orders stored by table first, their shoppers' part answered from memory and written once at the
    end. The others go one at a time against the database, each flushed and read afresh as it would be
    alone.
    """
    parsed = {delivery.id: _parse(delivery) for delivery in claimed}
    _lock(db, session, claimed, parsed)
    buyers = _stored_buyers(db, session, claimed, parsed)
    booked = _bookable(session, claimed, parsed, buyers)
    book = _open_book(db, session, claimed, parsed, booked, buyers) if booked else None
    kept = book.objects() if book else ()  # the book's rows: not expired between other deliveries
    result, marks = BatchResult(), []
    for delivery in claimed:
        in_book = delivery.id in booked
        status, reason, ctx = _apply(db, session, delivery, parsed[delivery.id], now, consent_wait, in_book)
        if not in_book:
            session.flush()
            shops.expire_for_next_delivery(session, delivery.topic, keep=kept)
        result.settled[delivery.id] = status
        marks.append(
            dict(
                id=delivery.id,
                status=status,
                reason=reason,
                processed_at=now,
                attempts=delivery.attempts + 1,
            )
        )
        if ctx is not None:
            result.planned += ctx.planned_runs
            result.jobs += ctx.jobs
    if book is not None:
        result.planned += book.write(db, session)
    result.queued_runs, result.writeback_shops = runs.queue_due_planned(db, session, result.planned, now)
    deliveries.mark_deliveries(db, session, marks)
    return result


def _parse(delivery: ClaimedDelivery) -> Any:
    """The payload, or the PayloadError / UnknownTopicError that says why there is none."""
    try:
        payload = payloads.load(delivery.topic, delivery.body)
        named = payloads.shop_of(payload)
        if named is not None and named != delivery.shop_domain:  # the HMAC covers the body only
            raise payloads.PayloadError(
                f"the body names shop {named[:255]!r}, the header {delivery.shop_domain!r}"
            )
    except (payloads.UnknownTopicError, payloads.PayloadError) as error:
        return error
    return payload


def _lock(db: Database, session: Session, claimed: list[ClaimedDelivery], parsed: dict) -> None:
    orders, customers = set(), set()
    for delivery in claimed:
        payload = parsed[delivery.id]
        if isinstance(payload, Exception):
            continue
        shop = shops.batch_shop(session, delivery.shop_domain)
        if shop is None:
            continue
        order_ids, customer_ids = lock_keys(payload)
        orders.update((shop.id, order_id) for order_id in order_ids)
        customers.update((shop.id, customer_id) for customer_id in customer_ids)
    batch_locks.lock_batch_keys(db, session, orders, customers)


def _bookable(session: Session, claimed: list[ClaimedDelivery], parsed: dict, buyers: dict) -> set[int]:
    """The ids of the deliveries the batch's book can apply: those whose every order, shopper and
    checkout is touched only by deliveries of BOOKED_TOPICS (of served shops; orders with an
    `updated_at`), so nothing else in the batch reads what the book holds. None when a delivery of the
    batch may change its shop (after an uninstall the rest of the batch is ignored) or erase shoppers
    (a redaction names its shopper in a shape the keys do not read; the book must not write back what
    it erased)."""
    if any(delivery.topic in BOOK_STEPS_ASIDE for delivery in claimed):
        return set()
    group: dict[tuple, tuple] = {}  # union-find over the touched keys: key → a key of its group

    def root(key: tuple) -> tuple:
        while group.setdefault(key, key) != key:
            group[key] = group[group[key]]
            key = group[key]
        return key

    first_key: dict[int, tuple] = {}
    for delivery in claimed:
        keys = [(delivery.shop_domain, *key) for key in _touched(parsed[delivery.id])]
        keys += [buyers[key] for key in keys if key in buyers]
        if not keys:
            continue
        first_key[delivery.id] = keys[0]
        for key in keys[1:]:
            group[root(key)] = root(keys[0])
    fits = {d.id for d in claimed if d.id in first_key and _fits_book(session, d, parsed[d.id])}
    unfit = {root(first_key[d]) for d in first_key if d not in fits}
    return {d for d in fits if root(first_key[d]) not in unfit}


def _stored_buyers(
    db: Database, session: Session, claimed: list[ClaimedDelivery], parsed: dict
) -> dict[tuple, tuple]:
    """(shop domain, "order", id) → (shop domain, "customer", buyer) for the stored orders that deliveries
    name by id only (a refund, a fulfillment): their handlers reach the buyer through the stored order,
    so the buyer is theirs to touch too. As the batch's locks read them, or one statement per shop."""
    named: dict[str, set[int]] = {}
    for delivery in claimed:
        payload = parsed[delivery.id]
        if isinstance(payload, Exception):
            continue
        order_ids, customer_ids = lock_keys(payload)
        if order_ids and not customer_ids:
            named.setdefault(delivery.shop_domain, set()).update(order_ids)
    buyers, locked = {}, batch_locks.stored_buyers(session)
    for domain, order_ids in named.items():
        shop = shops.batch_shop(session, domain)
        if shop is None or not order_ids:
            continue
        if locked is not None:  # read with the locks (PostgreSQL)
            stored = ((o, locked[(shop.id, o)]) for o in sorted(order_ids) if (shop.id, o) in locked)
            buyers.update({(domain, "order", o): (domain, "customer", c) for o, c in stored})
            continue
        rows = session.execute(
            select(Order.order_id, Order.customer_id).where(
                Order.shop_id == shop.id,
                db.among(Order.order_id, sorted(order_ids)),
                Order.customer_id.is_not(None),
            )
        )
        buyers.update({(domain, "order", o): (domain, "customer", c) for o, c in rows})
    return buyers


BOOK_STEPS_ASIDE = shops.SHOP_CHANGING_TOPICS | payloads.COMPLIANCE_TOPICS

BOOKED_TOPICS = frozenset(
    {
        "orders/create",
        "orders/updated",
        "orders/paid",
        "orders/cancelled",
        "orders/fulfilled",
        "customers/create",
        "customers/update",
        "customers_email_marketing_consent/update",
        "refunds/create",
    }
)  # handlers that read and write only what the book holds: their shopper, its orders, checkouts and runs


def _fits_book(session: Session, delivery: ClaimedDelivery, payload: Any) -> bool:
    if delivery.topic not in BOOKED_TOPICS or isinstance(payload, Exception):
        return False
    if isinstance(payload, OrderData) and not bulk_orders.can_store_in_bulk(payload):
        return False
    return _not_served(shops.batch_shop(session, delivery.shop_domain), delivery.topic) is None


def _open_book(
    db: Database,
    session: Session,
    claimed: list[ClaimedDelivery],
    parsed: dict,
    booked: set[int],
    buyers: dict,
) -> ShopperBook:
    """Read the booked deliveries' shoppers (and the buyers of the stored orders they name) and orders as
    they stand, then store their orders and refunds by table."""
    wanted: dict[Shop, tuple[set[int], set[int]]] = {}
    facts: dict[Shop, tuple[list[OrderData], list[RefundData]]] = {}
    for delivery in claimed:
        if delivery.id not in booked:
            continue
        payload = parsed[delivery.id]
        shop = shops.batch_shop(session, delivery.shop_domain)
        customers, orders = wanted.setdefault(shop, (set(), set()))
        order_ids, customer_ids = lock_keys(payload)
        orders.update(order_ids)
        customers.update(customer_ids)
        for order_id in order_ids:
            if (buyer := buyers.get((delivery.shop_domain, "order", order_id))) is not None:
                customers.add(buyer[2])
        if isinstance(payload, OrderData):
            facts.setdefault(shop, ([], []))[0].append(payload)
        elif isinstance(payload, RefundData):
            facts.setdefault(shop, ([], []))[1].append(payload)
    book = ShopperBook.load(db, session, wanted)
    for shop in wanted:  # read (and cached) before any shopper changes: the read's autoflush would write
        shops.shop_rules(session, shop.id)  # the first changed shoppers one statement early
    for shop in sorted(facts, key=lambda shop: shop.id):
        bulk_orders.store_orders(db, session, shop.id, *facts[shop])
    return book


def _touched(payload: Any) -> list[tuple]:
    """The orders, shoppers and checkouts a delivery's handler reads or writes, as far as its body says."""
    if isinstance(payload, Exception):
        return []
    order_ids, customer_ids = lock_keys(payload)
    keys = [("order", i) for i in order_ids] + [("customer", i) for i in customer_ids]
    for token in (getattr(payload, "checkout_token", None), getattr(payload, "token", None)):
        if token:
            keys.append(("checkout", token))
    return keys


def _apply(
    db: Database,
    session: Session,
    delivery: ClaimedDelivery,
    payload: Any,
    now: datetime,
    consent_wait: timedelta,
    facts_stored: bool = False,
) -> tuple[str, str | None, HandlerContext | None]:
    """(status, reason, context) of one delivery, with the shop as it stands at this point of the batch."""
    shop = shops.batch_shop(session, delivery.shop_domain)
    not_served = _not_served(shop, delivery.topic)
    if not_served:
        return DeliveryStatus.IGNORED, not_served, None
    if isinstance(payload, payloads.UnknownTopicError):
        return DeliveryStatus.IGNORED, f"no handler for topic {delivery.topic}", None
    if isinstance(payload, payloads.PayloadError):
        return _quarantine(delivery, str(payload))
    ctx = HandlerContext(
        db,
        session,
        shop,
        delivery.topic,
        now,
        delivery.triggered_at,
        delivery.id,
        delivery.shop_domain,
        consent_wait=consent_wait,
        facts_stored=facts_stored,
    )
    try:
        note = handlers.dispatch(ctx, payload)
    except compliance.ShopStillInstalledError as error:  # nothing erased; replayable after a real uninstall
        return _quarantine(delivery, str(error))
    return DeliveryStatus.PROCESSED, note, ctx


def _not_served(shop, topic: str) -> str | None:
    """Why a delivery of this shop is not processed (not installed, sending paused), or None.

    Compliance topics are processed whatever the shop's state; app/uninstalled also for a paused shop
    (a later one may be the one whose token Shopify refuses).
    """
    if topic in payloads.COMPLIANCE_TOPICS:
        return None
    if shop is None or not shop.active:
        return "shop is not installed"
    if shop.paused_at is not None and topic != "app/uninstalled":
        return f"sending paused: {shop.pause_reason}"
    return None


def _quarantine(delivery: ClaimedDelivery, reason: str) -> tuple[str, str, None]:
    log.warning("quarantined delivery %s (%s): %s", delivery.id, delivery.topic, reason)
    return DeliveryStatus.QUARANTINED, reason, None
