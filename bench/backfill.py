"""Backfill import speed on PostgreSQL: our streaming JSONL import against PostgreSQL's own COPY of the
same rows, in the same run.

    .venv/bin/python bench/backfill.py [--orders 1000000] [--database-url postgresql+psycopg://…]

1. Generates the fake store's history as the bulk operation's JSONL files (customers, then orders with
   their line items), on disk; not timed.
2. Ours: `backfill.import_lines` over the files (parse each line, map it, batched upserts with the
   staleness guards, one transaction per batch), then `backfill.finish` (set-based recount and stages).
3. Baseline: the same order rows, already mapped and written as a COPY text file, loaded with
   `COPY orders FROM STDIN` into the same table (another shop id, so the same indexes apply).
Reports orders/s for both and the ratio (ours ÷ COPY).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from plugin import clock, create_app  # noqa: E402
from plugin.demo.fake_bulk import history_lines  # noqa: E402
from plugin.shopify import backfill  # noqa: E402
from plugin.store import shops  # noqa: E402
from plugin.store.db import recreate_database  # noqa: E402

COLUMNS = backfill.ORDER_COLUMNS


def write_jsonl(path: str, root: str, history: dict) -> int:
    count = 0
    with open(path, "w") as handle:
        for line in history_lines(root=root, **history):
            handle.write(json.dumps(line, separators=(",", ":")) + "\n")
            count += 1
    return count


def read_jsonl(path: str):
    with open(path) as handle:
        for raw in handle:
            yield json.loads(raw)


def copy_text(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, list | dict):
        value = json.dumps(value)
    elif hasattr(value, "isoformat"):
        value = value.astimezone(UTC).replace(tzinfo=None).isoformat()
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def write_copy_file(path: str, orders_jsonl: str, shop_id: int) -> int:
    """The order rows exactly as our import maps them (line items joined), as COPY text."""
    count, pending = 0, None
    with open(path, "w") as out:

        def flush(row):
            out.write("\t".join(copy_text(row[c]) for c in COLUMNS) + "\n")

        for line in read_jsonl(orders_jsonl):
            if "__parentId" in line:
                pending["line_items"].append(backfill._line_item(line))
                continue
            if pending is not None:
                flush(pending)
            pending, _ = backfill._order_row(shop_id, line)
            count += 1
        if pending is not None:
            flush(pending)
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument(
        "--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/lifecycle_backfill_bench"
    )
    args = parser.parse_args()
    url = make_url(recreate_database(args.database_url))
    os.environ.setdefault("SHOPIFY_API_KEY", "bench")
    os.environ.setdefault("SHOPIFY_API_SECRET", "bench")
    os.environ.setdefault("LIFECYCLE_SECRET_KEY", "bench")
    os.environ.setdefault("LIFECYCLE_INSTANCE_PATH", tempfile.mkdtemp(prefix="lifecycle-bench-"))
    os.environ.setdefault("LIFECYCLE_NOW", "2026-11-01T12:00:00+00:00")
    app = create_app(
        {
            "DATABASE_URL": args.database_url,
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"),
        }
    )
    db = app.extensions["lifecycle.db"]
    with db.session() as session:
        ours_id = shops.upsert_shop(session, "ours.myshopify.com", None, clock.now()).id
        copy_id = shops.upsert_shop(session, "copy.myshopify.com", None, clock.now()).id

    history = {
        "customers": args.orders // 5,
        "orders": args.orders,
        "seed": 11,
        "now": os.environ["LIFECYCLE_NOW"],
    }
    folder = tempfile.mkdtemp(prefix="lifecycle-backfill-bench-")
    customers_file, orders_file = f"{folder}/customers.jsonl", f"{folder}/orders.jsonl"
    started = time.perf_counter()
    write_jsonl(customers_file, "customers", history)
    lines = write_jsonl(orders_file, "orders", history)
    copy_file = f"{folder}/orders.copy"
    write_copy_file(copy_file, orders_file, copy_id)
    size = os.path.getsize(orders_file) / 2**20
    print(
        f"generated {args.orders} orders ({lines} JSONL lines, {size:.0f} MiB)"
        f" in {time.perf_counter() - started:.0f} s"
    )

    started = time.perf_counter()
    for _ in backfill.import_lines(db, ours_id, "customers", read_jsonl(customers_file)):
        pass
    customers_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in backfill.import_lines(db, ours_id, "orders", read_jsonl(orders_file)):
        pass
    orders_s = time.perf_counter() - started
    started = time.perf_counter()
    moves = backfill.finish(db, ours_id)
    finish_s = time.perf_counter() - started
    ours = args.orders / orders_s
    print(
        f"ours: customers {customers_s:.1f} s; orders {orders_s:.1f} s = {ours:.0f} orders/s; "
        f"recount + stages {finish_s:.1f} s ({sum(moves.values())} stage moves)"
    )

    raw = url.render_as_string(hide_password=False).replace("+psycopg", "")
    started = time.perf_counter()
    with psycopg.connect(raw) as connection, connection.cursor() as cursor:
        with cursor.copy(f"COPY orders ({', '.join(COLUMNS)}) FROM STDIN") as copy, open(copy_file) as handle:
            while block := handle.read(1 << 20):
                copy.write(block)
    copy_s = time.perf_counter() - started
    baseline = args.orders / copy_s
    print(f"COPY: {copy_s:.1f} s = {baseline:.0f} orders/s")
    print(
        f"ratio (ours ÷ COPY, orders phase): {ours / baseline:.2f}; "
        f"with recount and stages: {args.orders / (orders_s + finish_s) / baseline:.2f}"
    )


if __name__ == "__main__":
    main()
