"""The stage write-back of a burst: N shoppers (inserted set-based) fall at risk in one tick, and their new
stage goes back to Shopify. Two paths against the same fake store (cost bucket of a 100-points/s store,
run `--time-scale` times faster), measured in the same run:

- today's bulk path: the tick plans one stage_sync run per shopper per 10-minute window; when it ends,
  the shop's write-back job (`plugin.pipeline.maintenance.write_back_stages`) writes 25 customers a call;
- the one-run-per-change path it replaces: one run per change (the old idempotency key), each carried out
  alone by `run_action` (three calls: tagsRemove, tagsAdd, metafieldsSet), called directly (no RQ).

Reports Admin API calls (requests the store answered), cost points, wall time, and the minutes a real
100-points/s store needs for those points (the floor no client beats).

    .venv/bin/python bench/writeback.py [--shoppers 10000] [--database-url URL] [--time-scale 100]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from plugin import create_app  # noqa: E402
from plugin.crypto import encrypt_token  # noqa: E402
from plugin.demo.fake_store import MUTATION_COST, QUERY_COST, FakeStore, FakeStoreServer  # noqa: E402
from plugin.demo.synthetic import first_timer_rows  # noqa: E402
from plugin.store import runs, shops, stage_syncs  # noqa: E402
from plugin.store.models import ActionRun, RunStatus, Shopper  # noqa: E402
from plugin.store.stage_sql import move_stages  # noqa: E402

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
SECRET_KEY = "bench-secret-key"
RESTORE_RATE = 100.0  # points a second: an Advanced/Plus store's Admin GraphQL bucket refill


def seed(db, domain: str, count: int, first_id: int) -> int:
    """A shop with `count` first-time shoppers whose one order is 100 days old (the tick's at_risk)."""
    with db.session() as session:
        shop = shops.upsert_shop(session, domain, encrypt_token("shpat_bench", SECRET_KEY), NOW)
        shop.last_reconciled_at = NOW + timedelta(days=1)
        shop_id = shop.id
    rows = first_timer_rows(shop_id, count, NOW - timedelta(days=100), first_id)
    with db.session() as session:
        for start in range(0, count, 5000):
            session.execute(db.insert(Shopper.__table__), rows[start : start + 5000])
    return shop_id


def fall_at_risk(db, shop_id: int) -> int:
    """The tick's moves and plans for one shop (`run_tick`'s body for it): returns the runs planned."""
    with db.session() as session:
        from plugin.store.models import Shop

        shop = session.get(Shop, shop_id)
        move_stages(session, shop, NOW, not db.is_sqlite)
        return runs.plan_tick_transitions(db, session, shop, NOW)


def one_run_per_change(db, shop_id: int) -> list[int]:
    """Turn the shop's planned write-backs into the old shape: one run per change, due at once."""
    with db.session() as session:
        rows = session.scalars(select(ActionRun).where(ActionRun.shop_id == shop_id)).all()
        for run in rows:
            if run.play == "stage_sync":
                run.cycle = f"at_risk@{NOW.isoformat()}"
                run.idempotency_key = f"{shop_id}:stage_sync:{run.shopper_id}:{run.cycle}"
                run.due_at = NOW
        return [run.id for run in rows if run.play == "stage_sync"]


def measure(store: FakeStore, work) -> dict:
    store.calls.clear()
    store.available, store.refilled_at = store.maximum, time.monotonic()
    started = time.perf_counter()
    work()
    wall = time.perf_counter() - started
    points = sum(
        len(call["fields"]) * (MUTATION_COST if call["field"][0].islower() else QUERY_COST)
        for call in store.calls
    )
    return {
        "calls": len(store.calls),
        "points": points,
        "wall": wall,
        "store_minutes": points / RESTORE_RATE / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shoppers", type=int, default=10_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--time-scale", type=float, default=100.0)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per fake store request otherwise
    folder = tempfile.mkdtemp(prefix="lifecycle-bench-writeback-")
    os.environ.setdefault("SHOPIFY_API_KEY", "bench")
    os.environ.setdefault("SHOPIFY_API_SECRET", "bench")
    os.environ["LIFECYCLE_INSTANCE_PATH"] = folder
    store = FakeStore(maximum=1000.0, restore_rate=RESTORE_RATE, time_scale=args.time_scale)
    with FakeStoreServer(store) as server:
        app = create_app(
            {
                "DATABASE_URL": args.database_url or f"sqlite:///{folder}/bench.sqlite3",
                "REDIS_URL": args.redis_url,
                "SECRET_KEY": SECRET_KEY,
                "SHOPIFY_ADMIN_ORIGIN": server.origin,
                "LOG_LEVEL": "WARNING",
                "APP_URL": "http://127.0.0.1:8000",
            }
        )
        db = app.extensions["lifecycle.db"]
        os.environ["LIFECYCLE_NOW"] = NOW.isoformat()
        bulk_shop = seed(db, "bulk-writeback.myshopify.com", args.shoppers, 1)
        old_shop = seed(db, "one-by-one.myshopify.com", args.shoppers, 1 + args.shoppers)
        planned = fall_at_risk(db, bulk_shop)
        fall_at_risk(db, old_shop)
        old_ids = one_run_per_change(db, old_shop)
        os.environ["LIFECYCLE_NOW"] = (NOW + stage_syncs.STAGE_SYNC_WINDOW).isoformat()
        rescheduled: list[int] = []
        with app.app_context():
            from plugin.pipeline import maintenance
            from plugin.pipeline.run_action import run_action

            def bulk() -> None:
                later = NOW + stage_syncs.STAGE_SYNC_WINDOW
                while done := maintenance.write_back_stages(bulk_shop):
                    if done.get("scheduled"):  # throttled: the tick would come back after the wait
                        rescheduled.append(done["scheduled"])
                        later += timedelta(hours=3)
                        os.environ["LIFECYCLE_NOW"] = later.isoformat()

            def one_by_one() -> None:
                for run_id in old_ids:
                    run_action(run_id)

            new = measure(store, bulk)
            old = measure(store, one_by_one)
        with db.session() as session:
            statuses = dict(
                session.execute(
                    select(ActionRun.shop_id, func.count())
                    .where(ActionRun.play == "stage_sync", ActionRun.status == RunStatus.SUCCEEDED)
                    .group_by(ActionRun.shop_id)
                ).all()
            )
        held = sum(
            1
            for customer in store.customers.values()
            if "lifecycle:at_risk" in customer["tags"]
            and customer["metafields"].get("lifecycle.stage", {}).get("value") == "at_risk"
        )
    backend = "sqlite" if db.is_sqlite else "postgresql"
    print(f"{args.shoppers} shoppers fall at risk in one tick ({planned} runs planned), {backend}")
    print(f"fake store: 1,000-point bucket, {RESTORE_RATE:.0f} points/s, clock x{args.time_scale:g}")
    for name, figures, ok in (
        ("bulk write-back", new, statuses.get(bulk_shop)),
        ("one run per change", old, statuses.get(old_shop)),
    ):
        print(
            f"{name:>20}: {figures['calls']:>6} calls, {figures['points']:>7} points, "
            f"{figures['wall']:7.1f} s wall, {figures['store_minutes']:5.1f} min at 100 points/s, "
            f"{ok}/{args.shoppers} runs succeeded"
        )
    print(
        f"ratio (one by one / bulk): calls {old['calls'] / new['calls']:.1f}x, "
        f"points {old['points'] / new['points']:.2f}x, wall {old['wall'] / new['wall']:.1f}x"
    )
    print(f"customers holding lifecycle:at_risk as tag and metafield: {held}/{2 * args.shoppers}")
    print(f"invalid documents: {len(store.invalid_documents)}; bulk runs rescheduled: {rescheduled}")


if __name__ == "__main__":
    main()
