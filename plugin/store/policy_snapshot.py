"""What the sending policy reads about a run (`core.policy.decide`): the shop's settings, the shopper's
consent and suppression, the frequency cap's recent sends, and whether the subject still applies."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from plugin.core.facts import accepts_marketing
from plugin.core.policy import PolicySnapshot
from plugin.store.models import ActionRun, Checkout, Order, Shop, Shopper, StockSubscription
from plugin.store.run_rows import PENDING
from plugin.store.suppressions import is_suppressed


def policy_snapshot(session: Session, shop: Shop, run: ActionRun, shopper: Shopper | None, now: datetime):
    """Load what `core.policy.decide` reads for this run, as of `now`."""
    context = run.context or {}
    email = run.recipient_email or (shopper.email if shopper else None)
    values: dict = dict(
        shop_paused=(shop.pause_reason or "the shop is paused") if shop.paused_at else None,
        cap_per_day=shop.cap_per_day,
        cap_per_week=shop.cap_per_week,
        quiet_start_hour=shop.quiet_start_hour,
        quiet_end_hour=shop.quiet_end_hour,
        shop_timezone=shop.timezone,
        suppressed=bool(email and run.marketing and is_suppressed(session, shop.id, email)),
    )
    if shopper is not None:
        values.update(
            shopper_exists=True,
            shopper_deleted=shopper.deleted_at is not None,
            shopper_stage=shopper.stage,
            shopper_email=shopper.email,
            shopper_consents=accepts_marketing(shopper),
            shopper_timezone=shopper.timezone,
            last_order_at=shopper.last_order_at,
        )
        if run.marketing and run.action == "send_email":
            values.update(_cap_facts(session, run, now))
    values.update(_subject_facts(session, shop, context))
    return PolicySnapshot(**values)


def _cap_facts(session: Session, run: ActionRun, now: datetime) -> dict:
    """The shopper's other marketing sends of the last 7 days, and higher-priority runs due now."""
    others = (
        ActionRun.shopper_id == run.shopper_id,
        ActionRun.marketing.is_(True),
        ActionRun.action == "send_email",
        ActionRun.id != run.id,
    )
    sent = session.scalars(
        select(ActionRun.sent_at).where(*others, ActionRun.sent_at > now - timedelta(days=7))
    )
    higher = session.scalar(
        select(func.count(ActionRun.id)).where(
            *others,
            ActionRun.status.in_(PENDING),
            ActionRun.due_at <= now,
            ActionRun.priority > run.priority,
        )
    )
    return {"recent_sends": tuple(sent), "higher_priority_due": higher or 0}


def _subject_facts(session: Session, shop: Shop, context: dict) -> dict:
    """The state of what the run is about: its checkout, its order, its back-in-stock subscription."""
    facts: dict = {}
    if "checkout_token" in context:
        checkout = session.scalar(
            select(Checkout).where(Checkout.shop_id == shop.id, Checkout.token == context["checkout_token"])
        )
        if checkout is not None:
            facts.update(
                checkout_completed=checkout.completed_at is not None,
                checkout_closed=checkout.closed_at is not None,
            )
    if "order_id" in context:
        order = session.scalar(
            select(Order).where(Order.shop_id == shop.id, Order.order_id == context["order_id"])
        )
        if order is not None:
            facts.update(
                order_cancelled=order.cancelled_at is not None,
                order_refunded=bool(order.refunded and order.refunded >= order.total_price),
            )
    if "subscription_id" in context:
        subscription = session.get(StockSubscription, context["subscription_id"])
        facts["subscription_open"] = subscription is not None and subscription.notified_at is None
    return facts
