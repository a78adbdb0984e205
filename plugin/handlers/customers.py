"""Customer identity, consent, tags and Shopify's purchasing summary."""

from __future__ import annotations

from dataclasses import replace

from plugin.core import facts
from plugin.handlers import shopper_updates
from plugin.handlers.context import HandlerContext, restage
from plugin.handlers.registry import handles
from plugin.shopify.payloads import ConsentUpdate, CustomerDeleted, CustomerRef, PurchasingSummary, TagsChange
from plugin.store import runs, shoppers


@handles("customers/create", "customers/update")
def on_customers_create(ctx: HandlerContext, customer: CustomerRef) -> None:
    """Record who the shopper is; a new contact with no order starts as a prospect."""
    shopper = shoppers.lock_shopper(ctx, customer.id)
    shopper_updates.apply_customer(shopper, customer)
    shopper.deleted_at = None
    restage(ctx, shopper)
    if ctx.topic == "customers/create":
        ctx.trigger(shopper, "customer_created", customer.created_at, "once")


@handles("customers/delete")
def on_customers_delete(ctx: HandlerContext, customer: CustomerDeleted) -> None:
    """Mark the shopper deleted in Shopify: kept for history, never contacted again."""
    shopper = shoppers.lock_shopper(ctx, customer.id)
    shopper.deleted_at = ctx.triggered_at or ctx.now


@handles("customers_email_marketing_consent/update")
def on_customers_email_marketing_consent_update(ctx: HandlerContext, consent: ConsentUpdate) -> None:
    """Record consent given or withdrawn; an older change never overrides a newer one.

    Consent given is the welcome's moment, whatever else has arrived: the trigger comes from this
    payload (the cycle "once" makes redeliveries one welcome), its facts as of the consent's time. The
    shopper's pending marketing runs then stand where the stored consent puts them (runs.apply_consent).
    """
    shopper = shoppers.lock_shopper(ctx, consent.customer_id)
    applied = shopper_updates.apply_consent(shopper, consent, ctx.triggered_at)
    if applied:
        ctx.planned_runs += runs.apply_consent(ctx.db, ctx.session, shopper, ctx.now)
    if (consent.state or "").lower() in facts.CONSENTING_STATES:
        ctx.trigger(shopper, "consent_granted", consent.consent_updated_at or ctx.triggered_at, "once")


# Tags we write ourselves (lifecycle:<stage> by the stage write-back, lifecycle:vip by the VIP play) come
# back as customer.tags_added|removed webhooks, thousands after a burst: they are not the merchant's, and
# change nothing (no shopper row, no tag condition, no plan). A rule reads the stage, not our stage tag.
OUR_TAG_PREFIX = "lifecycle:"
OUR_TAGS_NOTE = "our own tags (lifecycle:*): nothing to do"


@handles("customer.tags_added")
def on_customer_tags_added(ctx: HandlerContext, change: TagsChange) -> str | None:
    """Record the merchant's tags added to a customer (ours are ignored)."""
    return _apply_tags(ctx, change, present=True)


@handles("customer.tags_removed")
def on_customer_tags_removed(ctx: HandlerContext, change: TagsChange) -> str | None:
    """Record the merchant's tags removed from a customer (ours are ignored)."""
    return _apply_tags(ctx, change, present=False)


def _apply_tags(ctx: HandlerContext, change: TagsChange, present: bool) -> str | None:
    theirs = [tag for tag in change.tags if not tag.lower().startswith(OUR_TAG_PREFIX)]
    if not theirs:
        return OUR_TAGS_NOTE
    shopper = shoppers.lock_shopper(ctx, change.customer_id)
    shopper_updates.apply_tags(shopper, replace(change, tags=theirs), present=present)
    return None


@handles("customers/purchasing_summary")
def on_customers_purchasing_summary(ctx: HandlerContext, summary: PurchasingSummary) -> None:
    """Keep Shopify's own order count and spend beside ours (reconciliation compares them)."""
    shopper = shoppers.lock_shopper(ctx, summary.customer_id)
    if facts.is_stale(shopper.shopify_summary_at, summary.occurred_at):
        return
    shopper.shopify_orders_count = summary.number_of_orders
    shopper.shopify_amount_spent = summary.amount_spent
    shopper.shopify_summary_at = summary.occurred_at
