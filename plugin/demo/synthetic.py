"""Webhook bodies shaped like Shopify's 2026-10 reference samples, and the signing Shopify does.

Used by `lifecycle demo`, the benchmarks and the tests, so all three speak the same payloads. Only the
fields Shopify sends are used (trimmed of the ones nobody reads, such as address blocks and price sets).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from plugin.config import API_VERSION


def iso(instant: datetime) -> str:
    return instant.isoformat(timespec="seconds")


def gid(kind: str, id_: int) -> str:
    return f"gid://shopify/{kind}/{id_}"


def sign(body: bytes, secret: str) -> str:
    """X-Shopify-Hmac-Sha256: base64 of HMAC-SHA256 over the raw body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def webhook_headers(topic: str, shop: str, webhook_id: str, body: bytes, secret: str, **extra) -> dict:
    """The headers Shopify sends with a webhook, signed with `secret`."""
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-API-Version": API_VERSION,
        "X-Shopify-Event-Id": extra.pop("event_id", webhook_id),
        "X-Shopify-Triggered-At": extra.pop("triggered_at", "2026-11-01T00:00:00Z"),
        "X-Shopify-Hmac-Sha256": sign(body, secret),
    }
    headers.update(extra)
    return headers


def encode(payload: Any) -> bytes:
    return json.dumps(payload, default=str, separators=(",", ":")).encode()


def customer_ref(customer_id: int, email: str | None, first: str = "Ann", last: str = "Lee", **extra) -> dict:
    """The `customer` object embedded in orders and checkouts (no tags, no consent since 2025-01)."""
    return {
        "id": customer_id,
        "email": email,
        "created_at": extra.pop("created_at", None),
        "updated_at": extra.pop("updated_at", None),
        "first_name": first,
        "last_name": last,
        "state": "enabled",
        "note": None,
        "verified_email": True,
        "multipass_identifier": None,
        "tax_exempt": False,
        "phone": None,
        "currency": extra.pop("currency", "EUR"),
        "tax_exemptions": [],
        "admin_graphql_api_id": gid("Customer", customer_id),
        **extra,
    }


def customer_payload(
    customer_id: int, email: str, created_at: datetime, updated_at: datetime | None = None, **kw
):
    """customers/create|update."""
    body = customer_ref(
        customer_id, email, created_at=iso(created_at), updated_at=iso(updated_at or created_at), **kw
    )
    body["addresses"] = []
    return body


def consent_payload(customer_id: int, email: str, state: str, at: datetime | None) -> dict:
    """customers_email_marketing_consent/update."""
    return {
        "customer_id": customer_id,
        "email_address": email,
        "email_marketing_consent": {
            "state": state,
            "opt_in_level": "single_opt_in",
            "consent_updated_at": iso(at) if at else None,
        },
    }


def tags_payload(customer_id: int, tags: list[str], at: datetime) -> dict:
    """customer.tags_added|tags_removed (GraphQL-shaped: camelCase, gid)."""
    return {"customerId": gid("Customer", customer_id), "tags": tags, "occurredAt": iso(at)}


def purchasing_summary_payload(
    customer_id: int, orders: int, spent: Decimal, currency: str, at: datetime
) -> dict:
    return {
        "customerId": gid("Customer", customer_id),
        "numberOfOrders": orders,
        "amountSpent": {"amount": f"{spent:.2f}", "currencyCode": currency},
        "lastOrderId": None,
        "occurredAt": iso(at),
    }


def line_item(line_id: int, product_id: int, variant_id: int, price: Decimal, quantity: int = 1) -> dict:
    return {
        "id": line_id,
        "admin_graphql_api_id": gid("LineItem", line_id),
        "current_quantity": quantity,
        "fulfillable_quantity": quantity,
        "gift_card": False,
        "name": f"Product {product_id}",
        "price": f"{price:.2f}",
        "product_exists": True,
        "product_id": product_id,
        "quantity": quantity,
        "requires_shipping": True,
        "sku": f"SKU-{variant_id}",
        "taxable": True,
        "title": f"Product {product_id}",
        "total_discount": "0.00",
        "variant_id": variant_id,
        "variant_title": None,
        "vendor": "Lifecycle Demo",
        "tax_lines": [],
        "discount_allocations": [],
    }


def order_payload(
    order_id: int,
    customer_id: int | None,
    created_at: datetime,
    total: Decimal,
    *,
    email: str | None = None,
    updated_at: datetime | None = None,
    cancelled_at: datetime | None = None,
    currency: str = "EUR",
    locale: str = "en",
    checkout_token: str | None = None,
    lines: list[dict] | None = None,
    discount_codes: list[str] = (),
    refunds: list[dict] = (),
    financial_status: str = "paid",
    fulfillment_status: str | None = None,
) -> dict:
    """orders/create|updated|paid|cancelled|fulfilled."""
    stamp = iso(created_at)
    money = f"{total:.2f}"
    return {
        "id": order_id,
        "admin_graphql_api_id": gid("Order", order_id),
        "buyer_accepts_marketing": False,
        "cancel_reason": "customer" if cancelled_at else None,
        "cancelled_at": iso(cancelled_at) if cancelled_at else None,
        "cart_token": None,
        "checkout_token": checkout_token,
        "confirmed": True,
        "contact_email": email,
        "created_at": stamp,
        "currency": currency,
        "current_total_price": money,
        "customer_locale": locale,
        "discount_codes": [{"code": c, "amount": "0.00", "type": "percentage"} for c in discount_codes],
        "email": email,
        "financial_status": financial_status,
        "fulfillment_status": fulfillment_status,
        "name": f"#{order_id % 100000}",
        "order_number": order_id % 100000,
        "presentment_currency": currency,
        "processed_at": stamp,
        "source_name": "web",
        "subtotal_price": money,
        "tags": "",
        "test": False,
        "total_discounts": "0.00",
        "total_line_items_price": money,
        "total_price": money,
        "total_tax": "0.00",
        "updated_at": iso(updated_at or cancelled_at or created_at),
        "customer": customer_ref(customer_id, email, currency=currency) if customer_id else None,
        "line_items": lines if lines is not None else [line_item(order_id * 10, 7001, 8001, total)],
        "refunds": list(refunds),
        "shipping_lines": [],
        "fulfillments": [],
    }


