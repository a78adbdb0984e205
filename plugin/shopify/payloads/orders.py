"""Order payloads: orders/*, with their line items, discount codes and refunds; refunds/create and
fulfillments/create|update."""

from __future__ import annotations

from dataclasses import dataclass, field
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
from plugin.shopify.payloads.customers import CustomerRef, CustomerRefSchema


@dataclass
class LineItem:
    product_id: int | None
    variant_id: int | None
    quantity: int
    price: Decimal | None


class LineItemSchema(PayloadSchema):
    model = LineItem
    product_id = optional(ShopifyId)
    variant_id = optional(ShopifyId)
    quantity = count(load_default=1)
    price = money()


@dataclass
class RefundData:
    id: int
    order_id: int
    created_at: datetime | None
    amount: Decimal


class _TransactionSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    kind = optional()
    status = optional()
    amount = money()


class _RefundLineSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    subtotal = money()
    total_tax = money()


class RefundSchema(PayloadSchema):
    id = ShopifyId(required=True)
    order_id = ShopifyId(required=True)
    created_at = optional(Instant)
    transactions = List(Nested(_TransactionSchema), load_default=list)
    refund_line_items = List(Nested(_RefundLineSchema), load_default=list)

    @post_load
    def _make(self, data, **_):
        return RefundData(data["id"], data["order_id"], data["created_at"], refund_amount(data))


def refund_amount(data: dict) -> Decimal:
    """Money returned to the shopper: successful refund transactions, else the refunded lines."""
    transactions = [
        t for t in data["transactions"] if t.get("kind") == "refund" and t.get("status") in (None, "success")
    ]
    if transactions:
        return sum((t.get("amount") or Decimal(0) for t in transactions), Decimal(0))
    return sum(
        ((line.get("subtotal") or Decimal(0)) + (line.get("total_tax") or Decimal(0)))
        for line in data["refund_line_items"]
    ) or Decimal(0)


class _DiscountCodeSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    code = Text(required=True)


@dataclass
class OrderData:
    id: int
    created_at: datetime
    updated_at: datetime | None = None
    processed_at: datetime | None = None
    cancelled_at: datetime | None = None
    name: str | None = None
    email: str | None = None
    customer: CustomerRef | None = None
    currency: str | None = None
    total_price: Decimal | None = None
    financial_status: str | None = None
    fulfillment_status: str | None = None
    customer_locale: str | None = None
    checkout_token: str | None = None
    cart_token: str | None = None
    line_items: list[LineItem] = field(default_factory=list)
    discount_codes: list[str] = field(default_factory=list)
    refunds: list[RefundData] = field(default_factory=list)


class OrderSchema(PayloadSchema):
    id = ShopifyId(required=True)
    created_at = Instant(required=True)
    updated_at = optional(Instant)
    processed_at = optional(Instant)
    cancelled_at = optional(Instant)
    name = optional(max_length=64)
    email = optional(max_length=320)
    customer = Nested(CustomerRefSchema, allow_none=True, load_default=None)
    currency = optional(validate=validate.Length(equal=3))
    total_price = money()
    financial_status = optional(max_length=32)
    fulfillment_status = optional(max_length=32)
    customer_locale = optional(max_length=16)
    checkout_token = optional()
    cart_token = optional()
    line_items = List(Nested(LineItemSchema), load_default=list)
    discount_codes = List(Nested(_DiscountCodeSchema), load_default=list)
    refunds = List(Nested(RefundSchema), load_default=list)

    @post_load
    def _make(self, data, **_):
        data["discount_codes"] = [d["code"] for d in data["discount_codes"]]
        return OrderData(**data)


@dataclass
class FulfillmentData:
    id: int
    order_id: int
    status: str | None
    updated_at: datetime | None


class FulfillmentSchema(PayloadSchema):
    model = FulfillmentData
    id = ShopifyId(required=True)
    order_id = ShopifyId(required=True)
    status = optional()
    updated_at = optional(Instant)
