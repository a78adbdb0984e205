"""Sending policy, checked when a run is about to act (not only when it was planned): does the play still
apply, may this shopper be mailed (consent, suppression), and may they be mailed *now* (frequency cap,
quiet hours). Each answer carries a sentence for the ledger, so every skip and deferral explains itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from plugin.models import ActionRun, Checkout, Order, RunStatus, Shop, Shopper, StockSubscription, Suppression
from plugin.shoppers import accepts_marketing


@dataclass(frozen=True)
class Decision:
    """None of both: go ahead. `skip`: never (with why). `defer_until`: not before then (with why)."""

    skip: str | None = None
    defer_until: datetime | None = None
    why: str | None = None


GO = Decision()


def email_hash(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def is_suppressed(session: Session, shop_id: int, email: str) -> bool:
    return bool(
        session.scalar(
            select(
                exists().where(Suppression.shop_id == shop_id, Suppression.email_hash == email_hash(email))
            )
        )
    )


def decide(session: Session, shop: Shop, run: ActionRun, shopper: Shopper | None, now: datetime) -> Decision:
    """The whole check, in order: still applies → may be mailed → may be mailed now."""
    for check in (_still_applies, _may_mail):
        reason = check(session, shop, run, shopper)
        if reason:
            return Decision(skip=reason)
    if run.action != "send_email":
        return GO
    return _frequency(session, shop, run, now) or _quiet_hours(shop, shopper, now) or GO


def _still_applies(session: Session, shop: Shop, run: ActionRun, shopper: Shopper | None) -> str | None:
    context = run.context or {}
    if shopper is not None and shopper.deleted_at is not None:
        return "the customer was deleted in Shopify"
    if run.play != "stage_sync" and run.trigger != "manual" and run.play_stage and shopper is not None:
        if shopper.stage != run.play_stage:
            return f"no longer {run.play_stage} (now {shopper.stage})"
    if "checkout_token" in context:
        checkout = session.scalar(
            select(Checkout).where(Checkout.shop_id == shop.id, Checkout.token == context["checkout_token"])
        )
        if checkout is not None and checkout.completed_at is not None:
            return "the checkout was completed"
        if checkout is not None and checkout.closed_at is not None:
            return "the checkout was closed"
        started = datetime.fromisoformat(context["at"]) if context.get("at") else None
        if shopper is not None and started and shopper.last_order_at and shopper.last_order_at >= started:
            return "the shopper ordered after starting the checkout"
    if "order_id" in context:
        order = session.scalar(
            select(Order).where(Order.shop_id == shop.id, Order.order_id == context["order_id"])
        )
        if order is not None and order.cancelled_at is not None:
            return "the order was cancelled"
        if order is not None and order.refunded and order.refunded >= order.total_price:
            return "the order was refunded"
    if "subscription_id" in context:
        subscription = session.get(StockSubscription, context["subscription_id"])
        if subscription is None or subscription.notified_at is not None:
            return "the alert was cancelled or already sent"
    return None


def _may_mail(session: Session, shop: Shop, run: ActionRun, shopper: Shopper | None) -> str | None:
    if run.action != "send_email":
        return None
    email = run.recipient_email or (shopper.email if shopper else None)
    if not email:
        return "no email address"
    if run.marketing and (shopper is None or not accepts_marketing(shopper)):
        return "no email marketing consent"
    if run.marketing and is_suppressed(session, shop.id, email):
        return "the address unsubscribed"
    return None


def _frequency(session: Session, shop: Shop, run: ActionRun, now: datetime) -> Decision | None:
    """At most cap_per_day marketing emails per 24 h and cap_per_week per 7 days; higher priority first."""
    if not run.marketing or run.shopper_id is None:
        return None
    sent = select(ActionRun.sent_at).where(
        ActionRun.shopper_id == run.shopper_id,
        ActionRun.marketing.is_(True),
        ActionRun.action == "send_email",
        ActionRun.sent_at.is_not(None),
        ActionRun.id != run.id,
    )
    for window, cap, label in (
        (timedelta(days=1), shop.cap_per_day, "per 24 h"),
        (timedelta(days=7), shop.cap_per_week, "per 7 days"),
    ):
        recent = sorted(session.scalars(sent.where(ActionRun.sent_at > now - window)))
        if len(recent) >= cap:
            return Decision(
                defer_until=recent[len(recent) - cap] + window,
                why=f"frequency cap: at most {cap} marketing email(s) {label}",
            )
    first = session.scalar(
        select(func.count(ActionRun.id)).where(
            ActionRun.shopper_id == run.shopper_id,
            ActionRun.marketing.is_(True),
            ActionRun.id != run.id,
            ActionRun.action == "send_email",
            ActionRun.status.in_((RunStatus.SCHEDULED, RunStatus.QUEUED)),
            ActionRun.due_at <= now,
            ActionRun.priority > run.priority,
        )
    )
    if first:
        return Decision(defer_until=now + timedelta(minutes=10), why="a higher-priority message goes first")
    return None


def _quiet_hours(shop: Shop, shopper: Shopper | None, now: datetime) -> Decision | None:
    """No sends between quiet_start_hour and quiet_end_hour in the shopper's timezone (else the shop's)."""
    zone = _zone((shopper.timezone if shopper else None) or shop.timezone)
    local = now.astimezone(zone)
    start, end = shop.quiet_start_hour, shop.quiet_end_hour
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
