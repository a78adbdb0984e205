"""Products and inventory levels: the catalogue facts back-in-stock alerts will read."""

from __future__ import annotations

from sqlalchemy import select

from plugin import shoppers
from plugin.handlers import handles
from plugin.models import InventoryLevel, Product
from plugin.payloads import InventoryLevelData, ProductData
from plugin.profiles import HandlerContext


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
    elif shoppers.is_stale(row.source_updated_at, level.updated_at):
        return
    row.previous_available = row.available
    row.available = level.available
    row.source_updated_at = level.updated_at


@handles("products/create", "products/update")
def on_products_update(ctx: HandlerContext, product: ProductData) -> None:
    """Keep the product's title and variants (variant ↔ inventory item)."""
    row = ctx.session.scalar(
        select(Product).where(Product.shop_id == ctx.shop.id, Product.product_id == product.id)
    )
    if row is None:
        row = Product(shop_id=ctx.shop.id, product_id=product.id)
        ctx.session.add(row)
    elif shoppers.is_stale(row.source_updated_at, product.updated_at):
        return
    row.title = product.title
    row.source_updated_at = product.updated_at
    row.variants = [
        {"variant_id": v["id"], "inventory_item_id": v.get("inventory_item_id"), "title": v.get("title")}
        for v in product.variants
    ]
