"""The fake store's bulk operations: `bulkOperationRunQuery` over `customers` or `orders` writes a JSONL file
in Shopify's shape (one object per line, nested connections as child lines with `__parentId` right after
their parent), `bulkOperation(id:)` reports it COMPLETED with a URL to download it, and a signed
`bulk_operations/finish` webhook is queued (and POSTed to `webhook_url` when one is set).

The store's history is generated, deterministic for a seed, at the size set through `/_fake/control`
(`{"history": {"customers": 20000, "orders": 100000, "seed": 3, "now": "2026-11-01T12:00:00+00:00"}}`).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import requests

from plugin.config import API_VERSION
from plugin.demo.synthetic import sign
from plugin.shopify.ids import gid_number

# A new store has no history until a test or the demo gives it one.
DEFAULT_HISTORY = {"customers": 0, "orders": 0, "seed": 1, "now": "2026-11-01T12:00:00+00:00"}
FIRST = ("Ann", "Bruno", "Chiara", "Dmitri", "Ewa", "Femi", "Giulia", "Hana", "Ivan", "Jonas")
LAST = ("Rossi", "Nowak", "Ivanova", "Smith", "Kowalska", "Bianchi", "Okafor", "Lee")
LOCALES = ("en", "it", "pl", "ru")


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def history_lines(customers: int, orders: int, seed: int, now: str, root: str) -> Iterator[dict]:
    """The store's customers (root "customers") or orders with their line items (root "orders")."""
    rng = random.Random(seed)
    end = datetime.fromisoformat(now)
    buyers = [rng.randrange(1, customers + 1) for _ in range(orders)]  # who placed order n
    if root == "customers":
        for n in range(1, customers + 1):
            created = end - timedelta(days=rng.randrange(1, 900))
            state = rng.choice(("SUBSCRIBED", "SUBSCRIBED", "NOT_SUBSCRIBED", "UNSUBSCRIBED"))
            yield {
                "id": f"gid://shopify/Customer/{n}",
                "firstName": FIRST[n % len(FIRST)],
                "lastName": LAST[n % len(LAST)],
                "locale": LOCALES[n % len(LOCALES)],
                "createdAt": _iso(created),
                "updatedAt": _iso(created + timedelta(hours=1)),
                "tags": ["wholesale"] if n % 50 == 0 else [],
                "defaultEmailAddress": {
                    "emailAddress": f"shopper{n}@example.com",
                    "marketingState": state,
                    "marketingUpdatedAt": _iso(created),
                },
            }
        return
    for n, buyer in enumerate(buyers, start=1):
        placed = end - timedelta(minutes=rng.randrange(60, 720 * 24 * 60))
        total = rng.randrange(1500, 25000) / 100
        cancelled = rng.random() < 0.03
        refunds = []
        if not cancelled and rng.random() < 0.05:
            refunds.append(
                {
                    "id": f"gid://shopify/Refund/{n}",
                    "createdAt": _iso(placed + timedelta(days=3)),
                    "totalRefundedSet": {"shopMoney": {"amount": f"{total / 2:.2f}"}},
                }
            )
        order_gid = f"gid://shopify/Order/{n}"
        yield {
            "id": order_gid,
            "name": f"#{1000 + n}",
            "createdAt": _iso(placed),
            "updatedAt": _iso(placed + timedelta(days=4 if refunds else 0, minutes=5)),
            "cancelledAt": _iso(placed + timedelta(hours=2)) if cancelled else None,
            "currencyCode": "EUR",
            "customerLocale": LOCALES[buyer % len(LOCALES)],
            "displayFinancialStatus": "REFUNDED"
            if cancelled
            else "PARTIALLY_REFUNDED"
            if refunds
            else "PAID",
            "displayFulfillmentStatus": "FULFILLED" if placed < end - timedelta(days=3) else "UNFULFILLED",
            "discountCodes": ["WELCOME10"] if n % 17 == 0 else [],
            "customer": {"id": f"gid://shopify/Customer/{buyer}"} if n % 40 else None,  # some guests
            "totalPriceSet": {"shopMoney": {"amount": f"{total:.2f}"}},
            "refunds": refunds,
        }
        for line in range(1 + n % 3):
            product = 7000 + (n * 7 + line) % 40
            yield {
                "id": f"gid://shopify/LineItem/{n * 10 + line}",
                "quantity": 1 + line % 2,
                "variant": {"id": f"gid://shopify/ProductVariant/{product + 1000}"},
                "product": {"id": f"gid://shopify/Product/{product}"},
                "originalUnitPriceSet": {"shopMoney": {"amount": "19.90"}},
                "__parentId": order_gid,
            }


