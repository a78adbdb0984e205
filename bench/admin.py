"""Server time of the admin's first paint: the App Home document and the overview's JSON, for a shop in a
given database (the demo store, or the 1M-order shop `bench/backfill.py` leaves behind), against the bare
`/healthz` of the same app as the baseline. Median of N runs each, through Flask's test client (no network).

    .venv/bin/python bench/admin.py --database-url URL --shop DOMAIN [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plugin import create_app  # noqa: E402
from plugin.shopify.tokens import development_session_token  # noqa: E402


def median_ms(call, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = call()
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.status_code
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--shop", required=True)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("SHOPIFY_API_KEY", "bench")
    os.environ.setdefault("SHOPIFY_API_SECRET", "bench")
    os.environ.setdefault("LIFECYCLE_SECRET_KEY", "bench")
    os.environ.setdefault("LIFECYCLE_INSTANCE_PATH", tempfile.mkdtemp(prefix="lifecycle-bench-"))
    app = create_app({"DATABASE_URL": args.database_url, "REDIS_URL": "redis://127.0.0.1:6379/14"})
    client = app.test_client()
    token = development_session_token(app.config, args.shop)
    bearer = {"Authorization": f"Bearer {token}"}
    with app.extensions["lifecycle.db"].session() as session:
        from sqlalchemy import func, select

        from plugin.store.models import Shop, Shopper

        shop_id = session.scalar(select(Shop.id).where(Shop.domain == args.shop))
        shoppers = session.scalar(select(func.count(Shopper.id)).where(Shopper.shop_id == shop_id))
    baseline = median_ms(lambda: client.get("/healthz"), args.runs)
    document = median_ms(lambda: client.get(f"/app/?shop={args.shop}&id_token={token}"), args.runs)
    overview = median_ms(lambda: client.get("/app/api/overview", headers=bearer), args.runs)
    print(f"shop {args.shop}: {shoppers} shoppers")
    print(
        f"/healthz {baseline:.1f} ms · App Home document {document:.1f} ms · overview JSON {overview:.1f} ms"
    )
    print(f"first paint (document + overview): {document + overview:.0f} ms server time")


if __name__ == "__main__":
    main()
