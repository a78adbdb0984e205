"""Carrying out a planned effect once: re-check it against the sending policy, act, record the attempt."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

import redis
from flask import current_app
from sqlalchemy import select

from plugin import actions, clock
from plugin.actions import ActionContext
from plugin.actions.base import AttemptTakenBack, PermanentActionError, RetryableActionError
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
from plugin.store import policy_snapshot, runs, stage_syncs
from plugin.store.db import Database
from plugin.store.models import ActionAttempt, ActionRun, RunStatus, Shop, Shopper

log = logging.getLogger(__name__)


def database() -> Database:
    return current_app.extensions["lifecycle.db"]


def dispatch_due_runs(db: Database, now) -> int:
    """Queue every scheduled run whose time has come (the tick calls this too); due stage write-backs
    go to their shop's bulk job instead, never one by one."""
    with db.session() as session:
        writeback_shops = stage_syncs.route_due_stage_syncs(session, now)
        due = runs.due_runs(session, now)
    connection = current_app.extensions["lifecycle.redis"]
    for shop_id in writeback_shops:
        queue.enqueue_stage_writeback(connection, shop_id)
    queue.enqueue_action_runs(connection, due)
    return len(due)


def run_action(run_id: int) -> str:
    """Carry out one planned effect once: re-check it, act, and record the attempt (saleor's shape).

    ShopifyThrottled and passing failures put the run back on the schedule (the tick re-queues it); an
    unreachable Admin API also opens the shop's breaker, so its other runs wait without calling it; user
    errors, auth errors and bad templates fail it for good, with the reason.
    """
    db, now = database(), clock.now()
    with db.read_session() as session:  # the token first: a refresh must not wait on this run's lock
        shop = session.scalar(
            select(Shop).join(ActionRun, ActionRun.shop_id == Shop.id).where(ActionRun.id == run_id)
        )
    breaker = Breaker(current_app.extensions["lifecycle.redis"], shop.id) if shop else None
    tripped = breaker.open_until(now) if breaker else None
    try:  # no client (nor token refresh) while the shop's API is known to be unreachable
        client = shop_client(db, shop.id, shop.domain, loaded=shop) if shop and not tripped else None
    except tokens.TokenError as error:
        log.warning("run %s: %s", run_id, error)
        client = None
    with db.session() as session:
        run = session.scalar(select(ActionRun).where(ActionRun.id == run_id).with_for_update())
        if run is None or run.status not in (RunStatus.QUEUED, RunStatus.SCHEDULED):
            return run.status if run else "missing"  # done, or another attempt's: a duplicate job
        if run.status == RunStatus.SCHEDULED and run.due_at > now:
            return "not due"  # a second job of a run its first deferred or set to retry: the tick queues it
        # Its shop and shopper (gone if erased), read once the run is ours: a batch that held the run's
        # lock may have changed them (consent withdrawn, the shopper deleted) and committed meanwhile.
        # Not joined into the locking read: on PostgreSQL a row waited for is read again, but the rows
        # joined to it come from the statement's snapshot, taken before the wait.
        shop, shopper = session.execute(
            select(Shop, Shopper)
            .select_from(ActionRun)
            .join(Shop, Shop.id == ActionRun.shop_id)
            .outerjoin(Shopper, Shopper.id == ActionRun.shopper_id)
            .where(ActionRun.id == run_id)
        ).one()
        ctx = _action_context(db, session, run, shop, shopper, now, client)
        decision = policy.decide(
            policy_snapshot.policy_snapshot(session, ctx.shop, run, ctx.shopper, now), run, now
        )
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
        if tripped:  # back off with the shop's other runs: no network call, no attempt counted
            until, why = tripped
            reason = f"Admin API unreachable; breaker open until {until.isoformat()} ({why})"
            run.status, run.due_at, run.deferred_reason = RunStatus.SCHEDULED, until, reason
            _attempt(session, run, now, "breaker", reason)
            return "breaker open"
        run.status, run.attempts = RunStatus.RUNNING, run.attempts + 1
        run.lease_until = now + RUN_LEASE  # should this attempt stop, the tick takes the run back then
        run.deferred_reason = None  # why it waited is history now (its attempts keep it); how it ends follows
        ctx.attempt = run.attempts
        session.commit()
        started = time.monotonic()
        try:
            actions.BY_NAME[run.action](ctx)
        except AttemptTakenBack:
            session.rollback()
            log.warning("run %s: its lease ran out and the tick took it back; this attempt stops", run_id)
            return "taken back"
        except ShopifyTransientError as error:
            if breaker:
                breaker.trip(now, error)
            return _after_attempt(ctx, _retry_later, error, started)
        except (ShopifyThrottled, RetryableActionError) as error:
            return _after_attempt(ctx, _retry_later, error, started)
        except (ShopifyUserErrors, ShopifyAuthError, PermanentActionError) as error:
            return _after_attempt(ctx, _fail, error, started)
        except Exception as error:  # a bug, the job's timeout, a database error: retried, with the error
            log.exception("run %s: unexpected error", run_id)
            session.rollback()  # the error may have left the transaction unusable; the run reloads
            return _after_attempt(ctx, _retry_later, error, started)
        if breaker:
            breaker.close()
        return _after_attempt(ctx, _succeed, None, started)


