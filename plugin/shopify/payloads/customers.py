"""Customer payloads: customers/create|update|delete, the marketing consent update, the purchasing summary
and customer.tags_added|tags_removed (since 2025-01 the customer body carries neither tags nor consent)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from marshmallow import EXCLUDE, Schema, post_load, validate

from plugin.shopify.payloads.base import (
    Instant,
    List,
    Nested,
    PayloadSchema,
    ShopifyId,
    Text,
    count,
    money,
    optional,
)


@dataclass
class CustomerRef:
    id: int
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    updated_at: datetime | None = None
    created_at: datetime | None = None


class CustomerRefSchema(PayloadSchema):
    model = CustomerRef
    id = ShopifyId(required=True)
    email = optional(max_length=320)
    first_name = optional()
    last_name = optional()
    updated_at = optional(Instant)
    created_at = optional(Instant)


@dataclass
class CustomerDeleted:
    id: int


class CustomerDeletedSchema(PayloadSchema):
    model = CustomerDeleted
    id = ShopifyId(required=True)


@dataclass
class ConsentUpdate:
    customer_id: int
    email_address: str | None
    state: str | None
    opt_in_level: str | None
    consent_updated_at: datetime | None


class _ConsentSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    state = optional(max_length=32)
    opt_in_level = optional(max_length=64)
    consent_updated_at = optional(Instant)


class ConsentUpdateSchema(PayloadSchema):
    model = ConsentUpdate
    customer_id = ShopifyId(required=True)
    email_address = optional(max_length=320)
    email_marketing_consent = Nested(_ConsentSchema, required=True)

    @post_load
    def _make(self, data, **_):
        consent = data.pop("email_marketing_consent")
        return ConsentUpdate(**data, **consent)


@dataclass
class PurchasingSummary:
    customer_id: int
    number_of_orders: int | None
    amount_spent: Decimal | None
    currency: str | None
    occurred_at: datetime | None


class _AmountSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    amount = money()
    currencyCode = optional(validate=validate.Length(equal=3))  # noqa: N815 (Shopify's spelling)


class PurchasingSummarySchema(PayloadSchema):
    customer_id = ShopifyId(required=True, data_key="customerId")
    number_of_orders = optional(count, data_key="numberOfOrders")
    amount_spent = Nested(_AmountSchema, allow_none=True, load_default=None, data_key="amountSpent")
    occurred_at = optional(Instant, data_key="occurredAt")

    @post_load
    def _make(self, data, **_):
        amount = data.pop("amount_spent") or {}
        return PurchasingSummary(
            **data, amount_spent=amount.get("amount"), currency=amount.get("currencyCode")
        )


@dataclass
class TagsChange:
    customer_id: int
    tags: list[str]
    occurred_at: datetime


class TagsChangeSchema(PayloadSchema):
    model = TagsChange
    customer_id = ShopifyId(required=True, data_key="customerId")
    tags = List(Text(), required=True)
    occurred_at = Instant(required=True, data_key="occurredAt")
