"""History backfill on install: the store's customers, then its orders, through GraphQL bulk operations.

Each step launches a bulk query; Shopify answers with `bulk_operations/finish` (the tick polls too, in
case that webhook never comes); the JSONL result is streamed line by line (never loaded whole) and written
in batches, one transaction each, with set-based upserts that respect the same staleness guards as the
webhook path (an older `updatedAt` never overwrites newer facts). After the orders, counts are recomputed
from the stored rows and stages assigned in set-based SQL, recorded as transitions with cause `backfill`,
which plans no plays: history triggers no welcome or win-back storm.

Progress lives in `shops.backfill`: {status, step, operation_id, started_at, finished_at, lines, customers,
orders, error}. Status is one of pending, running, importing, done, failed. A refused bulk query (userErrors,
a rejected document, a revoked token) or a failed, canceled or expired operation ends `failed` with the
reason, which the tick leaves alone; `lifecycle shops backfill DOMAIN` starts it again (`retry`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import requests
from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from plugin import clock
from plugin.shopify.client import ShopifyAuthError, ShopifyClient, ShopifyUserErrors, document
from plugin.shopify.ids import consent_state, gid_number
from plugin.store import stage_sql, stage_syncs
from plugin.store.db import Database
from plugin.store.models import Order, Refund, Shop, Shopper
from plugin.store.shoppers import net_spend

BATCH = 2000
STEPS = ("customers", "orders")
QUERIES = {"customers": "BackfillCustomers.bulk", "orders": "BackfillOrders.bulk"}


class BackfillError(Exception):
    """Shopify refused the bulk query or the operation failed; recorded on the shop."""


def step(db: Database, client: ShopifyClient, shop_id: int) -> dict:
    """Advance the shop's backfill as far as it can go now; returns its progress. Safe to run twice."""
    with db.session() as session:
        progress = dict(session.get(Shop, shop_id).backfill or {})
    if progress.get("status") in ("done", "failed"):
        return progress
    try:
        return _advance(db, client, shop_id, progress)
    except (ShopifyUserErrors, ShopifyAuthError) as error:  # permanent: polling again would not help
        return _save(db, shop_id, progress, status="failed", error=f"Shopify refused: {error}")


def retry(db: Database, shop_id: int) -> dict | None:
    """Start a failed (or never started) backfill again from its first step; None if it is under way or
    done. The caller queues the step."""
    with db.session() as session:
        progress = dict(session.get(Shop, shop_id).backfill or {})
    if progress.get("status") not in (None, "pending", "failed"):
        return None
    return _save(db, shop_id, {}, status="pending", retried_at=clock.now().isoformat())


def _advance(db: Database, client: ShopifyClient, shop_id: int, progress: dict) -> dict:
    if not progress.get("operation_id"):
        return _launch(db, client, shop_id, STEPS[0], {**progress, "started_at": clock.now().isoformat()})
    operation = client.execute("BulkOperation", {"id": progress["operation_id"]})["bulkOperation"] or {}
    status = operation.get("status")
    if status in ("CREATED", "RUNNING", "CANCELING"):
        return progress
    if status != "COMPLETED":  # FAILED, CANCELED, EXPIRED, or an operation Shopify no longer knows
        why = f"bulk operation {status or 'not found'}"
        if operation.get("errorCode"):
            why += f" ({operation['errorCode']})"
        return _save(db, shop_id, progress, status="failed", error=why)
    progress = _save(db, shop_id, progress, status="importing")
    if operation.get("url"):  # no url: the query matched nothing
        for done in import_lines(db, shop_id, progress["step"], stream_lines(operation["url"])):
            progress = _save(db, shop_id, progress, **done)
    if progress["step"] == STEPS[0]:
        return _launch(db, client, shop_id, STEPS[1], progress)
    finish(db, shop_id)
    return _save(db, shop_id, progress, status="done", finished_at=clock.now().isoformat())


def _launch(db, client: ShopifyClient, shop_id: int, which: str, progress: dict) -> dict:
    answer = client.execute("BulkOperationRunQuery", {"query": document(QUERIES[which])})
    result = answer["bulkOperationRunQuery"]
    if result["userErrors"]:
        errors = "; ".join(e["message"] for e in result["userErrors"])
        return _save(db, shop_id, progress, status="failed", error=errors)
    return _save(
        db, shop_id, progress, status="running", step=which, operation_id=result["bulkOperation"]["id"]
    )


def _save(db, shop_id: int, progress: dict, **changes) -> dict:
    progress = {**progress, **changes}
    with db.session() as session:
        session.execute(update(Shop).where(Shop.id == shop_id).values(backfill=progress))
    return progress


