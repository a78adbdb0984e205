"""Payloads about the app's own install: app/uninstalled (the shop object) and bulk_operations/finish."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from plugin.shopify.payloads.base import Instant, PayloadSchema, ShopifyId, Text, optional


@dataclass
class ShopData:
    """The shop object of app/uninstalled (and shop/update): `myshopify_domain` names the shop, never
    `domain`, which is the merchant's custom domain."""

    id: int
    myshopify_domain: str


class ShopSchema(PayloadSchema):
    model = ShopData
    id = ShopifyId(required=True)
    myshopify_domain = Text(required=True)


@dataclass
class BulkOperationFinish:
    admin_graphql_api_id: str
    status: str
    error_code: str | None
    completed_at: datetime | None
    type: str | None


class BulkOperationFinishSchema(PayloadSchema):
    model = BulkOperationFinish
    admin_graphql_api_id = Text(required=True)
    status = Text(required=True)
    error_code = optional()
    completed_at = optional(Instant)
    type = optional()
