"""What an action is given, and the errors that say whether to try again."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from plugin.shopify.client import ShopifyClient
from plugin.store.db import Database
from plugin.store.models import ActionRun, Shop, Shopper


class PermanentActionError(Exception):
    """The action cannot succeed (a bad template, a customer Shopify does not know): fail, no retry."""


class RetryableActionError(Exception):
    """A passing failure (the mail server is down): try again later."""


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

    @property
    def customer_gid(self) -> str | None:
        if self.shopper is None:
            return None
        return f"gid://shopify/Customer/{self.shopper.customer_id}"

    def require_client(self) -> ShopifyClient:
        if self.client is None:
            raise PermanentActionError("the shop has no access token (not installed)")
        return self.client

    def commit_progress(self) -> None:
        """Make what is done so far durable (a code created, a send about to start) before the next step."""
        self.session.commit()
