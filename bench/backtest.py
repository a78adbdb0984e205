"""Backtest benchmark: a rule replayed over a 50,000-shopper shop (and one shopper with 2,000 orders),
against one SQL pass over the same orders, in the same run.

    .venv/bin/python bench/backtest.py [--shoppers 50000] [--database-url URL] [--seed 7]

Seeds a shop set-based (`plugin.demo.synthetic.first_timer_rows` for the shoppers, then one INSERT per
5,000 orders): 1 to 4 orders each over two years (about 125,000), plus one shopper with 2,000 orders.
Times, for the win-back (stage:at_risk) and the thank-you (order_paid) over the last 90 days, the whole
`store.backtest_history.backtest_rule` (read-only load + replay), and the baseline: one
`SELECT customer_id, count(*), sum(total_price), max(placed_at) … GROUP BY customer_id` over the orders.
Then the 2,000-order shopper alone over 400 days (the O(n²) facts read took ~30 s there).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from plugin.core.backtest import Replay, ShopPolicy  # noqa: E402
from plugin.core.policy import CONSENT_WAIT  # noqa: E402
from plugin.crypto import encrypt_token  # noqa: E402
from plugin.demo.synthetic import first_timer_rows  # noqa: E402
from plugin.store import shops  # noqa: E402
from plugin.store.backtest_history import backtest_rule, load_histories  # noqa: E402
from plugin.store.db import Database, migrate  # noqa: E402
from plugin.store.models import Order, Shopper  # noqa: E402
from plugin.store.shops import shop_rules  # noqa: E402

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
HEAVY = 2_000


def seed(db: Database, count: int, seed_: int) -> int:
    """The shop, `count` shoppers with 1-4 orders over two years, and one with HEAVY orders."""
    rng = random.Random(seed_)
    with db.session() as session:
        shop_id = shops.upsert_shop(session, "bench.myshopify.com", encrypt_token("shpat", "k"), NOW).id
    rows = first_timer_rows(shop_id, count + 1, NOW - timedelta(days=400))
    for row in rows:
        row.update(email=f"s{row['customer_id']}@example.com", consent_state="subscribed", stage="prospect")
    orders, order_id = [], 1
    for row in rows:
        placed = sorted(
            NOW - timedelta(minutes=rng.randrange(0, 730 * 24 * 60))
            for _ in range(HEAVY if row is rows[-1] else rng.randint(1, 4))
        )
        for at in placed:
            orders.append(
                dict(
                    shop_id=shop_id, order_id=order_id, customer_id=row["customer_id"], placed_at=at,
                    total_price=Decimal(rng.randrange(10, 200)), refunded=Decimal(0),
                    financial_status="paid", line_items=[], discount_codes=[],
                )
            )  # fmt: skip
            order_id += 1
    with db.session() as session:
        for start in range(0, len(rows), 5000):
            session.execute(db.insert(Shopper.__table__), rows[start : start + 5000])
        for start in range(0, len(orders), 5000):
            session.execute(db.insert(Order.__table__), orders[start : start + 5000])
    return shop_id


def timed(work) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def sql_pass(db: Database, shop_id: int) -> int:
    with db.read_session() as session:
        return len(
            session.execute(
                text(
                    "SELECT customer_id, count(*), sum(total_price), max(placed_at) FROM orders "
                    "WHERE shop_id = :shop GROUP BY customer_id"
                ),
                {"shop": shop_id},
            ).all()
        )


def heavy_alone(db: Database, shop_id: int) -> float:
    """The HEAVY-order shopper replayed alone over 400 days with the thank-you."""
    with db.read_session() as session:
        rules = shop_rules(session, shop_id)
        history = max(load_histories(session, shop_id), key=lambda h: len(h.orders))
    start = NOW - timedelta(days=400)
    replay = Replay([history], rules, "thank_you", start, NOW, NOW, ShopPolicy(shop_id=shop_id), CONSENT_WAIT)
    seconds, _ = timed(replay.run)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shoppers", type=int, default=50_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    url = args.database_url or "sqlite:///" + os.path.join(tempfile.mkdtemp(), "bench.sqlite3")
    migrate(url)
    db = Database(url)
    seconds, shop_id = timed(lambda: seed(db, args.shoppers, args.seed))
    with db.read_session() as session:
        orders = session.execute(text("SELECT count(*) FROM orders")).scalar_one()
    print(
        f"seeded {args.shoppers + 1:,} shoppers, {orders:,} orders in {seconds:.1f} s "
        f"({db.engine.dialect.name})"
    )
    baseline, groups = timed(lambda: sql_pass(db, shop_id))
    print(f"baseline: one GROUP BY pass over the orders ({groups:,} customers): {baseline:.2f} s")
    for key in ("win_back", "thank_you"):
        seconds, result = timed(lambda key=key: backtest_rule(db, shop_id, key, NOW))
        print(
            f"backtest {key} (90 days): {seconds:.2f} s, ratio {seconds / baseline:.1f}; "
            f"{result.messages_triggered:,} triggered, {result.messages_allowed:,} allowed"
        )
    print(f"the {HEAVY:,}-order shopper alone, thank-you over 400 days: {heavy_alone(db, shop_id):.2f} s")
    db.engine.dispose()


if __name__ == "__main__":
    main()
