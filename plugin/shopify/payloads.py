"""Marshmallow schemas for the webhook bodies we read (API version 2026-10), loading into small dataclasses.

Unknown fields are excluded: Shopify adds fields between versions and we read only what we use. Shapes follow
Shopify's webhook reference; since 2025-01 customer payloads carry neither tags nor marketing consent, which
arrive on `customer.tags_added|tags_removed` and `customers_email_marketing_consent/update` instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

from plugin.clock import ClockError, parse_instant
from plugin.shopify.ids import gid_number


class PayloadError(ValueError):
    """A signed body we cannot use: not JSON, or not the shape its topic promises."""


class UnknownTopicError(LookupError):
    """No schema is declared for the topic: the delivery is ignored, said so explicitly (a KeyError raised
    while loading a known topic is a bug, and fails the delivery instead)."""


# The span of plausible store times: a timestamp outside it is hostile or broken, and arithmetic on it
# (a deadline 48 hours later) would overflow. Shopify was founded in 2006.
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(2999, 12, 31, tzinfo=UTC)
MAX_ID = 2**63 - 1  # Shopify ids are 64-bit signed integers (BigInteger columns)
MAX_MONEY = Decimal(10) ** 12  # Money columns are Numeric(14, 2)
MAX_INT = 2**31 - 1  # Integer columns


class Instant(fields.Field):
    """An ISO 8601 timestamp as Shopify writes it (offsets, `Z`, or a space separator) → aware UTC."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError("Not a timestamp.")
        try:
            instant = parse_instant(value)
        except ClockError as error:
            raise ValidationError(str(error)) from None
        except OverflowError:  # year 1 with a positive offset, and the like
            raise ValidationError("Not a timestamp.") from None
        if not EARLIEST <= instant <= LATEST:
            raise ValidationError("Timestamp out of range.")
        return instant


