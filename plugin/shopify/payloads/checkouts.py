"""Checkout and cart payloads: checkouts/create|update and carts/create|update (carts name no customer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from marshmallow import validate

from plugin.shopify.payloads.base import (
    Instant,
    List,
    Nested,
    PayloadSchema,
    ShopifyId,
    Text,
    money,
    optional,
)
from plugin.shopify.payloads.customers import CustomerRef, CustomerRefSchema
from plugin.shopify.payloads.orders import LineItem, LineItemSchema


@dataclass
class CheckoutData:
    token: str
    updated_at: datetime
    id: int | None = None
    cart_token: str | None = None
    email: str | None = None
    customer: CustomerRef | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None
    closed_at: datetime | None = None
    abandoned_checkout_url: str | None = None
    customer_locale: str | None = None
    currency: str | None = None
    total_price: Decimal | None = None
    line_items: list[LineItem] = field(default_factory=list)


class CheckoutSchema(PayloadSchema):
    model = CheckoutData
    token = Text(required=True)
    updated_at = Instant(required=True)
    id = optional(ShopifyId)
    cart_token = optional()
    email = optional(max_length=320)
    customer = Nested(CustomerRefSchema, allow_none=True, load_default=None)
    created_at = optional(Instant)
    completed_at = optional(Instant)
    closed_at = optional(Instant)
    abandoned_checkout_url = optional(max_length=2048)
    customer_locale = optional(max_length=16)
    currency = optional(validate=validate.Length(equal=3))
    total_price = money()
    line_items = List(Nested(LineItemSchema), load_default=list)


@dataclass
class CartData:
    token: str
    updated_at: datetime
    line_items: list[LineItem] = field(default_factory=list)


class CartSchema(PayloadSchema):
    model = CartData
    token = Text(required=True)
    updated_at = Instant(required=True)
    line_items = List(Nested(LineItemSchema), load_default=list)
