"""The stage write-back in bulk: a shop's due `stage_sync` runs claimed together, the shoppers' current
stages read, written 25 customers a call (`shopify_effects.write_stages`), and every run settled on the
ledger with an attempt row, as `run_action` would settle it alone.

A shopper whose stage changed several times since the last write is written once, with the stage it has
now; one whose Shopify copy is already right (`synced_stage`) costs no call.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update

from plugin.actions.shopify_effects import RETRY, STAGES_PER_CALL, WRITTEN, write_stages
from plugin.shopify.client import (
    ShopifyAuthError,
    ShopifyClient,
    ShopifyThrottled,
    ShopifyTransientError,
    ShopifyUserErrors,
)
from plugin.store import stage_syncs
from plugin.store.db import Database
from plugin.store.models import ActionAttempt, ActionRun, RunStatus, Shopper

CUSTOMER_GID = "gid://shopify/Customer/{}"
CLAIM_SIZE = 250  # runs claimed (and settled) per transaction: ten calls' worth
RETRY_DELAYS = (60, 300, 1800, 7200)  # as run_action's: after these, a failing write-back gives up
# A call of 25 customers costs ~510 points: on a 50-points/s store the bucket takes ~10 s to afford it,
# past the client's own in-process wait. The job waits that long itself (it is the shop's only writer);
# a longer wait ends the job and the runs wait on the ledger.
THROTTLE_PATIENCE, THROTTLE_TRIES = 12.0, 3  # a job sleeps ~24 s at most; longer waits go back on the ledger


@dataclass
class Settlement:
    """What became of each claimed run, gathered in memory and written in a few statements."""

    now: datetime
    outcomes: dict[tuple, list[int]] = field(default_factory=lambda: defaultdict(list))
    durations: dict[int, int] = field(default_factory=dict)
    synced: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    unreachable: ShopifyTransientError | None = None  # the store did not answer (the job opens the breaker)

    def settle(self, run_ids, status: str, reason: str | None = None, due_at=None, untried=False) -> None:
        self.outcomes[(status, reason, due_at, untried)] += list(run_ids)

    def counts(self) -> Counter:
        return Counter({key[0]: len(ids) for key, ids in self.outcomes.items()})

    def write(self, db: Database) -> None:
        """Runs by outcome (one UPDATE each), an attempt per run, and the stages Shopify now holds."""
        with db.session() as session:
            for (status, reason, due_at, untried), ids in self.outcomes.items():
                session.execute(_settle_statement(ids, status, reason, due_at, untried, self.now))
            attempts = [
                dict(
                    run_id=run_id,
                    started_at=self.now,
                    duration_ms=self.durations.get(run_id),
                    outcome=_ATTEMPT_OUTCOME[status],
                    error=reason,
                )
                for (status, reason, _, untried), ids in self.outcomes.items()
                if not untried
                for run_id in ids
            ]
            if attempts:
                session.execute(insert(ActionAttempt), attempts)
            for stage, shopper_ids in self.synced.items():
                session.execute(update(Shopper).where(Shopper.id.in_(shopper_ids)).values(synced_stage=stage))


_ATTEMPT_OUTCOME = {
    RunStatus.SUCCEEDED: "succeeded",
    RunStatus.SKIPPED: "skipped",
    RunStatus.FAILED: "failed",
    RunStatus.SCHEDULED: "retry",
}


def _settle_statement(ids, status, reason, due_at, untried, now):
    values: dict = {"status": status}
    if status == RunStatus.SCHEDULED:
        values |= {"due_at": due_at, "deferred_reason": reason}
        if untried:  # claimed but never sent: this try does not count
            values["attempts"] = ActionRun.attempts - 1
    else:
        values |= {"finished_at": now, "skip_reason": reason}
    return (
        update(ActionRun)
        .where(ActionRun.id.in_(ids))
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def write_back_due(db: Database, client: ShopifyClient | None, shop_id: int, now: datetime) -> Settlement:
    """Claim up to CLAIM_SIZE due write-backs of the shop, write them in bulk, settle them; return the
    settlement: `counts()` says how many runs ended how ("succeeded", "failed", "skipped", "scheduled"),
    empty when none was due, and `unreachable` the error when the store did not answer."""
    with db.session() as session:
        claimed = stage_syncs.claim_stage_syncs(db, session, shop_id, now, CLAIM_SIZE)
        shoppers = _shoppers(session, {shopper_id for _, shopper_id, _ in claimed})
    settlement = Settlement(now)
    by_shopper: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for run_id, shopper_id, attempts in claimed:
        shopper = shoppers.get(shopper_id)
        if shopper is None or shopper.deleted_at is not None:
            settlement.settle([run_id], RunStatus.SKIPPED, "the customer was deleted in Shopify")
        elif shopper.stage == shopper.synced_stage:
            settlement.settle([run_id], RunStatus.SUCCEEDED)  # Shopify already holds it: no call
        elif client is None:
            settlement.settle([run_id], RunStatus.FAILED, "the shop has no access token (not installed)")
        else:
            by_shopper[shopper_id].append((run_id, attempts))
    if by_shopper:
        _write(client, [(shoppers[i], by_shopper[i]) for i in sorted(by_shopper)], settlement, now)
    settlement.write(db)
    return settlement


def _shoppers(session, ids: set[int]) -> dict[int, Shopper]:
    if not ids:
        return {}
    rows = session.execute(
        select(
            Shopper.id, Shopper.customer_id, Shopper.stage, Shopper.synced_stage, Shopper.deleted_at
        ).where(Shopper.id.in_(ids))
    )
    return {row.id: row for row in rows}


def _write(client: ShopifyClient, targets: list, settlement: Settlement, now: datetime) -> None:
    """Write the targets 25 a call; on throttling or a passing failure, reschedule what is left."""
    chunks = [targets[i : i + STAGES_PER_CALL] for i in range(0, len(targets), STAGES_PER_CALL)]
    for position, chunk in enumerate(chunks):
        started = time.monotonic()
        try:
            outcomes = _send(client, [(CUSTOMER_GID.format(s.customer_id), s.stage) for s, _ in chunk])
        except (ShopifyThrottled, ShopifyTransientError) as error:
            if isinstance(error, ShopifyTransientError):
                settlement.unreachable = error
            _retry(chunk, settlement, now, error, untried=False)
            for later in chunks[position + 1 :]:
                _retry(later, settlement, now, error, untried=True)
            return
        except (ShopifyUserErrors, ShopifyAuthError) as error:
            outcomes = [f"{type(error).__name__}: {error}"] * len(chunk)
        duration = int((time.monotonic() - started) * 1000)
        for (shopper, claimed), outcome in zip(chunk, outcomes, strict=True):
            run_ids = [run_id for run_id, _ in claimed]
            settlement.durations.update(dict.fromkeys(run_ids, duration))
            if outcome == WRITTEN:
                settlement.settle(run_ids, RunStatus.SUCCEEDED)
                settlement.synced[shopper.stage].append(shopper.id)
            elif outcome == RETRY:
                _retry([(shopper, claimed)], settlement, now, "another customer's metafield was refused")
            else:
                settlement.settle(run_ids, RunStatus.FAILED, outcome)


def _send(client: ShopifyClient, stages: list[tuple[str, str]]) -> list[str]:
    """One call; a short throttle (the bucket refilling for a few seconds) is waited out here."""
    for _ in range(THROTTLE_TRIES - 1):
        try:
            return write_stages(client, stages)
        except ShopifyThrottled as error:
            if error.retry_after > THROTTLE_PATIENCE:
                raise
            time.sleep(error.retry_after)
    return write_stages(client, stages)


def _retry(chunk, settlement: Settlement, now: datetime, error, untried: bool = False) -> None:
    """Put the runs back on the schedule (throttled: when the bucket refills), or give up on them."""
    for _, claimed in chunk:
        for run_id, attempts in claimed:
            if attempts > len(RETRY_DELAYS) and not untried:
                settlement.settle([run_id], RunStatus.FAILED, f"gave up: {error}")
                continue
            wait = (
                getattr(error, "retry_after", None)
                or RETRY_DELAYS[max(min(attempts, len(RETRY_DELAYS)) - 1, 0)]
            )
            reason = f"retry after {type(error).__name__}: {error}" if isinstance(error, Exception) else error
            due = now + timedelta(seconds=wait)
            settlement.settle([run_id], RunStatus.SCHEDULED, reason, due.replace(microsecond=0), untried)
