"""Send a play's email: tags and code first (idempotent), then render in the shopper's locale and send once.

Exactly once: once the mail server has accepted the envelope (sender and recipient), the run is marked
`sending` and committed, and only then does the DATA command go. A crash after that leaves the mark, and
the next attempt fails the run as "outcome unknown" instead of mailing again: a shopper may miss one email,
but never gets two. A crash before it (connecting, greeting, TLS, login, envelope) leaves no mark: nothing
could have been delivered, and the next attempt sends.

From is the app's own sender (MAIL_FROM, on a domain whose SPF and DKIM we control), shown with the shop's
name; Reply-To is the merchant's sender address, so answers reach the merchant. A From on the merchant's
own domain is not offered: it would need a DNS check of the domain's SPF and DKIM for our sending service
first, which does not exist yet.
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select

from plugin import emails, links
from plugin.actions.base import ActionContext, PermanentActionError, RetryableActionError
from plugin.actions.shopify_effects import issue_discount, tag_customer
from plugin.shopify.client import ShopifyThrottled, ShopifyTransientError
from plugin.shopify.shop_contact import cached_shop_contact
from plugin.store.models import EmailTemplate, StockSubscription


def run(ctx: ActionContext) -> None:
    run_row, shopper = ctx.run, ctx.shopper
    if (run_row.context or {}).get("sending_at"):
        raise PermanentActionError(
            "outcome unknown: an earlier attempt stopped while sending; not sent again"
        )
    to = run_row.recipient_email or shopper.email
    only_own_addresses_on_development_stores(ctx, to)
    tag_customer(ctx)
    issue_discount(ctx)
    unsubscribe_url = links.url_for(ctx.settings, run_row.id) if run_row.marketing else None
    if not run_row.marketing and "subscription_id" in (run_row.context or {}):  # an alert they asked for
        unsubscribe_url = links.alert_cancel_url(ctx.settings, run_row.context["subscription_id"])
    rendered = render(ctx, unsubscribe_url)
    message_id = f"<run-{run_row.id}.{ctx.shop.id}@lifecycle>"
    message = emails.build_message(
        rendered, sender(ctx), to, message_id, unsubscribe_url, ctx.now, reply_to=ctx.shop.sender_email
    )
    ctx.commit_progress()  # no transaction (nor SQLite's write lock) stays open while the mail server talks

    def sending() -> None:  # the envelope is accepted; the DATA command follows this commit
        run_row.context = dict(run_row.context or {}, sending_at=ctx.now.isoformat())
        ctx.commit_progress()

    try:
        emails.send_email(message, ctx.settings.get("SMTP_URL"), ctx.settings["OUTBOX"], before_data=sending)
    except emails.EmailDeliveryError as error:
        run_row.context = {k: v for k, v in (run_row.context or {}).items() if k != "sending_at"}  # retry
        raise RetryableActionError(str(error)) from None
    except emails.EmailOutcomeUnknown as error:  # may have been accepted: never sent again
        raise PermanentActionError(
            f"outcome unknown: the connection failed while sending ({error})"
        ) from None
    run_row.message_id, run_row.sent_at = message_id, ctx.now
    if "subscription_id" in run_row.context:
        subscription = ctx.session.get(StockSubscription, run_row.context["subscription_id"])
        if subscription is not None:
            subscription.notified_at = ctx.now


def only_own_addresses_on_development_stores(ctx: ActionContext, to: str) -> None:
    """A development store (`shop.plan.partnerDevelopment`) mails only the shop's own addresses: anyone can
    open one for free, so it must not become a way to mail strangers. Fails the run with the reason."""
    if ctx.client is None:
        return  # no Admin API access: no plan to read (and nothing else this run does can reach Shopify)
    connection = current_app.extensions["lifecycle.redis"]
    try:
        contact = cached_shop_contact(connection, ctx.shop.id, ctx.client)
    except (ShopifyThrottled, ShopifyTransientError) as error:
        raise RetryableActionError(f"could not read the shop's plan: {error}") from None
    if contact.development and not contact.allows(to):
        raise PermanentActionError("a development store emails only the shop's own addresses")


def sender(ctx: ActionContext) -> tuple[str, str]:
    """(display name, address): the shop's name, at the app's own sending address."""
    return emails.shop_sender(ctx.shop, ctx.settings["MAIL_FROM"])


def render(ctx: ActionContext, unsubscribe_url: str | None) -> emails.RenderedEmail:
    """The message in the shopper's locale, from the merchant's override when there is one."""
    run_row, shopper = ctx.run, ctx.shopper
    locale = emails.pick_locale(
        (shopper.locale if shopper else None) or run_row.context.get("locale"), ctx.shop.languages
    )
    template = run_row.params["template"]
    override = ctx.session.scalar(
        select(EmailTemplate).where(
            EmailTemplate.shop_id == ctx.shop.id,
            EmailTemplate.template == template,
            EmailTemplate.locale == locale,
        )
    )
    discount = run_row.params.get("discount") or {}
    context = dict(
        run_row.context or {},
        shop_name=emails.shop_name(ctx.shop.domain),
        postal_address=ctx.shop.postal_address,
        first_name=shopper.first_name if shopper else None,
        orders_count=shopper.orders_count if shopper else 0,
        code=run_row.discount_code,
        percent=discount.get("percent"),
        expires_at=run_row.discount_expires_at,
        unsubscribe_url=unsubscribe_url,
        marketing=run_row.marketing,
    )
    context.setdefault("url", f"https://{ctx.shop.domain}/")
    try:
        return emails.render_email(template, context, locale, override)
    except emails.TemplateError as error:
        raise PermanentActionError(f"template {template}/{locale} does not render: {error}") from None
