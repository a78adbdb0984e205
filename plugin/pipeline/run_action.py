"""Carrying out a planned effect once: re-check it against the sending policy, act, record the attempt."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from plugin import clock
from plugin.actions import ACTIONS, ActionContext
from plugin.actions.base import PermanentActionError, RetryableActionError
from plugin.core import policy
from plugin.pipeline import queue
from plugin.shopify import tokens
from plugin.shopify.client import (
    ShopifyAuthError,
    ShopifyClient,
    ShopifyThrottled,
    ShopifyTransientError,
    ShopifyUserErrors,
)
from plugin.store import runs
from plugin.store.db import Database
from plugin.store.models import ActionAttempt, ActionRun, RunStatus, Shop, Shopper

log = logging.getLogger(__name__)


def database() -> Database:
    return current_app.extensions["lifecycle.db"]


def dispatch_due_runs(db: Database, now) -> int:
    """Queue every scheduled run whose time has come (the tick calls this too); due stage write-backs
    go to their shop's bulk job instead, never one by one."""
    with db.session() as session:
        writeback_shops = runs.route_due_stage_syncs(session, now)
        ids = runs.due_run_ids(session, now)
    connection = current_app.extensions["lifecycle.redis"]
    for shop_id in writeback_shops:
        queue.enqueue_stage_writeback(connection, shop_id)
    for run_id in ids:
        queue.enqueue_action_run(connection, run_id)
    return len(ids)


def run_action(run_id: int) -> str:
    """Carry out one planned effect once: re-check it, act, and record the attempt (saleor's shape).

    ShopifyThrottled and passing failures put the run back on the schedule (the tick re-queues it);
    user errors, auth errors and bad templates fail it for good, with the reason.
    """
    db, now = database(), clock.now()
    with db.session() as session:  # the token first: a refresh must not wait on this run's lock
        shop = session.scalar(
            select(Shop).join(ActionRun, ActionRun.shop_id == Shop.id).where(ActionRun.id == run_id)
        )
        shop_ref = (shop.id, shop.domain) if shop else None
    try:
        client = shop_client(db, *shop_ref) if shop_ref else None
    except tokens.TokenError as error:
        log.warning("run %s: %s", run_id, error)
        client = None
    with db.session() as session:
        run = session.get(ActionRun, run_id, with_for_update=True)
        if run is None or run.status not in (RunStatus.QUEUED, RunStatus.SCHEDULED, RunStatus.RUNNING):
            return run.status if run else "missing"  # already done: a duplicate job
        ctx = _action_context(db, session, run, now, client)
        decision = policy.decide(runs.policy_snapshot(session, ctx.shop, run, ctx.shopper, now), run, now)
        if decision.skip:
            return _end(session, run, RunStatus.SKIPPED, now, "skipped", reason=decision.skip)
        if decision.defer_until:
            run.status, run.due_at, run.deferred_reason = (
                RunStatus.SCHEDULED,
                decision.defer_until,
                decision.why,
            )
            _attempt(session, run, now, "deferred", decision.why)
            return "deferred"
        run.status, run.attempts = RunStatus.RUNNING, run.attempts + 1
        session.commit()
        started = time.monotonic()
        try:
            ACTIONS[run.action](ctx)
        except (ShopifyThrottled, ShopifyTransientError, RetryableActionError) as error:
            return _retry_later(session, run, now, error, started)
        except (ShopifyUserErrors, ShopifyAuthError, PermanentActionError) as error:
            return _end(session, run, RunStatus.FAILED, now, "failed", reason=str(error), started=started)
        return _end(session, run, RunStatus.SUCCEEDED, now, "succeeded", started=started)


RUN_RETRY_DELAYS = (60, 300, 1800, 7200)


def shop_client(db: Database, shop_id: int, domain: str) -> ShopifyClient | None:
    """An Admin API client for the shop with a fresh token (refreshed first if it lapses soon)."""
    config = current_app.config
    token = tokens.access_token(db, shop_id, config)
    if token is None:
        return None
    return ShopifyClient(
        domain, token, config["SHOPIFY_API_VERSION"], origin=config.get("SHOPIFY_ADMIN_ORIGIN")
    )


def _action_context(db, session, run: ActionRun, now, client) -> ActionContext:
    shop = session.get(Shop, run.shop_id)
    shopper = session.get(Shopper, run.shopper_id) if run.shopper_id else None
    config = current_app.config
    settings = dict(
        SMTP_URL=config.get("SMTP_URL"),
        APP_URL=config["APP_URL"],
        SECRET_KEY=config["SECRET_KEY"],
        OUTBOX=config["OUTBOX"],
    )
    return ActionContext(db, session, shop, run, shopper, client, now, settings)


def _attempt(session, run: ActionRun, now, outcome: str, error: str | None = None, started=None) -> None:
    duration = int((time.monotonic() - started) * 1000) if started else None
    session.add(
        ActionAttempt(run_id=run.id, started_at=now, duration_ms=duration, outcome=outcome, error=error)
    )


def _end(session, run: ActionRun, status: str, now, outcome: str, reason=None, started=None) -> str:
    run.status, run.finished_at = status, now
    if reason:
        run.skip_reason = reason
    _attempt(session, run, now, outcome, reason, started)
    return status


def _retry_later(session, run: ActionRun, now, error: Exception, started) -> str:
    if run.attempts > len(RUN_RETRY_DELAYS):
        return _end(
            session, run, RunStatus.FAILED, now, "failed", reason=f"gave up: {error}", started=started
        )
    wait = getattr(error, "retry_after", None) or RUN_RETRY_DELAYS[run.attempts - 1]
    run.status, run.due_at = RunStatus.SCHEDULED, now + timedelta(seconds=wait)
    run.deferred_reason = f"retry after {type(error).__name__}: {error}"
    _attempt(session, run, now, "retry", str(error), started)
    return "retrying"
