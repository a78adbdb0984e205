"""What an action is given, and the errors that say whether to try again."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from plugin.shopify.client import ShopifyClient
from plugin.store.db import Database
from plugin.store.models import ActionRun, RunStatus, Shop, Shopper


class PermanentActionError(Exception):
    """The action cannot succeed (a bad template, a customer Shopify does not know): fail, no retry."""


class RetryableActionError(Exception):
    """A passing failure (the mail server is down): try again later."""


class AttemptTakenBack(Exception):
    """The run is no longer this attempt's: its lease ran out and the tick took it back (the process was
    paused, or its clock ran behind). The attempt stops without writing anything."""


@dataclass
class ActionContext:
    """One run with the rows it reads, the shop's Shopify client, and the settings sending needs."""

    db: Database
    session: Session
    shop: Shop
    run: ActionRun
    shopper: Shopper | None
    client: ShopifyClient | None
    now: datetime
    settings: dict = field(default_factory=dict)  # SMTP_URL, OUTBOX, APP_URL, SECRET_KEY
    attempt: int | None = None  # the run's attempt count this attempt took: it holds the run while it matches

    @property
    def customer_gid(self) -> str | None:
        if self.shopper is None:
            return None
        return f"gid://shopify/Customer/{self.shopper.customer_id}"

    def require_client(self) -> ShopifyClient:
        if self.client is None:
            raise PermanentActionError("the shop has no access token (not installed)")
        return self.client

    def holds_run(self) -> bool:
        """Whether the run is still this attempt's (running, under this attempt's count), locking it until
        the next commit so the tick cannot take it back meanwhile."""
        if self.attempt is None:
            return True  # not carried out by `run_action` (a test's direct call)
        with self.session.no_autoflush:
            row = self.session.execute(
                select(ActionRun.status, ActionRun.attempts)
                .where(ActionRun.id == self.run.id)
                .with_for_update()
            ).one_or_none()
        return row is not None and (row.status, row.attempts) == (RunStatus.RUNNING, self.attempt)

    def commit_progress(self) -> None:
        """Make what is done so far durable (a code created, a send about to start) before the next step;
        raises AttemptTakenBack, writing nothing, when the run is no longer this attempt's."""
        if not self.holds_run():
            self.session.rollback()
            raise AttemptTakenBack(f"run {self.run.id} was taken back")
        self.session.commit()