class ShopifyId(fields.Field):
    """A Shopify id given as a number, a numeric string, or a GraphQL gid (`gid://shopify/Customer/1`)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("Not an id.")
        if isinstance(value, str) and not value.isascii():
            raise ValidationError("Not a Shopify id.")  # int() reads "²" or "١٢" as digits, or fails on them
        try:
            number = gid_number(value) if isinstance(value, int | str) else None
        except ValueError:  # more digits than int() reads
            number = None
        if number is None or not 0 < number <= MAX_ID:
            raise ValidationError("Not a Shopify id.")
        return number


class Text(fields.String):
    """A string we store: within its column's length, without NUL or lone surrogates (which PostgreSQL
    refuses, and which would fail the delivery instead of quarantining it)."""

    def __init__(self, *args, max_length: int = 255, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_length = max_length

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if len(text) > self.max_length:
            raise ValidationError(f"Longer than {self.max_length} characters.")
        if "\x00" in text:
            raise ValidationError("Contains a NUL character.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("Not valid Unicode.") from None
        return text


def _money(**kwargs) -> fields.Decimal:
    bounded = validate.Range(min=-MAX_MONEY, max=MAX_MONEY, min_inclusive=False, max_inclusive=False)
    return fields.Decimal(allow_none=True, load_default=None, validate=bounded, **kwargs)


def _count(**kwargs) -> fields.Integer:
    return fields.Integer(validate=validate.Range(min=-MAX_INT, max=MAX_INT), **kwargs)


def _optional(field_class=Text, **kwargs):
    return field_class(allow_none=True, load_default=None, **kwargs)


class PayloadSchema(Schema):
    """Base: exclude unknown fields; load into `model`."""

    model: type = dict

    class Meta:
        unknown = EXCLUDE

    @post_load
    def _make(self, data, **_):
        return self.model(**data)


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
    email = _optional(max_length=320)
    first_name = _optional()
    last_name = _optional()
    updated_at = _optional(Instant)
    created_at = _optional(Instant)


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

    state = _optional(max_length=32)
    opt_in_level = _optional(max_length=64)
    consent_updated_at = _optional(Instant)


class ConsentUpdateSchema(PayloadSchema):
    model = ConsentUpdate
    customer_id = ShopifyId(required=True)
    email_address = _optional(max_length=320)
    email_marketing_consent = fields.Nested(_ConsentSchema, required=True)

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

    amount = _money()
    currencyCode = _optional(validate=validate.Length(equal=3))  # noqa: N815 (Shopify's spelling)


class PurchasingSummarySchema(PayloadSchema):
    customer_id = ShopifyId(required=True, data_key="customerId")
    number_of_orders = _optional(_count, data_key="numberOfOrders")
    amount_spent = fields.Nested(_AmountSchema, allow_none=True, load_default=None, data_key="amountSpent")
    occurred_at = _optional(Instant, data_key="occurredAt")

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
    tags = fields.List(Text(), required=True)
    occurred_at = Instant(required=True, data_key="occurredAt")


@dataclass
class LineItem:
    product_id: int | None
    variant_id: int | None
    quantity: int
    price: Decimal | None


class LineItemSchema(PayloadSchema):
    model = LineItem
    product_id = _optional(ShopifyId)
    variant_id = _optional(ShopifyId)
    quantity = _count(load_default=1)
    price = _money()


@dataclass
class RefundData:
    id: int
    order_id: int
    created_at: datetime | None
    amount: Decimal


class _TransactionSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    kind = _optional()
    status = _optional()
    amount = _money()


class _RefundLineSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    subtotal = _money()
    total_tax = _money()


class RefundSchema(PayloadSchema):
    id = ShopifyId(required=True)
    order_id = ShopifyId(required=True)
    created_at = _optional(Instant)
    transactions = fields.List(fields.Nested(_TransactionSchema), load_default=list)
    refund_line_items = fields.List(fields.Nested(_RefundLineSchema), load_default=list)

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
    updated_at = _optional(Instant)
    processed_at = _optional(Instant)
    cancelled_at = _optional(Instant)
    name = _optional(max_length=64)
    email = _optional(max_length=320)
    customer = fields.Nested(CustomerRefSchema, allow_none=True, load_default=None)
    currency = _optional(validate=validate.Length(equal=3))
    total_price = _money()
    financial_status = _optional(max_length=32)
    fulfillment_status = _optional(max_length=32)
    customer_locale = _optional(max_length=16)
    checkout_token = _optional()
    cart_token = _optional()
    line_items = fields.List(fields.Nested(LineItemSchema), load_default=list)
    discount_codes = fields.List(fields.Nested(_DiscountCodeSchema), load_default=list)
    refunds = fields.List(fields.Nested(RefundSchema), load_default=list)

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
    status = _optional()
    updated_at = _optional(Instant)


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
    id = _optional(ShopifyId)
    cart_token = _optional()
    email = _optional(max_length=320)
    customer = fields.Nested(CustomerRefSchema, allow_none=True, load_default=None)
    created_at = _optional(Instant)
    completed_at = _optional(Instant)
    closed_at = _optional(Instant)
    abandoned_checkout_url = _optional(max_length=2048)
    customer_locale = _optional(max_length=16)
    currency = _optional(validate=validate.Length(equal=3))
    total_price = _money()
    line_items = fields.List(fields.Nested(LineItemSchema), load_default=list)


@dataclass
class CartData:
    token: str
    updated_at: datetime
    line_items: list[LineItem] = field(default_factory=list)


class CartSchema(PayloadSchema):
    model = CartData
    token = Text(required=True)
    updated_at = Instant(required=True)
    line_items = fields.List(fields.Nested(LineItemSchema), load_default=list)


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
    available = _optional(_count)
    updated_at = _optional(Instant)


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
    inventory_item_id = _optional(ShopifyId)
    title = _optional()


class ProductSchema(PayloadSchema):
    model = ProductData
    id = ShopifyId(required=True)
    title = _optional(max_length=65535)
    updated_at = _optional(Instant)
    variants = fields.List(fields.Nested(_VariantSchema), load_default=list)


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
    error_code = _optional()
    completed_at = _optional(Instant)
    type = _optional()


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

    id = _optional(ShopifyId)


class _ComplianceCustomerSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    id = ShopifyId(required=True)
    email = _optional(max_length=320)
    phone = _optional(max_length=64)


class ComplianceSchema(PayloadSchema):
    """customers/data_request and customers/redact: they act on one customer, whose id is required."""

    shop_domain = Text(required=True)
    shop_id = _optional(ShopifyId)
    customer = fields.Nested(_ComplianceCustomerSchema, required=True)
    orders_requested = fields.List(ShopifyId(), load_default=list)
    orders_to_redact = fields.List(ShopifyId(), load_default=list)
    data_request = fields.Nested(_DataRequestSchema, load_default=None, allow_none=True)

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


def _parse(body: bytes) -> dict:
    """The body as a JSON object (a nesting too deep for the parser is a PayloadError, not a crash)."""
    try:
        document = json.loads(body, parse_float=Decimal)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PayloadError(f"body is not JSON: {error}") from None
    except (RecursionError, ValueError) as error:  # ValueError: an integer of more digits than int() reads
        raise PayloadError(f"body is not usable JSON: {type(error).__name__}") from None
    if not isinstance(document, dict):
        raise PayloadError(f"body is a JSON {type(document).__name__}, not an object")
    return document
