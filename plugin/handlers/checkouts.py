"""Checkouts and carts: recent activity that makes a shopper without orders `engaged`.

Cart webhooks carry no customer; a cart is linked to its shopper when a checkout names its `cart_token`.
"""

from __future__ import annotations

from sqlalchemy import select

from plugin.core import facts
from plugin.handlers import shopper_updates
from plugin.handlers.context import HandlerContext, restage
from plugin.handlers.registry import handles
from plugin.shopify.payloads import CartData, CheckoutData
from plugin.store import shoppers
from plugin.store.models import Cart, Checkout, Order


@handles("checkouts/create", "checkouts/update")
def on_checkout(ctx: HandlerContext, checkout: CheckoutData) -> None:
    """Store the checkout (newest version wins) and update its shopper's activity and stage."""
    customer = checkout.customer
    shopper = shoppers.lock_shopper(ctx, customer.id) if customer else None
    row = store_checkout(ctx, checkout)
    cart = link_cart(ctx, checkout.cart_token, customer.id if customer else None)
    if shopper is None:
        return
    shopper_updates.apply_customer(shopper, customer)
    shopper_updates.apply_contact(shopper, checkout.email, checkout.customer_locale, checkout.currency)
    shopper.last_checkout_at = _latest(shopper.last_checkout_at, row.source_updated_at)
    if cart is not None:
        shopper.last_cart_at = _latest(shopper.last_cart_at, cart.source_updated_at)
    shoppers.refresh_checkout_open(ctx, shopper)
    restage(ctx, shopper)
    # From this payload, not the stored row: the order that completes the checkout may have come first;
    # the send-time policy then skips the reminder ("the checkout was completed"), in any order.
    if checkout.completed_at is None and checkout.closed_at is None and checkout.abandoned_checkout_url:
        ctx.trigger(
            shopper,
            "checkout_started",
            checkout.created_at or checkout.updated_at,
            checkout.token,
            checkout_token=checkout.token,
            url=row.abandoned_checkout_url,
            total=str(row.total_price) if row.total_price is not None else None,
            currency=row.currency,
        )


@handles("carts/create", "carts/update")
def on_cart(ctx: HandlerContext, cart: CartData) -> None:
    """Store the cart; when it is already linked to a shopper, count it as their activity."""
    row = ctx.session.scalar(select(Cart).where(Cart.shop_id == ctx.shop.id, Cart.token == cart.token))
    shopper = shoppers.lock_shopper(ctx, row.customer_id) if row is not None and row.customer_id else None
    if row is None:
        row = Cart(shop_id=ctx.shop.id, token=cart.token)
        ctx.session.add(row)
    if not facts.is_stale(row.source_updated_at, cart.updated_at):
        row.source_updated_at = cart.updated_at
        row.line_items = [{"variant_id": li.variant_id, "quantity": li.quantity} for li in cart.line_items]
    if shopper is not None:
        shopper.last_cart_at = _latest(shopper.last_cart_at, row.source_updated_at)
        restage(ctx, shopper)


def store_checkout(ctx: HandlerContext, checkout: CheckoutData) -> Checkout:
    """Insert or update the checkout row unless the payload is older than what is stored."""
    row = ctx.session.scalar(
        select(Checkout).where(Checkout.shop_id == ctx.shop.id, Checkout.token == checkout.token)
    )
    if row is None:
        row = Checkout(shop_id=ctx.shop.id, token=checkout.token)
        ctx.session.add(row)
    elif facts.is_stale(row.source_updated_at, checkout.updated_at):
        return row
    row.checkout_id = checkout.id
    row.cart_token = checkout.cart_token
    row.customer_id = checkout.customer.id if checkout.customer else row.customer_id
    row.source_updated_at = checkout.updated_at
    row.closed_at = checkout.closed_at
    row.abandoned_checkout_url = checkout.abandoned_checkout_url
    row.total_price = checkout.total_price
    row.currency = checkout.currency
    row.line_items = [{"variant_id": li.variant_id, "quantity": li.quantity} for li in checkout.line_items]
    # The order may have arrived first (delivery order is not guaranteed): it completes the checkout.
    completed_by_order = ctx.session.scalar(
        select(Order.placed_at).where(Order.shop_id == ctx.shop.id, Order.checkout_token == checkout.token)
    )
    row.completed_at = checkout.completed_at or completed_by_order or row.completed_at
    ctx.session.flush()
    return row


def link_cart(ctx: HandlerContext, cart_token: str | None, customer_id: int | None) -> Cart | None:
    """Attach the checkout's cart to the customer; return it when it is known."""
    if not cart_token:
        return None
    cart = ctx.session.scalar(select(Cart).where(Cart.shop_id == ctx.shop.id, Cart.token == cart_token))
    if cart is not None and customer_id is not None:
        cart.customer_id = customer_id
    return cart


def _latest(held, incoming):
    if held is None:
        return incoming
    if incoming is None:
        return held
    return max(held, incoming)
