"""Scale replay: a store of ~25,000 shoppers and ~70,000 orders posted as signed webhooks through HTTP
(gunicorn, 2 processes × `--server-threads` 4, as the Procfile runs it) while `--workers` (2) `lifecycle
worker` processes drain them; then every shopper's stage is checked against what the store's own history
says it must be.

    .venv/bin/python bench/replay.py [--shoppers 25000] [--workers 2] [--database-url URL]

Reports the wall time from the first post to the last processed delivery, and, as the baseline measured in
the same run, the time the same client needs to post the same bodies to a bare endpoint, so the figure
reads as "x times the cost of merely receiving them": a Flask route (`/bare`) and one answered below Flask
(`/bare-wsgi`), as POST /webhooks is. The client signs every body before the timed
part and sends over keep-alive `http.client` connections, 8 threads, each shopper's webhooks in order from
one thread: the baseline is the server's rate, not the client's.

Each baseline is posted `--baseline-runs` times (2) and the fastest run counts. The kernel hands the 8
connections to gunicorn's two processes as they happen to accept them, 4 and 4 or 5 and 3; a bare
Flask endpoint is CPU-bound in its processes, so an uneven split slows it by up to a quarter (43 s or
55 s for the full store, session 9). The fastest run is the stricter baseline for the ratio.
"""

from __future__ import annotations

import argparse
import http.client
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine, func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import Servers  # noqa: E402
from plugin.core.facts import ShopperFacts  # noqa: E402
from plugin.core.stages import assess  # noqa: E402
from plugin.demo import synthetic as s  # noqa: E402
from plugin.store.db import database_url  # noqa: E402
from plugin.store.models import WAITING, Delivery, Shop, Shopper  # noqa: E402

SHOP = "replay-store.myshopify.com"
SECRET = "replay-secret"
NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


@dataclass
class History:
    """One shopper's webhooks and what they must add up to."""

    webhooks: list[tuple[str, dict]] = field(default_factory=list)
    orders: int = 0
    spent: Decimal = Decimal(0)
    last_order_at: datetime | None = None

    def expected_stage(self) -> str:
        facts = ShopperFacts(self.orders, self.spent, self.last_order_at if self.orders else None)
        return assess(facts, NOW).stage.value


def shopper_history(index: int, rng: random.Random) -> History:
    """customers/create, consent, then 0–8 orders (~2.8 on average), some paid, cancelled or refunded."""
    history = History()
    customer_id = 7_000_000_000 + index
    email = f"r{index}@example.com"
    joined = NOW - timedelta(days=rng.uniform(1, 540))
    history.webhooks.append(("customers/create", s.customer_payload(customer_id, email, joined)))
    state = rng.choice(("subscribed", "subscribed", "not_subscribed", "unsubscribed"))
    history.webhooks.append(
        ("customers_email_marketing_consent/update", s.consent_payload(customer_id, email, state, joined))
    )
    count = rng.choice((0, 1, 1, 2, 2, 3, 3, 4, 5, 7))
    span = (NOW - joined).total_seconds()
    for n, placed in enumerate(sorted(joined + timedelta(seconds=span * rng.random()) for _ in range(count))):
        order_id = customer_id * 10 + n
        total = Decimal(rng.randrange(1500, 30000)) / 100
        body = s.order_payload(order_id, customer_id, placed, total, email=email)
        history.webhooks.append(("orders/create", body))
        fate = rng.random()
        if fate < 0.04:
            at = placed + timedelta(hours=2)  # a cancellation comes with a later updated_at than the order
            cancelled = s.order_payload(order_id, customer_id, placed, total, email=email, cancelled_at=at)
            history.webhooks.append(("orders/cancelled", cancelled))
            continue
        if fate < 0.09:
            refund = (total / 2).quantize(Decimal("0.01"))
            history.webhooks.append(("refunds/create", s.refund_payload(order_id, order_id, refund, placed)))
            total -= refund
        elif fate < 0.3:
            history.webhooks.append(("orders/paid", body))
        history.orders += 1
        history.spent += total
        history.last_order_at = max(history.last_order_at or placed, placed)
    return history


def signed(path: str, histories: list[History], threads: int) -> list[list[tuple[bytes, dict]]]:
    """Every shopper's webhooks in order, signed before anything is timed, shared out over `threads`
    clients by shopper (so one shopper's webhooks leave in their order, as Shopify sends them)."""
    shares: list[list[tuple[bytes, dict]]] = [[] for _ in range(threads)]
    for index, history in enumerate(histories):
        for n, (topic, payload) in enumerate(history.webhooks):
            body = s.encode(payload)
            headers = s.webhook_headers(topic, SHOP, f"{path}-{index}-{n}", body, SECRET)
            shares[index % threads].append((body, headers))
    return shares