def stream_lines(url: str) -> Iterator[dict]:
    """Each JSONL line of the result, decoded, read from the network as it arrives."""
    with requests.get(url, stream=True, timeout=60) as response:
        response.raise_for_status()
        for raw in response.iter_lines(chunk_size=1 << 16):
            if raw:
                yield json.loads(raw)


def import_lines(db: Database, shop_id: int, which: str, lines: Iterable[dict]) -> Iterator[dict]:
    """Write the lines in batches (one transaction each); yield the running counts after each batch."""
    counts = {"lines": 0, which: 0}
    orders: dict[str, dict] = {}  # this batch's orders by gid, so their line items can join them
    late_items: list[dict] = []  # line items whose order was already written (never with grouping)
    refunds: list[dict] = []
    customers: list[dict] = []
    for line in lines:
        counts["lines"] += 1
        parent = line.get("__parentId")
        if parent is not None:
            if parent in orders:
                orders[parent]["line_items"].append(_line_item(line))
            else:
                late_items.append({**_line_item(line), "order_id": gid_number(parent)})
            continue
        if which == "customers":
            customers.append(_customer_row(shop_id, line))
        else:
            row, order_refunds = _order_row(shop_id, line)
            orders[line["id"]] = row
            refunds += order_refunds
        counts[which] += 1
        if len(customers) + len(orders) >= BATCH:
            _write(db, customers, orders, refunds)
            customers, orders, refunds = [], {}, []
            yield dict(counts)
    _write(db, customers, orders, refunds)
    if late_items:
        _attach_late_items(db, shop_id, late_items)
    yield dict(counts)


def _write(db: Database, customers: list[dict], orders: dict[str, dict], refunds: list[dict]) -> None:
    with db.session() as session:
        if customers:
            _upsert_customers(db, session, customers)
        if orders:
            _upsert_orders(db, session, list(orders.values()))
        if refunds:
            session.execute(
                db.insert(Refund).on_conflict_do_nothing(index_elements=["shop_id", "refund_id"]), refunds
            )


def _upsert_customers(db, session: Session, rows: list[dict]) -> None:
    insert = db.insert(Shopper)
    new = insert.excluded
    newer_profile = or_(
        Shopper.customer_updated_at.is_(None), new.customer_updated_at > Shopper.customer_updated_at
    )
    newer_consent = or_(
        Shopper.consent_updated_at.is_(None), new.consent_updated_at > Shopper.consent_updated_at
    )

    def if_newer(column, guard=newer_profile):
        return case((guard, getattr(new, column.key)), else_=column)

    statement = insert.on_conflict_do_update(
        index_elements=["shop_id", "customer_id"],
        set_={
            "email": if_newer(Shopper.email),
            "first_name": if_newer(Shopper.first_name),
            "last_name": if_newer(Shopper.last_name),
            "locale": func.coalesce(Shopper.locale, new.locale),
            "customer_updated_at": if_newer(Shopper.customer_updated_at),
            "consent_state": if_newer(Shopper.consent_state, newer_consent),
            "consent_updated_at": if_newer(Shopper.consent_updated_at, newer_consent),
        },
    )
    session.execute(statement, rows)


ORDER_COLUMNS = (
    "shop_id", "order_id", "customer_id", "name", "placed_at", "source_updated_at", "cancelled_at",
    "currency", "total_price", "refunded", "financial_status", "fulfillment_status", "line_items",
    "discount_codes",
)  # fmt: skip


def _upsert_orders(db, session: Session, rows: list[dict]) -> None:
    """Upsert a batch of orders; on PostgreSQL, COPY into a temporary table and merge from it."""
    if not db.is_sqlite:
        _copy_merge_orders(session, rows)
        return
    insert = db.insert(Order)
    new = insert.excluded
    columns = (
        "customer_id",
        "name",
        "placed_at",
        "source_updated_at",
        "cancelled_at",
        "currency",
        "total_price",
        "refunded",
        "financial_status",
        "fulfillment_status",
        "line_items",
        "discount_codes",
    )
    statement = insert.on_conflict_do_update(
        index_elements=["shop_id", "order_id"],
        set_={c: getattr(new, c) for c in columns},
        where=or_(Order.source_updated_at.is_(None), new.source_updated_at > Order.source_updated_at),
    )
    session.execute(statement, rows)


def _copy_merge_orders(session: Session, rows: list[dict]) -> None:
    connection = session.connection().connection.driver_connection
    columns = ", ".join(ORDER_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS backfill_orders"
            " (LIKE orders INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"  # each batch is one transaction
        )
        with cursor.copy(f"COPY backfill_orders ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([_copy_value(row[c]) for c in ORDER_COLUMNS])
        updates = ", ".join(f"{c} = excluded.{c}" for c in ORDER_COLUMNS[2:])
        cursor.execute(
            f"INSERT INTO orders ({columns}) SELECT {columns} FROM backfill_orders"
            f" ON CONFLICT (shop_id, order_id) DO UPDATE SET {updates}"
            " WHERE orders.source_updated_at IS NULL OR excluded.source_updated_at > orders.source_updated_at"
        )


def _copy_value(value):
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)  # naive UTC, as UTCDateTime stores it
    return value


