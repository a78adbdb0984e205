"""Updates to a shopper's row from payloads, each guarded against stale (older) deliveries."""

from __future__ import annotations

from datetime import datetime

from plugin.core.facts import is_stale
from plugin.shopify.payloads import ConsentUpdate, CustomerRef, TagsChange
from plugin.store.models import Shopper


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
