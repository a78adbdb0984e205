"""Backfill on install: the fake store's bulk operations serve a generated history of 100,000 orders as
JSONL; the install launches them, Shopify's `bulk_operations/finish` webhooks (signed, posted to
/webhooks) wake the import, and afterwards every shopper's stage is what the history says, with no play
planned for history and memory flat while streaming."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select

from plugin.core.facts import ShopperFacts
from plugin.core.stages import Thresholds, assess
from plugin.demo.fake_bulk import history_lines
from plugin.store.models import ActionRun, Order, Shop, Shopper, StageTransition
from tests.conftest import API_KEY, NOW, REDIS_URL, SECRET, SHOP
from tests.test_install import open_app_home

ORDERS = int(os.environ.get("LIFECYCLE_TEST_BACKFILL_ORDERS", "100000"))
CUSTOMERS = ORDERS // 5


def deliver_shopify_webhooks(client, store, sent: set) -> int:
    """POST what the fake store would have sent to the app (signed by it), once each."""
    count = 0
    for hook in list(store.outgoing_webhooks):
        key = hook["headers"]["X-Shopify-Webhook-Id"]
        if key not in sent:
            sent.add(key)
            assert client.post("/webhooks", data=hook["body"], headers=hook["headers"]).status_code == 200
            count += 1
    return count


def expected_stages(history: dict, thresholds: Thresholds) -> dict[int, str]:
    """The stage of each customer computed straight from the generated history (not through our code)."""
    orders = defaultdict(lambda: [0, Decimal(0), None])
    items = history_lines(root="orders", **history)
    for line in items:
        if "__parentId" in line or not line.get("customer") or line.get("cancelledAt"):
            continue
        buyer = int(line["customer"]["id"].rsplit("/", 1)[1])
        total = Decimal(line["totalPriceSet"]["shopMoney"]["amount"])
        refunded = sum(Decimal(r["totalRefundedSet"]["shopMoney"]["amount"]) for r in line["refunds"])
        placed = datetime.fromisoformat(line["createdAt"].replace("Z", "+00:00"))
        entry = orders[buyer]
        entry[0] += 1
        entry[1] += max(total - refunded, Decimal(0))
        entry[2] = max(entry[2], placed) if entry[2] else placed
    stages = {}
    for n in range(1, history["customers"] + 1):
        count, spent, last = orders.get(n, (0, Decimal(0), None))
        facts = ShopperFacts(orders_count=count, total_spent=spent, last_order_at=last)
        stages[n] = assess(facts, NOW, thresholds).stage.value
    return stages


def worker_peak_rss(app, fake_store) -> int:
    """Run `lifecycle worker --burst` as its own process, as the Procfile does; return its peak RSS in KiB."""
    env = dict(
        os.environ,
        DATABASE_URL=app.config["DATABASE_URL"],
        REDIS_URL=REDIS_URL,
        SHOPIFY_API_KEY=API_KEY,
        SHOPIFY_API_SECRET=SECRET,
        LIFECYCLE_SECRET_KEY="test-secret-key",
        SHOPIFY_ADMIN_ORIGIN=fake_store.origin,
        LIFECYCLE_NOW=NOW.isoformat(),
        LIFECYCLE_INSTANCE_PATH=app.instance_path,
    )
    process = subprocess.Popen([sys.executable, "-m", "plugin.cli", "worker", "--burst"], env=env)
    peak = 0  # VmHWM: the process's own high-water mark (ru_maxrss would include pytest's, from the fork)
    while process.poll() is None:
        try:
            with open(f"/proc/{process.pid}/status") as status:
                line = next(x for x in status if x.startswith("VmHWM:"))
            peak = max(peak, int(line.split()[1]))
        except (OSError, StopIteration):
            pass
        time.sleep(0.05)
    assert process.returncode == 0
    return peak


def test_install_backfills_the_store_history(client, db, fake_store, app, worker):
    store = fake_store.store
    store.history = {"customers": CUSTOMERS, "orders": ORDERS, "seed": 5, "now": NOW.isoformat()}
    # the merchant opens the app: install, then the backfill's first bulk query (customers)
    assert open_app_home(client).status_code == 200
    worker.work()
    sent: set[str] = set()
    assert deliver_shopify_webhooks(client, store, sent) == 1  # customers' bulk operation finished
    customers_peak = worker_peak_rss(app, fake_store)  # imports customers, launches the orders' query
    assert deliver_shopify_webhooks(client, store, sent) == 1
    orders_peak = worker_peak_rss(app, fake_store)  # imports the orders and line items, recounts, stages

    with db.session() as session:
        shop = session.scalar(select(Shop).where(Shop.domain == SHOP))
        progress = shop.backfill
        stored_orders = session.scalar(select(func.count(Order.id)))
        stages = dict(session.execute(select(Shopper.customer_id, Shopper.stage)).all())
        transitions = session.scalar(
            select(func.count(StageTransition.id)).where(StageTransition.cause == "backfill")
        )
        plays = session.scalar(select(func.count(ActionRun.id)).where(ActionRun.play != "stage_sync"))
        write_backs = dict(
            session.execute(
                select(Shopper.customer_id, ActionRun.status)
                .join(ActionRun, ActionRun.shopper_id == Shopper.id)
                .where(ActionRun.play == "stage_sync")
            ).all()
        )
        thresholds = Thresholds.of(shop)
    assert progress["status"] == "done", progress
    assert (progress["customers"], progress["orders"]) == (CUSTOMERS, ORDERS)
    assert stored_orders == ORDERS
    # every stage as the history says, and every move explained
    assert stages == expected_stages(store.history, thresholds)
    assert transitions == sum(1 for stage in stages.values() if stage != "prospect")
    # history plans no plays: no welcome or win-back storm
    assert plays == 0
    # but every customer's stage is to be written back to Shopify, once, by the bulk write-back job
    assert set(write_backs) == set(stages) and set(write_backs.values()) == {"scheduled"}
    # streamed: the orders' JSONL is several times the customers' and tens of MB, yet the worker's peak
    # memory barely differs between the two imports (loaded whole, it would take hundreds of MB)
    files = {op: os.path.getsize(store.bulk_file(op.rsplit("/", 1)[1])) for op in store.bulk_operations}
    orders_file = max(files.values())
    assert orders_file > 4 * min(files.values())
    assert orders_peak < customers_peak + 24 * 1024, (customers_peak, orders_peak, orders_file)


def test_backfill_never_overwrites_newer_facts_from_webhooks(client, db, fake_store, app, worker):
    from plugin.demo import synthetic as s
    from tests.webhook_client import post_webhook

    store = fake_store.store
    store.history = {"customers": 50, "orders": 200, "seed": 9, "now": NOW.isoformat()}
    assert open_app_home(client).status_code == 200
    # a live consent withdrawal arrives (newer than the history's) before the backfill imports customers
    post_webhook(
        client,
        "customers_email_marketing_consent/update",
        s.consent_payload(3, "shopper3@example.com", "unsubscribed", NOW),
    )
    worker.work()
    sent: set[str] = set()
    for _ in range(2):
        deliver_shopify_webhooks(client, store, sent)
        worker.work()
    with db.session() as session:
        three = session.scalar(select(Shopper).where(Shopper.customer_id == 3))
        assert session.scalar(select(Shop.backfill))["status"] == "done"
    assert three.consent_state == "unsubscribed"
    assert three.first_name  # the profile itself came from the history
