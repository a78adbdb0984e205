"""Per-shop maintenance jobs: the history backfill's steps, the reconciliation with the Admin API, and the
physical erasure after a redaction, the daily fit of the purchase model, and the stage write-back in bulk."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta

import redis
from flask import current_app
from sqlalchemy import select

from plugin import clock
from plugin.actions import stage_writeback
from plugin.pipeline import queue
from plugin.pipeline.run_action import Breaker, database, shop_client
from plugin.shopify import backfill, reconcile, tokens
from plugin.shopify.client import ShopifyClient
from plugin.store import predictions
from plugin.store.db import Database
from plugin.store.erasure import ERASED_TABLES
from plugin.store.models import PurchaseFit, Shop

WRITEBACK_SECONDS = 300  # a job claims batches for this long at most; what is left waits for the next


NOT_INSTALLED = {"status": "skipped", "why": "shop not installed or without a token"}


def installed_client(db: Database, shop_id: int) -> ShopifyClient | None:
    """An Admin API client for the shop while it is installed and has a token; None otherwise."""
    with db.session() as session:
        shop = session.get(Shop, shop_id)
        domain = shop.domain if shop and shop.active else None
    return shop_client(db, shop_id, domain) if domain else None


def backfill_step(shop_id: int) -> dict:
    """Advance a shop's history backfill (launched on install, woken by bulk_operations/finish)."""
    db = database()
    client = installed_client(db, shop_id)
    return backfill.step(db, client, shop_id) if client else dict(NOT_INSTALLED)


def reconcile_shop(shop_id: int) -> dict:
    """Pull what changed since the last sync and drain it like webhooks (the tick schedules this)."""
    db = database()
    client = installed_client(db, shop_id)
    if client is None:
        return dict(NOT_INSTALLED)
    counts = reconcile.reconcile(db, client, shop_id)
    connection = current_app.extensions["lifecycle.redis"]
    queue.enqueue_deliveries(connection, counts.pop("ids"))
    return counts


def erase_on_disk(shop_id: int) -> dict:
    """After a redaction commits, clear the freed space of the tables it touched (SQLite: TRUNCATE checkpoint
    of the write-ahead log; PostgreSQL: VACUUM), and rewrite the embedded Redis's dump, which may still
    hold the failed jobs the redaction deleted. `shop_id` only names the job: the files are the database's."""

    done = database().erase_freed_space(list(ERASED_TABLES))
    connection = current_app.extensions["lifecycle.redis"]
    if queue.is_embedded(connection):  # REDIS_URL's persistence is the operator's
        connection.save()
        done["redis_dump"] = "rewritten"
    return {"shop_id": shop_id, **done}


def fit_purchase_model(shop_id: int) -> dict:
    """Fit the shop's purchase model as of the one clock's cutoff and store the forecasts."""

    db = database()
    with db.session() as session:
        shop = session.get(Shop, shop_id)
        if shop is None or not shop.active:
            return {"status": "skipped", "why": "shop not installed"}
    fit = predictions.fit_shop(db, shop_id, clock.now())
    if fit.reason:
        return {"status": "not fitted", "cutoff_day": fit.cutoff_day.isoformat(), "why": fit.reason}
    return {"status": "fitted", "cutoff_day": fit.cutoff_day.isoformat(), "shoppers": fit.shoppers}


def queue_due_fits(db: Database, connection: redis.Redis, now: datetime) -> int:
    """Queue a fit for every active shop without one for today's cutoff (so once a day per shop)."""

    with db.session() as session:
        shops = list(session.scalars(select(Shop).where(Shop.active.is_(True)).order_by(Shop.id)))
        fitted = {
            (shop_id, day)
            for shop_id, day in session.execute(
                select(PurchaseFit.shop_id, PurchaseFit.cutoff_day)
                .where(PurchaseFit.cutoff_at >= now - timedelta(days=2))
                .distinct()
            )
        }
    due = [
        shop.id
        for shop in shops
        if (shop.id, predictions.cutoff_of(now, predictions.shop_zone(shop))[0]) not in fitted
    ]
    return sum(queue.enqueue_fit(connection, shop_id) for shop_id in due)


def write_back_stages(shop_id: int) -> dict:
    """Write the shop's due stage write-backs in bulk, batch after batch until none is due (or the
    store throttles: those wait on the ledger for the tick to bring them back).

    The shop's breaker (`run_action.Breaker`) is the single runs': while it is open nothing is claimed
    (the runs stay due, and the tick brings them back once it closes), and a store that does not answer
    opens it."""

    breaker = Breaker(current_app.extensions["lifecycle.redis"], shop_id)
    tripped = breaker.open_until(clock.now())
    if tripped:
        return {"breaker_open": tripped[0].isoformat()}
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
        settlement = stage_writeback.write_back_due(db, client, shop_id, clock.now())
        batch = settlement.counts()
        done.update(batch)
        if settlement.unreachable is not None:
            breaker.trip(clock.now(), settlement.unreachable)
        if not batch or batch.get("scheduled"):
            break
    return dict(done)
