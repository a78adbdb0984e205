"""What the core reads of a shopper, and the guard that keeps old deliveries from overwriting newer facts.

Shopify retries with the original payload and does not promise order, so every update compares the
payload's own timestamp with the one held: an older one never overwrites newer facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

CONSENTING_STATES = frozenset({"subscribed"})  # pending (double opt-in unconfirmed) is not consent


def is_stale(held: datetime | None, incoming: datetime | None) -> bool:
    """True when `incoming` is older than what we already hold (equal is a harmless re-apply)."""
    return held is not None and incoming is not None and incoming < held


def accepts_marketing(shopper) -> bool:
    """Only an explicit `subscribed` counts as consent (`shopper`: anything with a `consent_state`)."""
    return shopper.consent_state in CONSENTING_STATES


@dataclass(frozen=True)
class ShopperFacts:
    """What classification reads of a shopper."""

    orders_count: int = 0
    total_spent: Decimal = Decimal("0")
    last_order_at: datetime | None = None
    last_activity_at: datetime | None = None  # latest checkout or cart activity
    currency: str | None = None
