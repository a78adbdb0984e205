"""Orders, refunds and fulfillments: store each order once, then recount and restage its shopper."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from plugin.core import facts
from plugin.handlers import shopper_updates
from plugin.handlers.context import HandlerContext, restage
from plugin.handlers.registry import handles
from plugin.shopify.payloads import FulfillmentData, OrderData, RefundData
from plugin.store import runs, shopper_book, shoppers
from plugin.store.models import Checkout, Order, Refund


@handles("orders/create", "orders/updated", "orders/paid", "orders/cancelled", "orders/fulfilled")
def on_order(ctx: HandlerContext, order: OrderData) -> None:
    """Store the order (newest version wins), its refunds, and update the buyer's profile and stage."""
    customer = order.customer
    shoppers.lock_order(ctx, order.id)
    shopper = shoppers.lock_shopper(ctx, customer.id) if customer else None
    if ctx.facts_stored:  # stored by table with the batch; the batch's book holds its facts
        shopper_book.of(ctx.session).apply_order(ctx.shop.id, order)
    else:
        store_order(ctx, order)
        for refund in order.refunds:
            store_refund(ctx, refund)
        shoppers.refresh_refunded(ctx, order.id)
        if order.checkout_token:
            complete_checkout(ctx, order.checkout_token, order.created_at)
    if shopper is None:
        return  # a guest order: stored for history, no profile to update
    shopper_updates.apply_customer(shopper, customer)
    shopper_updates.apply_contact(shopper, order.email, order.customer_locale, order.currency)
    shoppers.recount_orders(ctx, shopper)
    if shopper.checkout_open:  # an order can close the shopper's checkout, never open one
        shoppers.refresh_checkout_open(ctx, shopper)
    restage(ctx, shopper)
    revisit_later_plays(ctx, shopper, order.processed_at or order.created_at)
    trigger_order_plays(ctx, shopper, order)


def revisit_later_plays(ctx: HandlerContext, shopper, placed_at) -> None:
    """An order changes the facts as of every later event: plays planned on facts that no longer hold are
    superseded, and the welcome is asked again (its "no order before the consent" may hold now that a
    cancellation arrived); its cycle "once" keeps it one welcome."""
    ctx.flush_for(shopper)
    runs.recheck_conditions(ctx.db, ctx.session, ctx.shop, shopper, placed_at, ctx.now)
    consent_at = shopper.consent_updated_at
    if facts.accepts_marketing(shopper) and consent_at and placed_at < consent_at:
        ctx.trigger(shopper, "consent_granted", consent_at, "once")


def trigger_order_plays(ctx: HandlerContext, shopper, order: OrderData) -> None:
    """A paid order triggers the thank-you; a fulfilled one the review request (once per order)."""
    if order.cancelled_at is not None:
        return
    facts = dict(
        order_id=order.id, order_name=order.name, total=str(order.total_price or 0), currency=order.currency
    )
    if order.financial_status in ("paid", "partially_refunded", "refunded") or ctx.topic == "orders/paid":
        placed = order.processed_at or order.created_at  # first: no earlier kept order, as of this one
        ctx.flush_for(shopper)
        as_of_placed = shoppers.profile_as_of(ctx.session, shopper, placed)
        ctx.trigger(
            shopper,
            "order_paid",
            placed,
            str(order.id),
            profile=as_of_placed if placed <= ctx.now else None,  # the facts the trigger reads
            first_order=as_of_placed.orders_count == 0,
            **facts,
        )
    if order.fulfillment_status == "fulfilled" or ctx.topic == "orders/fulfilled":
        ctx.trigger(shopper, "order_fulfilled", ctx.triggered_at or order.updated_at, str(order.id), **facts)


@handles("refunds/create")
def on_refunds_create(ctx: HandlerContext, refund: RefundData) -> None:
    """Subtract the refund from its order's net value (once, by refund id) and restage the buyer."""
    shoppers.lock_order(ctx, refund.order_id)
    if ctx.facts_stored:  # stored by table with the batch; the batch's book holds its order's buyer
        buyer = shopper_book.of(ctx.session).apply_refund(ctx.shop.id, refund)
    else:
        order = ctx.session.scalar(
            select(Order).where(Order.shop_id == ctx.shop.id, Order.order_id == refund.order_id)
        )
        buyer = order.customer_id if order else None
        store_refund(ctx, refund)
        shoppers.refresh_refunded(ctx, refund.order_id)
    shopper = shoppers.lock_shopper(ctx, buyer) if buyer else None
    if shopper is not None:
        shoppers.recount_orders(ctx, shopper)
        restage(ctx, shopper)


@handles("fulfillments/create", "fulfillments/update")
def on_fulfillment(ctx: HandlerContext, fulfillment: FulfillmentData) -> None:
    """Note the latest fulfillment status on the order; a successful one triggers the review request."""
    ctx.session.execute(
        update(Order)
        .where(Order.shop_id == ctx.shop.id, Order.order_id == fulfillment.order_id)
        .values(fulfillment_status=fulfillment.status)
    )
    order = ctx.session.scalar(
        select(Order).where(Order.shop_id == ctx.shop.id, Order.order_id == fulfillment.order_id)
    )
    if fulfillment.status != "success" or order is None or order.customer_id is None or order.cancelled_at:
        return
    shopper = shoppers.lock_shopper(ctx, order.customer_id)
    ctx.trigger(
        shopper,
        "order_fulfilled",
        fulfillment.updated_at,
        str(order.order_id),
        order_id=order.order_id,
        order_name=order.name,
        total=str(order.total_price),
        currency=order.currency,
    )


def store_order(ctx: HandlerContext, order: OrderData) -> None:
    """Insert or update the order row unless the payload is older than the stored version."""
    row = ctx.session.scalar(select(Order).where(Order.shop_id == ctx.shop.id, Order.order_id == order.id))
    if row is None:
        row = Order(shop_id=ctx.shop.id, order_id=order.id)
        ctx.session.add(row)
    elif facts.is_stale(row.source_updated_at, order.updated_at):
        return
    row.customer_id = order.customer.id if order.customer else None
    row.name = order.name
    row.placed_at = order.processed_at or order.created_at
    row.source_updated_at = order.updated_at
    row.cancelled_at = order.cancelled_at
    row.currency = order.currency
    row.total_price = order.total_price or 0
    row.financial_status = order.financial_status
    row.fulfillment_status = order.fulfillment_status
    row.checkout_token = order.checkout_token
    row.line_items = [
        {
            "product_id": li.product_id,
            "variant_id": li.variant_id,
            "quantity": li.quantity,
            "price": str(li.price),
        }
        for li in order.line_items
    ]
    row.discount_codes = order.discount_codes
    ctx.session.flush()


def store_refund(ctx: HandlerContext, refund: RefundData) -> None:
    """Insert a refund once by its Shopify id."""
    ctx.session.execute(
        ctx.db.insert(Refund.__table__)
        .values(
            shop_id=ctx.shop.id,
            refund_id=refund.id,
            order_id=refund.order_id,
            amount=refund.amount,
            created_at=refund.created_at,
        )
        .on_conflict_do_nothing(index_elements=["shop_id", "refund_id"])
    )


def complete_checkout(ctx: HandlerContext, token: str, at: datetime) -> None:
    """An order closes the checkout it came from."""
    ctx.session.execute(
        update(Checkout)
        .where(Checkout.shop_id == ctx.shop.id, Checkout.token == token, Checkout.completed_at.is_(None))
        .values(completed_at=at)
    )
