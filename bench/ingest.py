"""Ingest benchmark: POST /webhooks against bare endpoints on the same gunicorn, same load.

    .venv/bin/python bench/ingest.py [--requests 4000] [--concurrency 8] [--rounds 4] [--database-url URL]

Every body is signed before the timed part (the client only sends). Phase 0 measures the client itself:
the same requests to a server that does nothing (bench/null_server.py), so a baseline far below that rate
is not client-bound. Phase 1 posts realistic signed order bodies to /bare (a Flask route that reads the
body, returns 200), to /bare-wsgi (the same, answered below Flask as /webhooks is) and to /webhooks
(verify, record, enqueue, 200), in rounds: each round posts the same slice of the bodies to the three
endpoints in turn, each on fresh connections, so all see the same machine state. Which gunicorn worker
accepts a connection is left to chance, and a round whose connections pile onto one worker is slower
than one where they are shared (each round prints the busier worker's share of the CPU); it reports
each round's rates, every round's requests together (rates, p50/p99 ack latency, the ratios to both
baselines) and the fastest round of each endpoint with their ratios. Phase 2 starts two
`lifecycle worker --burst` processes and reports how fast they drain what was acknowledged: from their
launch to their exit (their start-up included), and from the last poll that found every delivery waiting
to the first that found none (the drain alone).
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine, func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import Servers  # noqa: E402
from plugin.demo import synthetic as s  # noqa: E402
from plugin.store.db import database_url  # noqa: E402
from plugin.store.models import WAITING, Delivery  # noqa: E402

SHOP = "bench-store.myshopify.com"
SECRET = "bench-secret"


def bodies(count: int, offset: int = 0) -> list[tuple[str, bytes]]:
    """Signed-to-be order bodies, 1-4 line items each, like a real store's (numbered from `offset`)."""
    now = datetime(2026, 11, 1, tzinfo=UTC)
    out = []
    for i in range(offset, offset + count):
        lines = [s.line_item(i * 10 + n, 7000 + n, 8000 + n, Decimal("19.90")) for n in range(1 + i % 4)]
        payload = s.order_payload(
            10_000_000 + i,
            5_000 + i % 2000,
            now - timedelta(hours=i),
            Decimal("59.70"),
            email=f"b{i}@example.com",
            lines=lines,
        )
        out.append((f"bench-{os.getpid()}-{i}", s.encode(payload)))
    return out


def signed(path: str, items: list[tuple[str, bytes]]) -> list[tuple[str, bytes, dict]]:
    """(path, body, headers) per item, signed now so the timed part only sends."""
    return [
        (path, body, s.webhook_headers("orders/paid", SHOP, f"{path}-{webhook_id}", body, SECRET))
        for webhook_id, body in items
    ]


def post_many(port: int, requests_: list[tuple[str, bytes, dict]], concurrency: int):
    """Send pre-signed requests over keep-alive connections (http.client: less client work than requests)."""
    chunks = [requests_[i::concurrency] for i in range(concurrency)]

    def run(chunk):
        latencies = []
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for path, body, headers in chunk:
            started = time.perf_counter()
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"{path} answered {response.status}")
        connection.close()
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = [x for part in pool.map(run, chunks) for x in part]
    return time.perf_counter() - started, latencies


def client_capacity(items, concurrency: int, port: int) -> dict:
    """The client's own rate: the same signed requests to a server that does nothing."""
    server = subprocess.Popen([sys.executable, str(ROOT / "bench" / "null_server.py"), str(port)])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        return summary("client alone (null server)", *post_many(port, signed("/null", items), concurrency))
    finally:
        server.terminate()
        server.wait()


def drain_times(engine, total: int, every: float = 0.05) -> tuple[float, float]:
    """(the last poll that still found all `total` deliveries waiting, the first that found none): the
    drain's own time, without the workers' start-up (importing the app, connecting), a fixed cost a
    long-running worker pays once. Counts the waiting deliveries through their partial index."""
    first = time.perf_counter()
    with engine.connect() as connection:
        while True:
            left = connection.scalar(select(func.count()).select_from(Delivery).where(WAITING))
            connection.rollback()
            now = time.perf_counter()
            if left >= total:
                first = now
            elif left == 0:
                return first, now
            time.sleep(every)


