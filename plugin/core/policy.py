"""Sending policy, checked when a run is about to act (not only when it was planned): does the play still
apply, may this shopper be mailed (consent, suppression), and may they be mailed *now* (frequency cap,
quiet hours). Each answer carries a sentence for the ledger, so every skip and deferral explains itself.

Pure: `decide` reads a `PolicySnapshot` that the store loads (`store.policy_snapshot`) and the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True)
class Decision:
    """None of both: go ahead. `skip`: never (with why). `defer_until`: not before then (with why)."""

    skip: str | None = None
    defer_until: datetime | None = None
    why: str | None = None


GO = Decision()


@dataclass(frozen=True)
class PolicySnapshot:
    """What the policy reads, as of the moment the run is about to act."""

    # the shop's sending is paused (a signed app/uninstalled): the reason, else None
    shop_paused: str | None = None
    # the shopper (None fields when the run has no shopper)
    shopper_exists: bool = False
    shopper_deleted: bool = False
    shopper_stage: str | None = None
    shopper_email: str | None = None
    shopper_consents: bool = False
    shopper_timezone: str | None = None
    last_order_at: datetime | None = None
    suppressed: bool = False  # the recipient's address unsubscribed from this shop
    # what the run is about (None: not loaded, or the run is not about one)
    checkout_completed: bool = False
    checkout_closed: bool = False
    order_cancelled: bool = False
    order_refunded: bool = False
    subscription_open: bool | None = None  # back-in-stock: still waiting to be told
    # the cap: sends of the shopper's other marketing emails, and higher-priority runs due now
    recent_sends: tuple[datetime, ...] = field(default_factory=tuple)
    higher_priority_due: int = 0
    # the shop's settings
    cap_per_day: int = 1
    cap_per_week: int = 3
    quiet_start_hour: int = 21
    quiet_end_hour: int = 8
    shop_timezone: str | None = None


def decide(snapshot: PolicySnapshot, run, now: datetime) -> Decision:
    """The whole check, in order: the shop's sending not paused → still applies → may be mailed → may be
    mailed now (a frequency cap of 0 skips every marketing email).

    `run` is anything with the run's fields (action, play, trigger, play_stage, marketing, context,
    recipient_email): an `ActionRun` row, or plain data in tests.
    """
    if snapshot.shop_paused:
        return Decision(skip=f"sending paused: {snapshot.shop_paused}")
    reason = still_applies(snapshot, run) or may_mail(snapshot, run)
    if reason:
        return Decision(skip=reason)
    if run.action != "send_email":
        return GO
    return frequency_cap(snapshot, run, now) or quiet_hours(snapshot, now) or GO


def still_applies(snapshot: PolicySnapshot, run) -> str | None:
    """Why the play no longer applies (deleted, left the stage, checkout done, order undone), or None."""
    context = run.context or {}
    if snapshot.shopper_deleted:
        return "the customer was deleted in Shopify"
    if run.play != "stage_sync" and run.trigger != "manual" and run.play_stage and snapshot.shopper_exists:
        if snapshot.shopper_stage != run.play_stage:
            return f"no longer {run.play_stage} (now {snapshot.shopper_stage})"
    if "checkout_token" in context:
        if snapshot.checkout_completed:
            return "the checkout was completed"
        if snapshot.checkout_closed:
            return "the checkout was closed"
        started = datetime.fromisoformat(context["at"]) if context.get("at") else None
        if started and snapshot.last_order_at and snapshot.last_order_at >= started:
            return "the shopper ordered after starting the checkout"
    if "order_id" in context:
        if snapshot.order_cancelled:
            return "the order was cancelled"
        if snapshot.order_refunded:
            return "the order was refunded"
    if "subscription_id" in context and not snapshot.subscription_open:
        return "the alert was cancelled or already sent"
    return None


def may_mail(snapshot: PolicySnapshot, run) -> str | None:
    """Why this shopper may not be mailed at all (no address, no consent, unsubscribed), or None."""
    if run.action != "send_email":
        return None
    if not (run.recipient_email or snapshot.shopper_email):
        return "no email address"
    if run.marketing and not snapshot.shopper_consents:
        return "no email marketing consent"
    if run.marketing and snapshot.suppressed:
        return "the address unsubscribed"
    return None


def frequency_cap(snapshot: PolicySnapshot, run, now: datetime) -> Decision | None:
    """At most cap_per_day marketing emails per 24 h and cap_per_week per 7 days; higher priority first.

    A cap of 0 is the merchant's "no marketing email": the run is skipped (with why), not deferred.
    """
    if not run.marketing or not snapshot.shopper_exists:
        return None
    for window, cap, label in (
        (timedelta(days=1), snapshot.cap_per_day, "per 24 h"),
        (timedelta(days=7), snapshot.cap_per_week, "per 7 days"),
    ):
        if cap <= 0:
            return Decision(skip=f"frequency cap: no marketing email (the cap {label} is 0)")
        recent = sorted(sent for sent in snapshot.recent_sends if sent > now - window)
        if len(recent) >= cap:
            return Decision(
                defer_until=recent[len(recent) - cap] + window,
                why=f"frequency cap: at most {cap} marketing email(s) {label}",
            )
    if snapshot.higher_priority_due:
        return Decision(defer_until=now + timedelta(minutes=10), why="a higher-priority message goes first")
    return None


def quiet_hours(snapshot: PolicySnapshot, now: datetime) -> Decision | None:
    """No sends between quiet_start_hour and quiet_end_hour in the shopper's timezone (else the shop's)."""
    zone = _zone(snapshot.shopper_timezone or snapshot.shop_timezone)
    local = now.astimezone(zone)
    start, end = snapshot.quiet_start_hour, snapshot.quiet_end_hour
    quiet = (start <= local.hour or local.hour < end) if start > end else (start <= local.hour < end)
    if not quiet or start == end:
        return None
    morning = local.replace(hour=end, minute=0, second=0, microsecond=0)
    if morning <= local:
        morning += timedelta(days=1)
    return Decision(
        defer_until=morning.astimezone(now.tzinfo),
        why=f"quiet hours {start:02d}:00–{end:02d}:00 ({zone.key}); sent in the morning",
    )


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


CONSENT_WAIT = timedelta(hours=48)  # the default of LIFECYCLE_CONSENT_WAIT_HOURS


@dataclass(frozen=True)
class ConsentGate:
    """Where a marketing run stands on consent: `scheduled` (may go), `waiting` (until wait_until), or
    `skipped`; `why` explains the last two."""

    status: str
    why: str | None = None


def consent_gate(
    consents: bool, consent_at: datetime | None, event_at: datetime, wait_until: datetime
) -> ConsentGate:
    """A marketing run's standing, from the shopper's latest consent (whether it is consent, and when it
    was recorded) and the run's event.

    A function of the stored consent, not of when it was processed: consent given by `wait_until` lets the
    run go whichever came first; a withdrawal (or a refusal) recorded after the event skips it; otherwise
    it waits (the tick ends expired waits, `expire_wait`).
    """
    if consents:
        if consent_at is None or consent_at <= wait_until:
            return ConsentGate("scheduled")
        return ConsentGate("skipped", f"consent came after the wait (until {wait_until.isoformat()})")
    if consent_at is not None and consent_at >= event_at:
        return ConsentGate("skipped", "email marketing consent refused or withdrawn")
    return ConsentGate("waiting", f"waiting for email marketing consent until {wait_until.isoformat()}")


def expire_wait(wait_until: datetime) -> str:
    """The reason a run that waited for consent in vain ends skipped."""
    return f"no email marketing consent by {wait_until.isoformat()}"
