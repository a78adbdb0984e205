"""Catalogue payloads: inventory_levels/update and products/create|update with their variants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from marshmallow import EXCLUDE, Schema

from plugin.shopify.payloads.base import Instant, List, Nested, PayloadSchema, ShopifyId, count, optional


@dataclass
class InventoryLevelData:
    inventory_item_id: int
    location_id: int
    available: int | None
    updated_at: datetime | None


class InventoryLevelSchema(PayloadSchema):
    model = InventoryLevelData
    inventory_item_id = ShopifyId(required=True)
    location_id = ShopifyId(required=True)
    available = optional(count)
    updated_at = optional(Instant)


@dataclass
class ProductData:
    id: int
    title: str | None
    updated_at: datetime | None
    variants: list[dict]


class _VariantSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    id = ShopifyId(required=True)
    inventory_item_id = optional(ShopifyId)
    title = optional()


class ProductSchema(PayloadSchema):
    model = ProductData
    id = ShopifyId(required=True)
    title = optional(max_length=65535)
    updated_at = optional(Instant)
    variants = List(Nested(_VariantSchema), load_default=list)
