"""Worker benchmark over a stored backlog: drain rate with N worker processes, and each worker's memory.

    .venv/bin/python bench/backlog_memory.py [--deliveries 100000] [--workers 1] [--database-url URL]
        [--profile]

Seeds the delivery ledger directly (no HTTP: `bench/ingest.py` measures the ack path) with real-shaped
signed `orders/paid` bodies of 2,000 shoppers, 1-4 line items each, then starts N processes that each
drain until nothing is left (`pipeline.deliveries.drain_deliveries`, as a `lifecycle worker` job does).
The parent samples every worker's resident memory (VmRSS) once a second and reports the rate, and per
worker the peak and the RSS at 10 % and 90 % of the run (flat means those two are close). `--profile`
runs one worker in-process under cProfile instead and prints the top of its profile.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import SHOP, bodies  # noqa: E402

CHUNK = 5000


def environment(database_url: str | None) -> dict:
    env = dict(
        os.environ,
        SHOPIFY_API_KEY="bench",
        SHOPIFY_API_SECRET="bench-secret",
        LIFECYCLE_SECRET_KEY="bench",
        LIFECYCLE_INSTANCE_PATH=tempfile.mkdtemp(prefix="lifecycle-backlog-"),
        PYTHONPATH=str(ROOT),
        LIFECYCLE_LOG_LEVEL="WARNING",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def seed(count: int) -> None:
    """Migrate, register the shop, and store `count` received deliveries (in chunks: flat memory here too)."""
    from plugin import clock, create_app
    from plugin.store import shops
    from plugin.store.models import Delivery, DeliveryStatus

    app = create_app()
    db = app.extensions["lifecycle.db"]
    now = clock.now()
    with db.session() as session:
        shops.upsert_shop(session, SHOP, None, now)
    for start in range(0, count, CHUNK):
        rows = [
            dict(
                webhook_id=webhook_id,
                shop_domain=SHOP,
                topic="orders/paid",
                triggered_at=now,
                received_at=now,
                body=body,
                status=DeliveryStatus.RECEIVED,
                attempts=0,
            )
            for webhook_id, body in bodies(min(CHUNK, count - start), offset=start)
        ]
        with db.engine.begin() as connection:
            connection.execute(Delivery.__table__.insert(), rows)


def work() -> None:
    """One worker: drain until a drain finds nothing."""
    from plugin import create_app
    from plugin.pipeline.deliveries import drain_deliveries

    app = create_app()
    with app.app_context():
        while drain_deliveries():
            pass


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--role", choices=("seed", "work"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "seed":
        seed(args.deliveries)
        return
    if args.role == "work":
        work()
        return

    env = environment(args.database_url)
    me = [sys.executable, str(Path(__file__).resolve())]
    started = time.perf_counter()
    subprocess.run([*me, "--role", "seed", "--deliveries", str(args.deliveries)], env=env, check=True)
    print(f"seeded {args.deliveries} deliveries in {time.perf_counter() - started:.0f} s", flush=True)
    if args.profile:
        profile = [sys.executable, "-m", "cProfile", "-s", "cumulative", str(Path(__file__).resolve())]
        out = subprocess.run([*profile, "--role", "work"], env=env, capture_output=True, text=True)
        print("\n".join(out.stdout.splitlines()[:70]))
        return
    started = time.perf_counter()
    workers = [subprocess.Popen([*me, "--role", "work"], env=env) for _ in range(args.workers)]
    samples: dict[int, list[float]] = {worker.pid: [] for worker in workers}
    while any(worker.poll() is None for worker in workers):
        for worker in workers:
            rss = rss_mib(worker.pid) if worker.poll() is None else None
            if rss is not None:
                samples[worker.pid].append(rss)
        time.sleep(1)
    elapsed = time.perf_counter() - started
    rate = args.deliveries / elapsed
    print(
        f"{args.workers} worker(s): {args.deliveries} deliveries in {elapsed:.1f} s = {rate:.0f}/s "
        f"({rate / args.workers:.0f}/s per worker)"
    )
    for pid, rss in samples.items():
        if rss:
            early, late = rss[len(rss) // 10], rss[(len(rss) * 9) // 10]
            print(f"  worker {pid}: peak {max(rss):.0f} MiB, at 10 % {early:.0f} MiB, at 90 % {late:.0f} MiB")


if __name__ == "__main__":
    main()
