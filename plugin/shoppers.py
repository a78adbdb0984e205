"""Updates to a shopper's profile from payloads, each guarded against stale (older) deliveries.

Shopify retries with the original payload and does not promise order, so every update compares the
payload's own timestamp with the one we hold: an older one never overwrites newer facts.
"""

from __future__ import annotations

from datetime import datetime

from plugin.models import Shopper
from plugin.payloads import ConsentUpdate, CustomerRef, TagsChange
from plugin.stages import ShopperFacts

CONSENTING_STATES = frozenset({"subscribed"})  # pending (double opt-in unconfirmed) is not consent


def is_stale(held: datetime | None, incoming: datetime | None) -> bool:
    """True when `incoming` is older than what we already hold (equal is a harmless re-apply)."""
    return held is not None and incoming is not None and incoming < held


def apply_customer(shopper: Shopper, customer: CustomerRef) -> bool:
    """Copy identity fields from a customer payload unless it is stale; say whether it applied."""
    if is_stale(shopper.customer_updated_at, customer.updated_at):
        return False
    for name in ("email", "first_name", "last_name"):
        value = getattr(customer, name)
        if value:
            setattr(shopper, name, value)
    if customer.updated_at is not None:
        shopper.customer_updated_at = customer.updated_at
    return True


def apply_contact(shopper: Shopper, email: str | None, locale: str | None, currency: str | None) -> None:
    """Fill contact details an order or checkout carries, without overwriting a known email."""
    if email and not shopper.email:
        shopper.email = email
    if locale:
        shopper.locale = locale
    if currency and not shopper.currency:
        shopper.currency = currency


def apply_consent(shopper: Shopper, consent: ConsentUpdate, delivered_at: datetime | None) -> bool:
    """Record email-marketing consent, ordered by consent_updated_at (else the delivery's trigger time)."""
    at = consent.consent_updated_at or delivered_at
    if is_stale(shopper.consent_updated_at, at):
        return False
    shopper.consent_state = (consent.state or "").lower() or None
    shopper.consent_updated_at = at
    if consent.email_address:
        shopper.email = consent.email_address
    return True


def apply_tags(shopper: Shopper, change: TagsChange, present: bool) -> None:
    """Record tags added or removed; per tag, only the latest event counts."""
    events = dict(shopper.tag_events or {})
    for tag in change.tags:
        held = events.get(tag)
        held_at = datetime.fromisoformat(held["at"]) if held else None
        if not is_stale(held_at, change.occurred_at):
            events[tag] = {"on": present, "at": change.occurred_at.isoformat()}
    shopper.tag_events = events  # reassign: JSON columns track assignment, not in-place edits


def accepts_marketing(shopper: Shopper) -> bool:
    """Only an explicit `subscribed` counts as consent."""
    return shopper.consent_state in CONSENTING_STATES


def facts_of(shopper: Shopper) -> ShopperFacts:
    """The facts classification reads."""
    activity = [t for t in (shopper.last_checkout_at, shopper.last_cart_at) if t is not None]
    return ShopperFacts(
        orders_count=shopper.orders_count or 0,
        total_spent=shopper.total_spent or 0,
        last_order_at=shopper.last_order_at,
        last_activity_at=max(activity) if activity else None,
        currency=shopper.currency,
    )
