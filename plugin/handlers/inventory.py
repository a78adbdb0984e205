"""Products and inventory levels: the catalogue facts back-in-stock alerts will read."""

from __future__ import annotations

from sqlalchemy import func, select

from plugin.core import facts
from plugin.core.rules import Profile, Trigger, is_marketing
from plugin.handlers.context import HandlerContext
from plugin.handlers.registry import handles
from plugin.shopify.payloads import InventoryLevelData, ProductData
from plugin.store import runs, shoppers, shops
from plugin.store.models import InventoryLevel, Order, Product, Shopper, StockSubscription


@handles("inventory_levels/update")
def on_inventory_levels_update(ctx: HandlerContext, level: InventoryLevelData) -> None:
    """Keep the available quantity per item and location, with the value it replaced."""
    row = ctx.session.scalar(
        select(InventoryLevel).where(
            InventoryLevel.shop_id == ctx.shop.id,
            InventoryLevel.inventory_item_id == level.inventory_item_id,
            InventoryLevel.location_id == level.location_id,
        )
    )
    if row is None:
        row = InventoryLevel(
            shop_id=ctx.shop.id, inventory_item_id=level.inventory_item_id, location_id=level.location_id
        )
        ctx.session.add(row)
    elif facts.is_stale(row.source_updated_at, level.updated_at):
        return
    was_available = _available_elsewhere(ctx, row) + max(row.available or 0, 0)
    row.previous_available = row.available
    row.available = level.available
    row.source_updated_at = level.updated_at
    if was_available <= 0 < _available_elsewhere(ctx, row) + (level.available or 0):
        announce_restock(ctx, level)


def _available_elsewhere(ctx: HandlerContext, row: InventoryLevel) -> int:
    """Units of the same item at the shop's other locations."""
    return ctx.session.scalar(
        select(func.coalesce(func.sum(InventoryLevel.available), 0)).where(
            InventoryLevel.shop_id == ctx.shop.id,
            InventoryLevel.inventory_item_id == row.inventory_item_id,
            InventoryLevel.location_id != row.location_id,
            InventoryLevel.available > 0,
        )
    )


def announce_restock(ctx: HandlerContext, level: InventoryLevelData) -> None:
    """A variant is back: tell the shoppers who asked (transactional) and, if the merchant opted in, the
    consenting past buyers of the product (marketing)."""

    at = level.updated_at or ctx.now
    rules = shops.shop_rules(ctx.session, ctx.shop.id)
    asked = [r for r in rules if not is_marketing(r[1])]
    marketing = [r for r in rules if is_marketing(r[1])]
    for product, variant in variants_of_item(ctx, level.inventory_item_id):
        cycle = f"{variant['variant_id']}@{at.isoformat()}"
        facts = dict(
            product_title=product.title,
            variant_title=variant.get("title"),
            variant_id=variant["variant_id"],
            product_id=product.product_id,
        )
        for sub in ctx.session.scalars(
            select(StockSubscription).where(
                StockSubscription.shop_id == ctx.shop.id,
                StockSubscription.variant_id == variant["variant_id"],
                StockSubscription.notified_at.is_(None),
            )
        ):
            shopper = _shopper(ctx, sub.customer_id)
            profile = (
                shoppers.profile_of(shopper) if shopper else Profile(None, email=sub.email, locale=sub.locale)
            )
            ctx.planned_runs += runs.plan(
                ctx.db,
                ctx.session,
                ctx.shop,
                profile,
                _event(ctx, at, cycle, facts, subscription_id=sub.id),
                ctx.now,
                asked,
            )
        if any(rule["enabled"] for _, rule in marketing):
            for shopper in past_buyers(ctx, product.product_id):
                ctx.planned_runs += runs.plan(
                    ctx.db,
                    ctx.session,
                    ctx.shop,
                    shoppers.profile_of(shopper),
                    _event(ctx, at, cycle, facts),
                    ctx.now,
                    marketing,
                )


def _event(ctx: HandlerContext, at, cycle: str, facts: dict, **more):

    return Trigger("back_in_stock", at, cycle, ctx.topic, {**facts, **more})


def _shopper(ctx: HandlerContext, customer_id: int | None) -> Shopper | None:
    if customer_id is None:
        return None
    return ctx.session.scalar(
        select(Shopper).where(Shopper.shop_id == ctx.shop.id, Shopper.customer_id == customer_id)
    )


def variants_of_item(ctx: HandlerContext, inventory_item_id: int):
    """(product, variant) pairs whose variant is stocked by this inventory item."""
    for product in ctx.session.scalars(select(Product).where(Product.shop_id == ctx.shop.id)):
        for variant in product.variants or []:
            if variant.get("inventory_item_id") == inventory_item_id:
                yield product, variant


def past_buyers(ctx: HandlerContext, product_id: int) -> list[Shopper]:
    """Shoppers with a non-cancelled order of the product."""
    customer_ids = {
        customer_id
        for customer_id, lines in ctx.session.execute(
            select(Order.customer_id, Order.line_items).where(
                Order.shop_id == ctx.shop.id, Order.customer_id.is_not(None), Order.cancelled_at.is_(None)
            )
        )
        if any(line.get("product_id") == product_id for line in lines or [])
    }
    if not customer_ids:
        return []
    return list(
        ctx.session.scalars(
            select(Shopper).where(Shopper.shop_id == ctx.shop.id, Shopper.customer_id.in_(customer_ids))
        )
    )


@handles("products/create", "products/update")
def on_products_update(ctx: HandlerContext, product: ProductData) -> None:
    """Keep the product's title and variants (variant ↔ inventory item)."""
    row = ctx.session.scalar(
        select(Product).where(Product.shop_id == ctx.shop.id, Product.product_id == product.id)
    )
    if row is None:
        row = Product(shop_id=ctx.shop.id, product_id=product.id)
        ctx.session.add(row)
    elif facts.is_stale(row.source_updated_at, product.updated_at):
        return
    row.title = product.title
    row.source_updated_at = product.updated_at
    row.variants = [
        {"variant_id": v["id"], "inventory_item_id": v.get("inventory_item_id"), "title": v.get("title")}
        for v in product.variants
    ]