def _after_attempt(ctx: ActionContext, record, error: Exception | None, started) -> str:
    """Record how the attempt ended (`record`: _succeed, _fail or _retry_later), unless the run is no
    longer this attempt's: its lease ran out and the tick took it back, so the record is the next
    attempt's to write."""
    if not ctx.holds_run():
        ctx.session.rollback()
        log.warning("run %s: taken back by the tick before this attempt ended", ctx.run.id)
        return "taken back"
    ctx.run.lease_until = None
    return record(ctx.session, ctx.run, ctx.now, error, started)


def _succeed(session, run: ActionRun, now, _error, started) -> str:
    return _end(session, run, RunStatus.SUCCEEDED, now, "succeeded", started=started)


def _fail(session, run: ActionRun, now, error: Exception, started) -> str:
    return _end(session, run, RunStatus.FAILED, now, "failed", reason=str(error), started=started)


# A run is `running` while an attempt is under way, until its lease_until. An attempt's job is stopped after
# queue.RUN_JOB_TIMEOUT; a run still running when its lease is over was interrupted (its worker killed, its
# machine gone) and the tick takes it back (`take_back_interrupted`). An attempt checks that it still holds
# the run before each write (`ActionContext.holds_run`), so one outliving its lease (a process paused
# for longer) writes nothing over the next attempt's.
RUN_LEASE = timedelta(minutes=15)


# A shop's breaker stays open this long after its Admin API was unreachable, doubling with each failure in
# a row (up to BREAKER_MAX_SECONDS); a success closes it.
BREAKER_SECONDS = 60
BREAKER_MAX_SECONDS = 1800


class Breaker:
    """A per-shop circuit breaker in Redis: when the shop's Admin API is unreachable (timeouts, refused
    connections, DNS, 5xx: ShopifyTransientError after the client's own retries), every run of the shop
    backs off until the same instant, on the one clock, instead of each holding a worker for the full
    timeout. Redis being away only disables it (the runs then try, as they would without it)."""

    KEY = "lifecycle:breaker:{shop_id}"

    def __init__(self, connection: redis.Redis, shop_id: int):
        self.connection, self.key = connection, self.KEY.format(shop_id=shop_id)

    def open_until(self, now: datetime) -> tuple[datetime, str] | None:
        """(until, why) while the breaker is open at `now`; None when runs may call the API."""
        try:
            state = self.connection.hgetall(self.key)
        except redis.RedisError:
            return None
        if not state or b"open_until" not in state:
            return None
        until = datetime.fromisoformat(state[b"open_until"].decode())
        return (until, state.get(b"why", b"").decode()) if until > now else None

    def trip(self, now: datetime, error: Exception) -> None:
        try:
            trips = self.connection.hincrby(self.key, "trips", 1)
            wait = min(BREAKER_SECONDS * 2 ** min(trips - 1, 16), BREAKER_MAX_SECONDS)
            until = now + timedelta(seconds=wait)
            self.connection.hset(self.key, mapping={"open_until": until.isoformat(), "why": str(error)[:200]})
            self.connection.expire(self.key, 4 * BREAKER_MAX_SECONDS)  # tidies up; the clock decides
        except redis.RedisError:
            log.warning("could not open the breaker %s", self.key)

    def close(self) -> None:
        try:
            self.connection.delete(self.key)
        except redis.RedisError:
            pass