class FakeBulk:
    """Mixed into FakeStore, which provides `lock`, `ids`, `shop_domain`, `api_secret` and `origin`."""

    def _init_bulk(self) -> None:
        self.history = dict(DEFAULT_HISTORY)
        self.bulk_operations: dict[str, dict] = {}
        self.outgoing_webhooks: list[dict] = []  # (topic, headers, body) Shopify would POST to the app
        self.webhook_url: str | None = None
        self.folder = tempfile.mkdtemp(prefix="fake-store-bulk-")
        # Misbehaviour on request (`/_fake/control` {"bulk": ...}): "refuse" answers bulkOperationRunQuery
        # with userErrors; "fail" / "cancel" end the operation FAILED / CANCELED instead of COMPLETED.
        self.bulk_misbehaviour: str | None = None
        # {"pages": "stuck"}: every page says there is a next one, at the same cursor; "endless": a next
        # page always, at a new cursor (reconciliation must stop on both).
        self.page_misbehaviour: str | None = None

    def _bulkOperationRunQuery(self, query: str, groupObjects: bool = True) -> dict:  # noqa: N803
        if any(op["status"] in ("CREATED", "RUNNING") for op in self.bulk_operations.values()):
            error = {
                "field": ["query"],
                "code": "OPERATION_IN_PROGRESS",
                "message": "A bulk query is running.",
            }
            return {"bulkOperation": None, "userErrors": [error]}
        if self.bulk_misbehaviour == "refuse":
            error = {"field": ["query"], "code": "INVALID", "message": "Bulk queries are not available."}
            return {"bulkOperation": None, "userErrors": [error]}
        root = "orders" if query.lstrip(" {\n").startswith("orders") else "customers"
        number = next(self.ids)
        gid = f"gid://shopify/BulkOperation/{number}"
        path = os.path.join(self.folder, f"{number}.jsonl")
        count = 0
        with open(path, "w") as handle:
            for line in history_lines(root=root, **self.history):
                handle.write(json.dumps(line, separators=(",", ":")) + "\n")
                count += 1
        status = {"fail": "FAILED", "cancel": "CANCELED"}.get(self.bulk_misbehaviour or "", "COMPLETED")
        self.bulk_operations[gid] = {"id": gid, "status": status, "path": path, "objectCount": count}
        self._queue_finish(gid)
        return {"bulkOperation": {"id": gid, "status": "CREATED"}, "userErrors": []}

    def _bulkOperation(self, id: str) -> dict | None:  # noqa: A002
        op = self.bulk_operations.get(id)
        if op is None:
            return None
        number = gid_number(id)
        return {
            "id": id,
            "status": op["status"],
            "errorCode": "INTERNAL_SERVER_ERROR" if op["status"] == "FAILED" else None,
            "objectCount": str(op["objectCount"]),
            "url": f"{self.origin}/_fake/bulk/{number}.jsonl",
            "partialDataUrl": None,
        }

    # --- paginated reads (reconciliation) ---------------------------------------------------------------
    def _customers(
        self, first: int = 50, after: str | None = None, query: str = "", sortKey=None, **_
    ) -> dict:  # noqa: N803
        return self._page("customers", first, after, query)

    def _orders(self, first: int = 50, after: str | None = None, query: str = "", sortKey=None, **_) -> dict:  # noqa: N803
        return self._page("orders", first, after, query)

    def _page(self, root: str, first: int, after: str | None, query: str) -> dict:
        since = query.split("updated_at:>", 1)[1].strip("'\" ") if "updated_at:>" in query else None
        nodes = []
        for line in history_lines(root=root, **self.history):
            if "__parentId" in line:
                if nodes and nodes[-1]["id"] == line["__parentId"]:
                    nodes[-1]["lineItems"]["nodes"].append(line)
                continue
            if since is None or line["updatedAt"] > since:
                nodes.append(dict(line, lineItems={"nodes": []}, email=None) if root == "orders" else line)
        nodes.sort(key=lambda n: n["updatedAt"])
        start = int(after or 0)
        if self.page_misbehaviour == "stuck":
            return {"nodes": nodes[:first], "pageInfo": {"hasNextPage": True, "endCursor": "0"}}
        chunk = nodes[start : start + first]
        end = start + len(chunk)
        if self.page_misbehaviour == "endless":
            return {"nodes": chunk, "pageInfo": {"hasNextPage": True, "endCursor": str(start + first)}}
        return {"nodes": chunk, "pageInfo": {"hasNextPage": end < len(nodes), "endCursor": str(end)}}

    def bulk_file(self, number: str) -> str | None:
        path = os.path.join(self.folder, f"{number}.jsonl")
        return path if number.isdigit() and os.path.exists(path) else None

    def _queue_finish(self, gid: str) -> None:
        now = _iso(datetime.now(UTC))
        body = json.dumps(
            {
                "admin_graphql_api_id": gid,
                "completed_at": now,
                "created_at": now,
                "error_code": None,
                "status": "completed",
                "type": "query",
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": "bulk_operations/finish",
            "X-Shopify-Shop-Domain": self.shop_domain,
            "X-Shopify-Webhook-Id": f"fake-bulk-{gid.rsplit('/', 1)[1]}",
            "X-Shopify-API-Version": API_VERSION,
            "X-Shopify-Triggered-At": now,
            "X-Shopify-Hmac-Sha256": sign(body, self.api_secret or ""),
        }
        self.outgoing_webhooks.append({"headers": headers, "body": body})
        if self.webhook_url:
            url = self.webhook_url
            threading.Thread(
                target=lambda: requests.post(url, data=body, headers=headers, timeout=10)
            ).start()
