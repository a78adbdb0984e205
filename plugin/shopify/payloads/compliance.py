"""The mandatory compliance payloads: customers/data_request, customers/redact and shop/redact."""

from __future__ import annotations

from dataclasses import dataclass, field

from marshmallow import EXCLUDE, Schema, post_load

from plugin.shopify.payloads.base import List, Nested, PayloadSchema, ShopifyId, Text, optional


@dataclass
class ComplianceRequest:
    """customers/data_request, customers/redact or shop/redact (the customer is absent for shop/redact)."""

    shop_domain: str
    shop_id: int | None = None
    customer_id: int | None = None
    orders: list[int] = field(default_factory=list)
    data_request_id: int | None = None
    email: str | None = None
    phone: str | None = None


class _DataRequestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    id = optional(ShopifyId)


class _ComplianceCustomerSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    id = ShopifyId(required=True)
    email = optional(max_length=320)
    phone = optional(max_length=64)


class ComplianceSchema(PayloadSchema):
    """customers/data_request and customers/redact: they act on one customer, whose id is required."""

    shop_domain = Text(required=True)
    shop_id = optional(ShopifyId)
    customer = Nested(_ComplianceCustomerSchema, required=True)
    orders_requested = List(ShopifyId(), load_default=list)
    orders_to_redact = List(ShopifyId(), load_default=list)
    data_request = Nested(_DataRequestSchema, load_default=None, allow_none=True)

    @post_load
    def _make(self, data, **_):
        request = data.get("data_request") or {}
        customer = data.get("customer") or {}
        return ComplianceRequest(
            shop_domain=data["shop_domain"],
            shop_id=data.get("shop_id"),
            customer_id=customer.get("id"),
            email=customer.get("email"),
            phone=customer.get("phone"),
            orders=data["orders_requested"] or data["orders_to_redact"],
            data_request_id=request.get("id"),
        )


class ShopRedactSchema(PayloadSchema):
    """shop/redact: it acts on the whole shop, whose domain and id are required."""

    shop_domain = Text(required=True)
    shop_id = ShopifyId(required=True)

    @post_load
    def _make(self, data, **_):
        return ComplianceRequest(shop_domain=data["shop_domain"], shop_id=data["shop_id"])
