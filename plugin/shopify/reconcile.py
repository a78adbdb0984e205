"""Reconciliation: customers and orders updated since the last sync, pulled through GraphQL and fed through
the same path as webhooks, so a webhook Shopify never delivered (or we lost) still lands.

Each node becomes a webhook-shaped body recorded as a Delivery (topic customers/update, orders/updated,
customers_email_marketing_consent/update) with a webhook id derived from the node and its `updatedAt`, so
pulling the same version twice records it once, and the handlers' staleness guards settle the rest. The
deliveries are drained like any other. The shop's `last_reconciled_at` is the data-freshness figure shown
to merchants.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

from sqlalchemy import update

from plugin import clock
from plugin.config import API_VERSION
from plugin.shopify.client import ShopifyClient
from plugin.shopify.ids import consent_state, gid_number
from plugin.store import deliveries
from plugin.store.db import Database
from plugin.store.deliveries import WebhookHeaders
from plugin.store.models import Shop

log = logging.getLogger(__name__)

OVERLAP = timedelta(minutes=5)  # Shopify's search index lags a little; overlapping windows cost nothing
FIRST_WINDOW = timedelta(days=1)  # a shop never reconciled looks this far back (the backfill did the rest)
# Pages of one listing (customers, orders) read per run: 40 pages of 100 = 4,000 records. The listings are
# sorted by updatedAt, so a run that stops early records the last time it read to as the shop's sync time,
# and the next run (15 minutes later) goes on from there.
MAX_PAGES = 40


def reconcile(db: Database, client: ShopifyClient, shop_id: int) -> dict[str, int]:
    """Record every customer and order updated since the last sync as deliveries; returns counts."""
    now = clock.now()
    with db.session() as session:
        shop = session.get(Shop, shop_id)
        since = (shop.last_reconciled_at or now - FIRST_WINDOW) - OVERLAP
        domain = shop.domain
    search = f"updated_at:>'{since.strftime('%Y-%m-%dT%H:%M:%SZ')}'"
    counts = {"customers": 0, "orders": 0, "recorded": 0, "ids": [], "stopped": []}
    read_to: dict[str, str] = {}  # listing -> updatedAt of the last node read
    for node in _pages(client, "CustomersUpdatedSince", "customers", search, counts["stopped"]):
        counts["customers"] += 1
        read_to["customers"] = node.get("updatedAt") or read_to.get("customers")
        for topic, body in customer_bodies(node):
            _record(db, domain, topic, node, body, now, counts)
    for node in _pages(client, "OrdersUpdatedSince", "orders", search, counts["stopped"]):
        counts["orders"] += 1
        read_to["orders"] = node.get("updatedAt") or read_to.get("orders")
        _record(db, domain, "orders/updated", node, order_body(node), now, counts)
    synced = now
    for root, _why in counts["stopped"]:  # stopped early: synced only up to what that listing read
        last = read_to.get(root)
        synced = min(synced, datetime.fromisoformat(last.replace("Z", "+00:00")) if last else since + OVERLAP)
    counts["stopped"] = [why for _root, why in counts["stopped"]]
    with db.session() as session:
        session.execute(
            update(Shop).where(Shop.id == shop_id).values(last_reconciled_at=max(synced, since + OVERLAP))
        )
    return counts


def _pages(client: ShopifyClient, operation: str, root: str, search: str, stopped: list) -> Iterator[dict]:
    """The nodes of every page; stops on a cursor that does not advance or after MAX_PAGES pages, and says
    so in `stopped` as (listing, why)."""
    after, seen = None, set()
    for _ in range(MAX_PAGES):
        page = client.execute(operation, {"query": search, "after": after})[root]
        yield from page["nodes"]
        if not page["pageInfo"]["hasNextPage"]:
            return
        after = page["pageInfo"]["endCursor"]
        if after is None or after in seen:
            log.warning("%s: cursor %r does not advance; stopped", operation, after)
            stopped.append((root, f"{root}: cursor {after!r} does not advance"))
            return
        seen.add(after)
    log.warning("%s: %d pages read; the rest waits for the next run", operation, MAX_PAGES)
    stopped.append((root, f"{root}: {MAX_PAGES} pages read, the rest waits for the next run"))


def _record(db, domain: str, topic: str, node: dict, body: dict, now: datetime, counts: dict) -> None:
    headers = WebhookHeaders(
        webhook_id=f"reconcile:{topic}:{node['id']}:{node.get('updatedAt')}",
        topic=topic,
        shop_domain=domain,
        api_version=API_VERSION,
        event_id=None,
        triggered_at=now,
    )
    recorded = deliveries.record_delivery(db, headers, json.dumps(body).encode(), now)
    if recorded.created:
        counts["recorded"] += 1
        counts["ids"].append(recorded.id)


# --- GraphQL node → webhook body (the REST shape the payload schemas read) ---------------------------------
def customer_bodies(node: dict) -> list[tuple[str, dict]]:
    customer_id = gid_number(node["id"])
    email = node.get("defaultEmailAddress") or {}
    profile = {
        "id": customer_id,
        "email": email.get("emailAddress"),
        "first_name": node.get("firstName"),
        "last_name": node.get("lastName"),
        "locale": node.get("locale"),
        "created_at": node.get("createdAt"),
        "updated_at": node.get("updatedAt"),
        "admin_graphql_api_id": node["id"],
    }
    bodies = [("customers/update", profile)]
    if email.get("marketingState"):
        state = email["marketingState"]
        consent = {
            "customer_id": customer_id,
            "email_address": email.get("emailAddress"),
            "email_marketing_consent": {
                "state": consent_state(state),
                "opt_in_level": None,
                "consent_updated_at": email.get("marketingUpdatedAt"),
            },
        }
        bodies.append(("customers_email_marketing_consent/update", consent))
    return bodies


def order_body(node: dict) -> dict:
    order_id = gid_number(node["id"])
    customer = node.get("customer")
    fulfillment = (node.get("displayFulfillmentStatus") or "").lower()
    return {
        "id": order_id,
        "admin_graphql_api_id": node["id"],
        "name": node.get("name"),
        "email": node.get("email"),
        "created_at": node["createdAt"],
        "updated_at": node.get("updatedAt"),
        "processed_at": node.get("processedAt"),
        "cancelled_at": node.get("cancelledAt"),
        "currency": node.get("currencyCode"),
        "customer_locale": node.get("customerLocale"),
        "financial_status": (node.get("displayFinancialStatus") or "").lower() or None,
        "fulfillment_status": None if fulfillment in ("", "unfulfilled") else fulfillment,
        "total_price": _amount(node.get("totalPriceSet")),
        "discount_codes": [{"code": code} for code in node.get("discountCodes") or []],
        "customer": {
            "id": gid_number(customer["id"]),
            "email": (customer.get("defaultEmailAddress") or {}).get("emailAddress"),
            "first_name": customer.get("firstName"),
            "last_name": customer.get("lastName"),
        }
        if customer
        else None,
        "line_items": [
            {
                "id": gid_number(item["id"]),
                "product_id": gid_number((item.get("product") or {}).get("id")),
                "variant_id": gid_number((item.get("variant") or {}).get("id")),
                "quantity": item.get("quantity") or 1,
                "price": _amount(item.get("originalUnitPriceSet")),
            }
            for item in (node.get("lineItems") or {}).get("nodes") or []
        ],
        "refunds": [
            {
                "id": gid_number(refund["id"]),
                "order_id": order_id,
                "created_at": refund.get("createdAt"),
                "transactions": [
                    {"kind": "refund", "status": "success", "amount": _amount(refund.get("totalRefundedSet"))}
                ],
            }
            for refund in node.get("refunds") or []
        ],
    }


def _amount(money: dict | None) -> str:
    return ((money or {}).get("shopMoney") or {}).get("amount") or "0.00"