def post_all(port: int, path: str, shares: list[list[tuple[bytes, dict]]]) -> float:
    """Post the signed webhooks, one keep-alive connection per share (http.client: the client must not
    be what limits the baseline); a webhook not acknowledged is sent again, as Shopify does. Seconds."""

    def post_share(share: list[tuple[bytes, dict]]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for body, headers in share:
            for _ in range(10):
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    break
                time.sleep(0.5)
            else:
                raise RuntimeError(f"{path} refused {headers['X-Shopify-Topic']}")
        connection.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(len(shares)) as pool:
        list(pool.map(post_share, shares))
    return time.perf_counter() - started


def baseline(port: int, path: str, histories: list[History], threads: int, runs: int) -> float:
    """Seconds the fastest of `runs` postings of every webhook to a bare endpoint took (each run printed)."""
    shares = signed(path, histories, threads)
    times = [post_all(port, path, shares) for _ in range(max(1, runs))]
    if len(times) > 1:
        print(f"          {path} runs: " + ", ".join(f"{t:.1f} s" for t in times))
    return min(times)


def wait_processed(engine, total: int) -> None:
    """Wait until none of the (all acknowledged) deliveries is left `received`. Counts the received ones
    through their index, once a second: counting the processed ones scanned the whole table twice a
    second, a load of its own on the database the workers use."""
    with engine.connect() as connection:
        while True:
            left = connection.scalar(select(func.count()).select_from(Delivery).where(WAITING))
            connection.rollback()
            if left == 0:
                return
            time.sleep(1)


def check_stages(engine, histories: list[History]) -> tuple[int, list[str]]:
    """Compare every shopper's stored stage with its history's; return (checked, mismatches)."""
    with engine.connect() as connection:
        shop_id = connection.scalar(select(Shop.id).where(Shop.domain == SHOP))
        stored = dict(
            connection.execute(
                select(Shopper.customer_id, Shopper.stage).where(Shopper.shop_id == shop_id)
            ).all()
        )
    wrong = []
    for index, history in enumerate(histories):
        got, want = stored.get(7_000_000_000 + index), history.expected_stage()
        if got != want:
            wrong.append(f"shopper {index}: {got} != {want}")
    return len(histories), wrong


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shoppers", type=int, default=25_000)
    parser.add_argument("--threads", type=int, default=8, help="client connections")
    parser.add_argument(
        "--server-threads", type=int, default=4, help="gunicorn threads per worker, as the Procfile"
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--port", type=int, default=8798)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline-runs", type=int, default=2, help="the fastest run of each counts")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    histories = [shopper_history(i, rng) for i in range(args.shoppers)]
    webhooks = sum(len(h.webhooks) for h in histories)
    orders = sum(1 for h in histories for t, _ in h.webhooks if t == "orders/create")
    print(f"store: {args.shoppers} shoppers, {orders} orders, {webhooks} webhooks")

    servers = Servers(
        SHOP, SECRET, args.database_url, args.port, "bench.bare_app:create()", threads=args.server_threads
    )
    servers.env["LIFECYCLE_NOW"] = NOW.isoformat()
    engine = create_engine(database_url(args.database_url, servers.env["LIFECYCLE_INSTANCE_PATH"]))
    try:
        bare = baseline(args.port, "/bare", histories, args.threads, args.baseline_runs)
        print(f"baseline: posting to a bare Flask endpoint took {bare:.1f} s ({webhooks / bare:.0f}/s)")
        bare_wsgi = baseline(args.port, "/bare-wsgi", histories, args.threads, args.baseline_runs)
        print(
            f"          posting to a bare WSGI endpoint took {bare_wsgi:.1f} s ({webhooks / bare_wsgi:.0f}/s)"
        )
        shares = signed("/webhooks", histories, args.threads)
        servers.start_workers(args.workers, burst=False)
        started = time.perf_counter()
        ingest = post_all(args.port, "/webhooks", shares)
        wait_processed(engine, webhooks)
        total = time.perf_counter() - started
        print(f"POST /webhooks took {ingest:.1f} s ({webhooks / ingest:.0f}/s)")
        print(
            f"end to end (HTTP + {args.workers} workers to stage): {total:.1f} s = "
            f"{webhooks / total:.0f} webhooks/s; "
            f"{total / bare:.2f}x the bare Flask posting time, {total / bare_wsgi:.2f}x the bare WSGI one"
        )
        checked, wrong = check_stages(engine, histories)
        print(f"stages: {checked - len(wrong)}/{checked} right")
        for line in wrong[:20]:
            print("  " + line)
        if wrong:
            sys.exit(1)
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