def _attach_late_items(db: Database, shop_id: int, items: list[dict]) -> None:
    by_order: dict[int, list[dict]] = {}
    for item in items:
        by_order.setdefault(item.pop("order_id"), []).append(item)
    with db.session() as session:
        for order_id, lines in by_order.items():
            order = session.scalar(select(Order).where(Order.shop_id == shop_id, Order.order_id == order_id))
            if order is not None:
                order.line_items = list(order.line_items or []) + lines


def finish(db: Database, shop_id: int) -> dict[str, int]:
    """Recount every shopper of the shop from the stored orders, then assign stages (no plays) and plan
    the write-back of every stage Shopify does not hold yet (in bulk, by the shop's write-back job)."""
    now = clock.now()
    with db.session() as session:
        shop = session.get(Shop, shop_id)
        live = and_(
            Order.shop_id == shop_id, Order.customer_id == Shopper.customer_id, Order.cancelled_at.is_(None)
        )

        def of_orders(expression):
            return select(expression).where(live).scalar_subquery()

        session.execute(
            update(Shopper)
            .where(Shopper.shop_id == shop_id)
            .values(
                orders_count=of_orders(func.count(Order.id)),
                total_spent=of_orders(net_spend()),
                first_order_at=of_orders(func.min(Order.placed_at)),
                last_order_at=of_orders(func.max(Order.placed_at)),
            )
            .execution_options(synchronize_session=False)
        )
        moves = stage_sql.move_stages(session, shop, now, not db.is_sqlite, cause="backfill")
        stage_syncs.plan_stage_syncs(db, session, shop, now, "backfill", now)
        return moves


# --- GraphQL node → row ----------------------------------------------------------------------------------
def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _money(node: dict | None) -> Decimal:
    return Decimal(((node or {}).get("shopMoney") or {}).get("amount") or 0)


def _customer_row(shop_id: int, node: dict) -> dict:
    email = node.get("defaultEmailAddress") or {}
    updated = _when(node.get("updatedAt"))
    return {
        "shop_id": shop_id,
        "customer_id": gid_number(node["id"]),
        "email": email.get("emailAddress"),
        "first_name": node.get("firstName"),
        "last_name": node.get("lastName"),
        "locale": (node.get("locale") or "")[:16] or None,
        "customer_updated_at": updated,
        "consent_state": consent_state(email.get("marketingState")),
        "consent_updated_at": _when(email.get("marketingUpdatedAt")) or updated,
        "tag_events": {tag: {"on": True, "at": node.get("updatedAt")} for tag in node.get("tags") or []},
        "orders_count": 0,
        "total_spent": Decimal(0),
        "checkout_open": False,
        "stage": "prospect",
    }


def _order_row(shop_id: int, node: dict) -> tuple[dict, list[dict]]:
    order_id = gid_number(node["id"])
    refunds = [
        {
            "shop_id": shop_id,
            "refund_id": gid_number(r["id"]),
            "order_id": order_id,
            "amount": _money(r.get("totalRefundedSet")),
            "created_at": _when(r.get("createdAt")),
        }
        for r in node.get("refunds") or []
    ]
    fulfillment = (node.get("displayFulfillmentStatus") or "").lower()
    row = {
        "shop_id": shop_id,
        "order_id": order_id,
        "customer_id": gid_number((node.get("customer") or {}).get("id")),
        "name": node.get("name"),
        "placed_at": _when(node["createdAt"]),
        "source_updated_at": _when(node.get("updatedAt")),
        "cancelled_at": _when(node.get("cancelledAt")),
        "currency": node.get("currencyCode"),
        "total_price": _money(node.get("totalPriceSet")),
        "refunded": sum((r["amount"] for r in refunds), Decimal(0)),
        "financial_status": (node.get("displayFinancialStatus") or "").lower() or None,
        "fulfillment_status": None if fulfillment in ("", "unfulfilled") else fulfillment,
        "line_items": [],
        "discount_codes": list(node.get("discountCodes") or []),
    }
    return row, refunds


def _line_item(node: dict) -> dict:
    return {
        "product_id": gid_number((node.get("product") or {}).get("id")),
        "variant_id": gid_number((node.get("variant") or {}).get("id")),
        "quantity": node.get("quantity") or 1,
        "price": str(_money(node.get("originalUnitPriceSet"))),
    }