def refund_payload(refund_id: int, order_id: int, amount: Decimal, at: datetime) -> dict:
    """refunds/create (and the entries of an order's `refunds` list)."""
    return {
        "id": refund_id,
        "admin_graphql_api_id": gid("Refund", refund_id),
        "created_at": iso(at),
        "note": "Customer return",
        "order_id": order_id,
        "processed_at": iso(at),
        "restock": True,
        "refund_line_items": [],
        "order_adjustments": [],
        "duties": [],
        "transactions": [
            {
                "id": refund_id * 10,
                "admin_graphql_api_id": gid("OrderTransaction", refund_id * 10),
                "amount": f"{amount:.2f}",
                "kind": "refund",
                "status": "success",
                "order_id": order_id,
                "gateway": "bogus",
                "created_at": iso(at),
            }
        ],
    }


def checkout_payload(
    token: str,
    customer_id: int | None,
    email: str | None,
    updated_at: datetime,
    total: Decimal,
    *,
    checkout_id: int | None = None,
    cart_token: str | None = None,
    completed_at: datetime | None = None,
    locale: str = "en",
    currency: str = "EUR",
) -> dict:
    """checkouts/create|update."""
    return {
        "id": checkout_id or abs(hash(token)) % 10**15,
        "token": token,
        "cart_token": cart_token,
        "email": email,
        "buyer_accepts_marketing": False,
        "created_at": iso(updated_at),
        "updated_at": iso(updated_at),
        "completed_at": iso(completed_at) if completed_at else None,
        "closed_at": None,
        "currency": currency,
        "presentment_currency": currency,
        "customer_locale": locale,
        "line_items": [
            {
                "product_id": 7001,
                "variant_id": 8001,
                "quantity": 1,
                "price": f"{total:.2f}",
                "title": "Product",
            }
        ],
        "name": f"#{token[:8]}",
        "abandoned_checkout_url": f"https://checkout.local/checkouts/{token}/recover?key=demo",
        "discount_codes": [],
        "total_price": f"{total:.2f}",
        "subtotal_price": f"{total:.2f}",
        "total_tax": "0.00",
        "customer": customer_ref(customer_id, email, currency=currency) if customer_id else None,
    }


def cart_payload(token: str, updated_at: datetime, variant_id: int = 8001, quantity: int = 1) -> dict:
    """carts/create|update (no customer in cart payloads)."""
    return {
        "id": token,
        "token": token,
        "line_items": [
            {
                "id": variant_id,
                "variant_id": variant_id,
                "product_id": 7001,
                "quantity": quantity,
                "price": "19.99",
            }
        ],
        "note": None,
        "updated_at": iso(updated_at),
        "created_at": iso(updated_at),
    }


def inventory_level_payload(inventory_item_id: int, location_id: int, available: int, at: datetime) -> dict:
    return {
        "inventory_item_id": inventory_item_id,
        "location_id": location_id,
        "available": available,
        "updated_at": iso(at),
        "admin_graphql_api_id": f"gid://shopify/InventoryLevel/{location_id}?inventory_item_id={inventory_item_id}",
    }


def product_payload(product_id: int, title: str, variants: list[tuple[int, int]], at: datetime) -> dict:
    """products/create|update; variants as (variant_id, inventory_item_id)."""
    return {
        "admin_graphql_api_id": gid("Product", product_id),
        "id": product_id,
        "title": title,
        "status": "active",
        "updated_at": iso(at),
        "variants": [
            {"id": v, "product_id": product_id, "inventory_item_id": i, "title": "Default", "price": "19.99"}
            for v, i in variants
        ],
    }


def shop_payload(shop_domain: str) -> dict:
    """app/uninstalled carries the shop object."""
    return {"id": 548380009, "name": "Demo", "domain": shop_domain, "myshopify_domain": shop_domain}


def bulk_finish_payload(operation_id: int, status: str = "completed") -> dict:
    return {
        "admin_graphql_api_id": gid("BulkOperation", operation_id),
        "completed_at": "2026-11-01T00:00:00Z",
        "created_at": "2026-11-01T00:00:00Z",
        "error_code": None,
        "status": status,
        "type": "query",
    }


def redact_payload(shop_domain: str, customer_id: int, email: str, orders: list[int]) -> dict:
    """customers/redact."""
    return {
        "shop_id": 548380009,
        "shop_domain": shop_domain,
        "customer": {"id": customer_id, "email": email, "phone": None},
        "orders_to_redact": orders,
    }


def first_timer_rows(
    shop_id: int, count: int, ordered: datetime, first_customer_id: int = 1000
) -> list[dict]:
    """`count` rows of the shoppers table: first-time buyers whose one order was placed at `ordered`, their
    stage written back already (a bulk seed for the tick's time moves and the write-back's benchmark)."""
    return [
        dict(
            shop_id=shop_id,
            customer_id=first_customer_id + i,
            orders_count=1,
            total_spent=Decimal(40),
            first_order_at=ordered,
            last_order_at=ordered,
            stage="first_time",
            stage_changed_at=ordered,
            synced_stage="first_time",
            tag_events={},
            checkout_open=False,
        )
        for i in range(count)
    ]