def summary(name: str, elapsed: float, latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    return {
        "name": name,
        "per_second": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(len(ordered) * 0.99) - 1],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker, as the Procfile")
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="rounds of the three endpoints in turn, each on fresh connections: which gunicorn worker "
        "accepts which connection is left to chance, and a round whose connections pile onto one worker "
        "is slower",
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args()

    app = "bench.bare_app:create()"
    servers = Servers(SHOP, SECRET, args.database_url, args.port, app, args.gunicorn_workers, args.threads)
    try:
        items = bodies(args.requests)
        client = client_capacity(items, args.concurrency, args.port + 1)
        post_many(args.port, signed("/bare", items[:50]), args.concurrency)  # warm-up
        endpoints = (("/bare", "bare Flask endpoint"), ("/bare-wsgi", "bare WSGI endpoint"))
        endpoints += (("/webhooks", "POST /webhooks"),)
        rounds: dict[str, list[tuple[float, list[float]]]] = {path: [] for path, _name in endpoints}
        size = -(-len(items) // args.rounds)
        for number, start in enumerate(range(0, len(items), size), 1):
            part = items[start : start + size]  # each endpoint gets the same bodies, in turn
            busiest = {}
            for path, _name in endpoints:  # fresh connections each time (see --rounds)
                before = servers.web_cpu()
                rounds[path].append(post_many(args.port, signed(path, part), args.concurrency))
                used = [after - was for after, was in zip(servers.web_cpu(), before, strict=True)]
                busiest[path] = max(used) / (sum(used) or 1)
            rates = {path: len(part) / rounds[path][-1][0] for path, _name in endpoints}
            print(
                f"round {number}: bare Flask {rates['/bare']:.0f}/s, bare WSGI {rates['/bare-wsgi']:.0f}/s, "
                f"POST /webhooks {rates['/webhooks']:.0f}/s = {rates['/webhooks'] / rates['/bare']:.2f} of "
                "bare Flask; the busier gunicorn worker's share of their CPU: "
                + ", ".join(f"{busiest[path]:.0%}" for path, _name in endpoints)
            )
        pooled = {
            path: summary(name, sum(t for t, _ in rounds[path]), [x for _, ls in rounds[path] for x in ls])
            for path, name in endpoints
        }
        fastest = {path: max(len(ls) / t for t, ls in rounds[path]) for path, _name in endpoints}
        print(f"all {args.rounds} rounds together (latencies over every request):")
        for row in [client, *pooled.values()]:
            rate, p50, p99 = row["per_second"], row["p50_ms"], row["p99_ms"]
            print(f"{row['name']:<26} {rate:8.0f}/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
        bare, bare_wsgi, ours = (pooled[path] for path, _name in endpoints)
        print(f"ratio (webhooks/s ÷ bare Flask/s): {ours['per_second'] / bare['per_second']:.2f}")
        print(f"ratio (webhooks/s ÷ bare WSGI/s): {ours['per_second'] / bare_wsgi['per_second']:.2f}")
        flask, wsgi, webhooks = fastest["/bare"], fastest["/bare-wsgi"], fastest["/webhooks"]
        print(
            f"fastest round of each: bare Flask {flask:.0f}/s, bare WSGI {wsgi:.0f}/s, POST /webhooks "
            f"{webhooks:.0f}/s; ratio {webhooks / flask:.2f} of bare Flask, {webhooks / wsgi:.2f} of bare "
            "WSGI"
        )
        print(
            f"bare Flask endpoint at {bare['per_second'] / client['per_second']:.2f} of the client's own rate"
        )
        share = bare_wsgi["per_second"] / client["per_second"]
        print(f"bare WSGI endpoint at {share:.2f} of the client's own rate")

        total = len(items)
        engine = create_engine(database_url(args.database_url, servers.env["LIFECYCLE_INSTANCE_PATH"]))
        started = time.perf_counter()
        workers = servers.start_workers(2, burst=True)
        first, last = drain_times(engine, total)
        for worker in workers:
            worker.wait()
        drained = time.perf_counter() - started
        print(
            f"workers: {total} deliveries processed in {drained:.1f} s = {total / drained:.0f}/s (2 workers, "
            f"their start-up included); {total / (last - first):.0f}/s from the last poll before the first "
            f"delivery was settled to the last one settled ({last - first:.1f} s)"
        )
        end_to_end = sum(t for t, _ in rounds["/webhooks"]) + drained
        print(f"end to end (HTTP ingest, then workers): {total / end_to_end:.0f} events/s")
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
