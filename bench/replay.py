"""Scale replay: a store of ~25,000 shoppers and ~70,000 orders posted as signed webhooks through HTTP
(gunicorn, 2 processes × `--server-threads` 8, as the Procfile runs it) while `--workers` (2) `lifecycle
worker` processes drain them; then every shopper's stage is checked against what the store's own history
says it must be.

    .venv/bin/python bench/replay.py [--shoppers 25000] [--rounds 2] [--workers 2] [--database-url URL]
        [--check-runs]

Reports the wall time from the first post to the last processed delivery, and, as the baseline measured in
the same run, the time the same client needs to post the same bodies to a bare endpoint, so the figure
reads as "x times the cost of merely receiving them": a Flask route (`/bare`) and one answered below Flask
(`/bare-wsgi`), as POST /webhooks is. The client signs every body before the timed
part and sends over keep-alive `http.client` connections, 8 threads, each shopper's webhooks in order from
one thread: the baseline is the server's rate, not the client's.

With `--check-runs`, the same webhooks are then applied once more on a fresh database, one delivery per
batch, shopper by shopper in their history's order (the one-per-batch path, `reference_outcome`), and the
two outcomes must be equal: every shopper's profile (orders, spend, stage, consent) and every run planned,
by play, shopper and cycle, with the status it was planned in (waiting for consent, scheduled, cancelled,
or released to its effect: what the effect then did, a deferral included, is not planning and is not
compared). Runs cancelled
as superseded and stage write-backs are left out, as in `tests/test_delivery_order.py`: a batch plans only
for the stage a shopper ends it in. The one-per-batch path takes several times as long as the measured run.

The measurement runs `--rounds` times (2), each round posting to the bare Flask endpoint, then to the bare
WSGI one, then the timed run, so baselines and timed runs alternate and meet the same machine; the
fastest of each counts, and each round's own ratio is printed too. Before a timed run the workers are
started and listening (their start-up, about two CPU seconds each, is not timed: a deployed worker is up
when webhooks arrive; how long it took is printed); after it they are stopped. Every round starts
from the installed shop alone (`reset_store`: every table of the app emptied but the shop and its
settings, the queues and flags deleted from Redis, a checkpoint), the first too. The clock stops when the
last delivery is processed; the action runs still queued then (the emails and codes the batches released,
served after the webhooks queue) are counted, and the time until they too are carried out is printed.

The kernel hands the 8 connections to gunicorn's two processes as they happen to accept them, 4 and 4 or
5 and 3; a bare Flask endpoint is CPU-bound in its processes, so an uneven split slows it by up to a
quarter (43 s or 55 s for the full store, session 9): one run of each is not enough to read a ratio from.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import redis
from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy.exc import DBAPIError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import Servers  # noqa: E402
from plugin.core.facts import ShopperFacts  # noqa: E402
from plugin.core.stages import assess  # noqa: E402
from plugin.demo import synthetic as s  # noqa: E402
from plugin.store.db import database_url, recreate_database  # noqa: E402
from plugin.store.models import (  # noqa: E402
    WAITING,
    ActionAttempt,
    ActionRun,
    Base,
    Delivery,
    DeliveryStatus,
    RunStatus,
    Shop,
    Shopper,
)

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


def signed(histories: list[History], threads: int, paths: tuple[str, ...]) -> dict[str, list]:
    """For each path, every shopper's webhooks in order, signed before anything is timed, shared out over
    `threads` clients by shopper (so one shopper's webhooks leave in their order, as Shopify sends them).
    Each body is encoded and signed once; the paths' webhooks differ by their id alone."""
    shares = {path: [[] for _ in range(threads)] for path in paths}
    for index, history in enumerate(histories):
        for n, (topic, payload) in enumerate(history.webhooks):
            body = s.encode(payload)
            headers = s.webhook_headers(topic, SHOP, "", body, SECRET)
            for path in paths:
                webhook_id = f"{path}-{index}-{n}"
                shares[path][index % threads].append(
                    (body, {**headers, "X-Shopify-Webhook-Id": webhook_id, "X-Shopify-Event-Id": webhook_id})
                )
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


# What a round leaves for the next one: the schema, the shop and its settings.
KEPT_TABLES = ("alembic_version", "shops", "rules", "email_templates")


def reset_store(engine, servers: Servers) -> None:
    """Empty the app's tables but KEPT_TABLES, and Redis's queues and flags (`rq:*`, `lifecycle:*`), so
    each timed run starts from the installed shop alone (workers stopped, the endpoint idle); then a
    CHECKPOINT, so no write-back of the last round's pages overlaps the next round's baselines.
    PostgreSQL keeps its planner statistics of the emptied tables."""
    tables = [name for name in Base.metadata.tables if name not in KEPT_TABLES]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"))
        else:  # dependents first
            for table in reversed(Base.metadata.sorted_tables):
                if table.name in tables:
                    connection.execute(table.delete())
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            try:
                connection.execute(text("CHECKPOINT"))
            except DBAPIError:  # a role without the right to: the round goes on without it
                pass
    client = redis.Redis.from_url(servers.env["REDIS_URL"])
    for pattern in ("rq:*", "lifecycle:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    client.close()


# What the replay waits for: the deliveries left `received` (counted through their partial index, a few
# pages: counting the processed ones scanned the whole table, a load of its own on the database the
# workers use), and the action runs queued to the workers and not yet carried out (the emails and codes a
# batch released, which the workers take after the deliveries: their queue is served after the webhooks
# queue).
WAITING_DELIVERIES = select(func.count()).select_from(Delivery).where(WAITING)
QUEUED_RUNS = select(func.count()).select_from(ActionRun).where(ActionRun.status == RunStatus.QUEUED)


def count(engine, query) -> int:
    with engine.connect() as connection:
        return connection.scalar(query)


def wait_until_none(engine, query, timeout: float | None = None) -> bool:
    """Count `query` five times a second until it is 0 (True), or `timeout` seconds have passed (False).
    The end is known to 0.2 s."""
    deadline = None if timeout is None else time.perf_counter() + timeout
    with engine.connect() as connection:
        while connection.scalar(query):
            connection.rollback()
            if deadline is not None and time.perf_counter() > deadline:
                return False
            time.sleep(0.2)
    return True


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


# A run's status as planned: these as they are, unless its effect has been attempted (it may then be
# deferred back to `scheduled`); any other (queued, and what its effect made of it) is "released", whose
# later fate depends on the effect, not on the planning compared here.
PLANNED_STATUSES = ("waiting", "scheduled", "cancelled")


def outcome(engine) -> dict:
    """Every shopper's profile by customer id, and every run by play, customer and cycle with the status
    it was planned in (see PLANNED_STATUSES), without superseded runs and stage write-backs."""
    with engine.connect() as connection:
        shop_id = connection.scalar(select(Shop.id).where(Shop.domain == SHOP))
        profiles, customers = {}, {}
        for shopper_id, customer, orders, spent, stage, consent in connection.execute(
            select(
                Shopper.id,
                Shopper.customer_id,
                Shopper.orders_count,
                Shopper.total_spent,
                Shopper.stage,
                Shopper.consent_state,
            ).where(Shopper.shop_id == shop_id)
        ):
            customers[shopper_id] = customer
            profiles[str(customer)] = [orders, str(spent), stage, consent]
        attempted = set(connection.scalars(select(ActionAttempt.run_id).distinct()))
        runs = {}
        for run_id, play, shopper_id, email, cycle, status, reason in connection.execute(
            select(
                ActionRun.id,
                ActionRun.play,
                ActionRun.shopper_id,
                ActionRun.recipient_email,
                ActionRun.cycle,
                ActionRun.status,
                ActionRun.skip_reason,
            ).where(ActionRun.shop_id == shop_id)
        ):
            if play == "stage_sync" or (status == "cancelled" and (reason or "").startswith("superseded")):
                continue
            who = customers.get(shopper_id, email)
            planned = status in PLANNED_STATUSES and run_id not in attempted
            runs[f"{play} {who} {cycle}"] = status if planned else "released"
    return {"profiles": profiles, "runs": runs}


def reference_outcome(args, database: str | None) -> dict:
    """The outcome of the one-per-batch path: a fresh database (`database`, or SQLite in a fresh instance
    folder), its own embedded Redis, the clock pinned; a child process (`--role reference`) stores every
    webhook of the same histories, then applies them one delivery per batch, shopper by shopper."""
    env = dict(
        {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
        SHOPIFY_API_KEY="bench",
        SHOPIFY_API_SECRET=SECRET,
        LIFECYCLE_SECRET_KEY="bench",
        LIFECYCLE_INSTANCE_PATH=tempfile.mkdtemp(prefix="lifecycle-reference-"),
        LIFECYCLE_LOG_LEVEL="WARNING",
        LIFECYCLE_NOW=NOW.isoformat(),
        PYTHONPATH=str(ROOT),
    )
    if database:
        env["DATABASE_URL"] = database
    command = [sys.executable, str(Path(__file__).resolve()), "--role", "reference"]
    command += ["--shoppers", str(args.shoppers), "--seed", str(args.seed)]
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def apply_one_per_batch(shoppers: int, seed: int) -> None:
    """The reference path, in this process (`--role reference`): print its outcome as JSON."""
    from plugin import create_app
    from plugin.pipeline.deliveries import process_batch
    from plugin.store import shops

    rng = random.Random(seed)
    histories = [shopper_history(i, rng) for i in range(shoppers)]
    app = create_app()
    db = app.extensions["lifecycle.db"]
    with db.session() as session:
        shops.upsert_shop(session, SHOP, None, NOW)
    rows = [  # as the endpoint stores them (its Triggered-At is the same for every webhook here)
        dict(
            webhook_id=f"reference-{index}-{n}",
            shop_domain=SHOP,
            topic=topic,
            triggered_at=datetime(2026, 11, 1, tzinfo=UTC),
            received_at=NOW,
            body=s.encode(payload),
            status=DeliveryStatus.RECEIVED,
            attempts=0,
        )
        for index, history in enumerate(histories)
        for n, (topic, payload) in enumerate(history.webhooks)
    ]
    with db.engine.begin() as connection:
        connection.execute(Delivery.__table__.insert(), rows)
        ids = connection.scalars(select(Delivery.id).order_by(Delivery.id)).all()
    with app.app_context():
        for delivery_id in ids:  # stored shopper by shopper, each history in its order
            process_batch([delivery_id], 1)
    print(json.dumps(outcome(db.engine)))


def fresh_database(url: str) -> str:
    """`url`'s database with `_reference` after its name, dropped and created again (PostgreSQL)."""
    target = make_url(url)
    return recreate_database(target.set(database=f"{target.database}_reference"))


def compare(measured: dict, reference: dict) -> list[str]:
    """The differences between two outcomes, as lines (none when they are equal)."""
    lines = []
    for part in ("profiles", "runs"):
        mine, theirs = measured[part], reference[part]
        for key in sorted(mine.keys() | theirs.keys()):
            if mine.get(key) != theirs.get(key):
                lines.append(f"{part} {key}: batched {mine.get(key)} != one per batch {theirs.get(key)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shoppers", type=int, default=25_000)
    parser.add_argument("--threads", type=int, default=8, help="client connections")
    parser.add_argument(
        "--server-threads", type=int, default=8, help="gunicorn threads per worker, as the Procfile"
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--port", type=int, default=8798)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="bare Flask, bare WSGI, timed, this many times; the fastest counts",
    )
    parser.add_argument(
        "--check-runs", action="store_true", help="compare with the one-per-batch path afterwards"
    )
    parser.add_argument("--role", choices=("reference",), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "reference":
        apply_one_per_batch(args.shoppers, args.seed)
        return

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
        shares = signed(histories, args.threads, ("/bare", "/bare-wsgi", "/webhooks"))
        bares, bare_wsgis, totals = [], [], []
        for round_number in range(1, max(1, args.rounds) + 1):
            reset_store(engine, servers)  # the first too: the database may hold an earlier run
            bares.append(post_all(args.port, "/bare", shares["/bare"]))
            bare_wsgis.append(post_all(args.port, "/bare-wsgi", shares["/bare-wsgi"]))
            spawned = time.perf_counter()
            workers = servers.start_workers(args.workers, burst=False, ready=True)
            ready = time.perf_counter() - spawned
            started = time.perf_counter()
            ingest = post_all(args.port, "/webhooks", shares["/webhooks"])
            wait_until_none(engine, WAITING_DELIVERIES)
            totals.append(time.perf_counter() - started)
            pending = count(engine, QUEUED_RUNS)
            acted = wait_until_none(engine, QUEUED_RUNS, timeout=600)
            acted_after = time.perf_counter() - started
            servers.stop_workers(workers)
            print(
                f"round {round_number}: bare Flask {bares[-1]:.1f} s, bare WSGI {bare_wsgis[-1]:.1f} s; "
                f"POST /webhooks {ingest:.1f} s, end to end {totals[-1]:.1f} s = "
                f"{totals[-1] / bares[-1]:.2f}x bare Flask, {totals[-1] / bare_wsgis[-1]:.2f}x bare WSGI"
            )
            if acted:
                effects = f"carried out {acted_after:.1f} s after its start"
                effects += f" ({acted_after / bares[-1]:.2f}x bare Flask)"
            else:
                effects = (
                    f"{count(engine, QUEUED_RUNS)} of them still queued {acted_after:.0f} s after its start"
                )
            print(
                f"         workers listening {ready:.1f} s after their launch (not timed); {pending} action "
                f"runs still queued to them when the clock stopped, {effects}"
            )
            checked, wrong = check_stages(engine, histories)
            print(f"         stages: {checked - len(wrong)}/{checked} right")
            for line in wrong[:20]:
                print("  " + line)
            if wrong:
                sys.exit(1)
        bare, bare_wsgi, total = min(bares), min(bare_wsgis), min(totals)
        print(f"baseline: posting to a bare Flask endpoint took {bare:.1f} s ({webhooks / bare:.0f}/s)")
        print(
            f"          posting to a bare WSGI endpoint took {bare_wsgi:.1f} s ({webhooks / bare_wsgi:.0f}/s)"
        )
        print(
            f"end to end (HTTP + {args.workers} workers to stage): {total:.1f} s = "
            f"{webhooks / total:.0f} webhooks/s; "
            f"{total / bare:.2f}x the bare Flask posting time, {total / bare_wsgi:.2f}x the bare WSGI one "
            f"(the fastest of {len(totals)} of each)"
        )
        measured = outcome(engine) if args.check_runs else None
    finally:
        servers.stop()
    if measured is not None:
        started = time.perf_counter()
        database = fresh_database(args.database_url) if args.database_url else None
        reference = reference_outcome(args, database)
        differences = compare(measured, reference)
        print(
            f"one per batch ({time.perf_counter() - started:.0f} s): {len(reference['runs'])} runs planned, "
            f"{len(measured['runs'])} batched; {len(reference['profiles'])} profiles; "
            + ("the same outcome" if not differences else f"{len(differences)} differences")
        )
        for line in differences[:20]:
            print("  " + line)
        if differences:
            sys.exit(1)


if __name__ == "__main__":
    main()