RUN_RETRY_DELAYS = (60, 300, 1800, 7200)
MAX_ATTEMPTS = len(RUN_RETRY_DELAYS) + 1  # a run's attempts, retries after passing failures included


def take_back_interrupted(
    db: Database, connection: redis.Redis, now: datetime
) -> tuple[list[tuple[int, int]], int]:
    """Runs left `running` past their lease (an attempt interrupted: its worker killed with `kill -9`, its
    machine lost) are queued again, to be decided by their next attempt as the action says: an email whose
    send had begun ends failed as "outcome unknown", never sent twice (`actions.send_email`); anything
    else is safe to repeat (tags are set, a code's name comes from its run). A run interrupted on its
    MAX_ATTEMPTS-th attempt ends failed. Each interruption is in the run's attempts, with why. The runs
    are taken back in one transaction, locked (skipping any another tick holds); the dead attempts' jobs
    are forgotten while the runs are locked; the next attempts' jobs (ids of their own) are queued after
    commit. Returns the runs queued again ((id, attempts)), and how many failed."""
    with db.session() as session:
        interrupted = runs.lock_interrupted(session, now)
        queue.forget_run_jobs(connection, [(row.id, row.attempts) for row in interrupted])
        resumed, failed = runs.take_back_interrupted(session, interrupted, now, MAX_ATTEMPTS, RUN_LEASE)
    queue.enqueue_action_runs(connection, resumed)
    if resumed or failed:
        log.warning("took back %d interrupted run(s): %d queued again", len(resumed) + failed, len(resumed))
    return resumed, failed


def shop_client(db: Database, shop_id: int, domain: str, loaded: Shop | None = None) -> ShopifyClient | None:
    """An Admin API client for the shop with a fresh token (refreshed first if it lapses soon); `loaded`,
    the shop's row read just now, spares reading it again when its token needs no refresh."""
    config = current_app.config
    token = tokens.access_token(db, shop_id, config, loaded=loaded)
    if token is None:
        return None
    return ShopifyClient(
        domain, token, config["SHOPIFY_API_VERSION"], origin=config.get("SHOPIFY_ADMIN_ORIGIN")
    )


def _action_context(db, session, run: ActionRun, shop: Shop, shopper: Shopper | None, now, client):
    config = current_app.config
    settings = dict(
        SMTP_URL=config.get("SMTP_URL"),
        APP_URL=config["APP_URL"],
        SECRET_KEY=config["SECRET_KEY"],
        OUTBOX=config["OUTBOX"],
        MAIL_FROM=config["MAIL_FROM"],
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
    if run.attempts >= MAX_ATTEMPTS:
        return _end(
            session, run, RunStatus.FAILED, now, "failed", reason=f"gave up: {error}", started=started
        )
    wait = getattr(error, "retry_after", None) or RUN_RETRY_DELAYS[run.attempts - 1]
    run.status, run.due_at = RunStatus.SCHEDULED, now + timedelta(seconds=wait)
    run.deferred_reason = f"retry after {type(error).__name__}: {error}"[:2000]
    _attempt(session, run, now, "retry", str(error), started)
    return "retrying"
