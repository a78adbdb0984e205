"""Marshmallow schemas for the webhook bodies we read (API version 2026-10), loading into small dataclasses.

Unknown fields are excluded: Shopify adds fields between versions and we read only what we use. Shapes follow
Shopify's webhook reference; since 2025-01 customer payloads carry neither tags nor marketing consent, which
arrive on `customer.tags_added|tags_removed` and `customers_email_marketing_consent/update` instead.

The schemas live by topic family (customers, orders, checkouts, inventory, installation, compliance) on
the field types of `base`; this module holds the topic table and `load`, and re-exports every name, so callers
import from `plugin.shopify.payloads` alone.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError

from plugin.shopify.payloads.base import (
    EARLIEST,
    LATEST,
    MAX_ID,
    MAX_INT,
    MAX_MONEY,
    Instant,
    PayloadSchema,
    ShopifyId,
    Text,
)
from plugin.shopify.payloads.checkouts import CartData, CartSchema, CheckoutData, CheckoutSchema
from plugin.shopify.payloads.compliance import ComplianceRequest, ComplianceSchema, ShopRedactSchema
from plugin.shopify.payloads.customers import (
    ConsentUpdate,
    ConsentUpdateSchema,
    CustomerDeleted,
    CustomerDeletedSchema,
    CustomerRef,
    CustomerRefSchema,
    PurchasingSummary,
    PurchasingSummarySchema,
    TagsChange,
    TagsChangeSchema,
)
from plugin.shopify.payloads.installation import (
    BulkOperationFinish,
    BulkOperationFinishSchema,
    ShopData,
    ShopSchema,
)
from plugin.shopify.payloads.inventory import (
    InventoryLevelData,
    InventoryLevelSchema,
    ProductData,
    ProductSchema,
)
from plugin.shopify.payloads.orders import (
    FulfillmentData,
    FulfillmentSchema,
    LineItem,
    LineItemSchema,
    OrderData,
    OrderSchema,
    RefundData,
    RefundSchema,
    refund_amount,
)

__all__ = [
    "BulkOperationFinish",
    "BulkOperationFinishSchema",
    "COMPLIANCE_TOPICS",
    "CartData",
    "CartSchema",
    "CheckoutData",
    "CheckoutSchema",
    "ComplianceRequest",
    "ComplianceSchema",
    "ConsentUpdate",
    "ConsentUpdateSchema",
    "CustomerDeleted",
    "CustomerDeletedSchema",
    "CustomerRef",
    "CustomerRefSchema",
    "EARLIEST",
    "FulfillmentData",
    "FulfillmentSchema",
    "Instant",
    "InventoryLevelData",
    "InventoryLevelSchema",
    "LATEST",
    "LineItem",
    "LineItemSchema",
    "MAX_ID",
    "MAX_INT",
    "MAX_MONEY",
    "OrderData",
    "OrderSchema",
    "PayloadError",
    "PayloadSchema",
    "ProductData",
    "ProductSchema",
    "PurchasingSummary",
    "PurchasingSummarySchema",
    "RefundData",
    "RefundSchema",
    "SCHEMAS",
    "ShopData",
    "ShopRedactSchema",
    "ShopSchema",
    "ShopifyId",
    "TagsChange",
    "TagsChangeSchema",
    "Text",
    "UnknownTopicError",
    "load",
    "refund_amount",
    "shop_of",
]


class PayloadError(ValueError):
    """A signed body we cannot use: not JSON, or not the shape its topic promises."""


class UnknownTopicError(LookupError):
    """No schema is declared for the topic: the delivery is ignored, said so explicitly (a KeyError raised
    while loading a known topic is a bug, and fails the delivery instead)."""


SCHEMAS: dict[str, type[Schema]] = {
    "customers/create": CustomerRefSchema,
    "customers/update": CustomerRefSchema,
    "customers/delete": CustomerDeletedSchema,
    "customers_email_marketing_consent/update": ConsentUpdateSchema,
    "customers/purchasing_summary": PurchasingSummarySchema,
    "customer.tags_added": TagsChangeSchema,
    "customer.tags_removed": TagsChangeSchema,
    "orders/create": OrderSchema,
    "orders/updated": OrderSchema,
    "orders/paid": OrderSchema,
    "orders/cancelled": OrderSchema,
    "orders/fulfilled": OrderSchema,
    "refunds/create": RefundSchema,
    "fulfillments/create": FulfillmentSchema,
    "fulfillments/update": FulfillmentSchema,
    "checkouts/create": CheckoutSchema,
    "checkouts/update": CheckoutSchema,
    "carts/create": CartSchema,
    "carts/update": CartSchema,
    "inventory_levels/update": InventoryLevelSchema,
    "products/create": ProductSchema,
    "products/update": ProductSchema,
    "app/uninstalled": ShopSchema,
    "bulk_operations/finish": BulkOperationFinishSchema,
    "customers/data_request": ComplianceSchema,
    "customers/redact": ComplianceSchema,
    "shop/redact": ShopRedactSchema,
}
COMPLIANCE_TOPICS = frozenset({"customers/data_request", "customers/redact", "shop/redact"})
_INSTANCES: dict[str, Schema] = {}


def load(topic: str, body: bytes) -> Any:
    """Parse and validate a webhook body for its topic; PayloadError says why it cannot be used.

    Raises UnknownTopicError when no schema is declared for the topic.
    """
    schema_class = SCHEMAS.get(topic)
    if schema_class is None:
        raise UnknownTopicError(topic)
    document = _parse(body)
    schema = _INSTANCES.get(topic) or _INSTANCES.setdefault(topic, schema_class())
    try:
        return schema.load(document)
    except ValidationError as error:
        raise PayloadError(
            f"body does not fit {topic}: {json.dumps(error.messages, sort_keys=True, default=str)[:1000]}"
        ) from None


def shop_of(payload: Any) -> str | None:
    """The shop a body names for itself (`shop_domain` of the compliance topics, `myshopify_domain` of the
    shop object), lower-cased; None for topics whose body does not name its shop."""
    named = getattr(payload, "shop_domain", None) or getattr(payload, "myshopify_domain", None)
    return named.strip().lower() if isinstance(named, str) else None


# One decoder for every body: `json.loads(body, parse_float=Decimal)` builds a decoder and its scanner
# for each call. Decoding holds the GIL throughout, so threads may share it, as they share json's own.
_DECODER = json.JSONDecoder(parse_float=Decimal)


def _parse(body: bytes) -> dict:
    """The body as a JSON object (a nesting too deep for the parser is a PayloadError, not a crash).
    Decoded as `json.loads` decodes bytes: UTF-8, -16 or -32 by their first bytes, a UTF-8 BOM dropped."""
    try:
        document = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PayloadError(f"body is not JSON: {error}") from None
    except (RecursionError, ValueError) as error:  # ValueError: an integer of more digits than int() reads
        raise PayloadError(f"body is not usable JSON: {type(error).__name__}") from None
    if not isinstance(document, dict):
        raise PayloadError(f"body is a JSON {type(document).__name__}, not an object")
    return document
