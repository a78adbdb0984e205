"""Per-shop maintenance jobs: the history backfill's steps, the reconciliation with the Admin API, and the
stage write-back in bulk."""

from __future__ import annotations

import time
from collections import Counter

from flask import current_app

from plugin import clock
from plugin.actions import stage_writeback
from plugin.pipeline import queue
from plugin.pipeline.run_action import database, shop_client
from plugin.shopify import backfill, reconcile, tokens
from plugin.store.models import Shop

WRITEBACK_SECONDS = 300  # a job claims batches for this long at most; what is left waits for the next


def backfill_step(shop_id: int) -> dict:
    """Advance a shop's history backfill (launched on install, woken by bulk_operations/finish)."""

    db = database()
    with db.session() as session:
        shop = session.get(Shop, shop_id)
        domain = shop.domain if shop and shop.active else None
    client = shop_client(db, shop_id, domain) if domain else None
    if client is None:
        return {"status": "skipped", "why": "shop not installed or without a token"}
    return backfill.step(db, client, shop_id)


def reconcile_shop(shop_id: int) -> dict:
    """Pull what changed since the last sync and drain it like webhooks (the tick schedules this)."""

    db = database()
    with db.session() as session:
        shop = session.get(Shop, shop_id)
        domain = shop.domain if shop and shop.active else None
    client = shop_client(db, shop_id, domain) if domain else None
    if client is None:
        return {"status": "skipped", "why": "shop not installed or without a token"}
    counts = reconcile.reconcile(db, client, shop_id)
    connection = current_app.extensions["lifecycle.redis"]
    for slot in sorted({queue.delivery_slot(i) for i in counts.pop("ids")}):
        queue.enqueue_drain(connection, slot)
    return counts


def write_back_stages(shop_id: int) -> dict:
    """Write the shop's due stage write-backs in bulk, batch after batch until none is due (or the
    store throttles: those wait on the ledger for the tick to bring them back)."""

    db = database()
    with db.session() as session:
        shop = session.get(Shop, shop_id)
        domain = shop.domain if shop is not None else None
    try:
        client = shop_client(db, shop_id, domain) if domain else None
    except tokens.TokenError:
        client = None  # the runs fail with the reason, as run_action fails them
    done, deadline = Counter(), time.monotonic() + WRITEBACK_SECONDS
    while time.monotonic() < deadline:
        batch = stage_writeback.write_back_due(db, client, shop_id, clock.now())
        done.update(batch)
        if not batch or batch.get("scheduled"):
            break
    return dict(done)
