"""The Rules page's email editor: the merchant's own wording per play and language (checked in the
sandbox before it is saved), the email as the real renderer makes it, and a test send."""

from __future__ import annotations

import secrets
from types import SimpleNamespace

from flask import abort, current_app, g, jsonify
from marshmallow import EXCLUDE, Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin.api.base import bp, db, load_or_422, refuse
from admin.auth import refused
from plugin import clock, emails
from plugin.core.rules import TEMPLATES
from plugin.pipeline.run_action import shop_client
from plugin.shopify.client import ShopifyError
from plugin.shopify.shop_contact import ShopContact, cached_shop_contact
from plugin.store.models import EmailTemplate, Shop

SAMPLE = {
    "first_name": "Ann",
    "orders_count": 1,
    "total": "49.90",
    "currency": "EUR",
    "order_name": "#1001",
    "product_title": "Linen shirt",
    "code": "LC-SAMPLE-CODE",
    "url": "https://example.myshopify.com/",
}


class TemplateSchema(Schema):
    """A merchant's version of one play's email in one locale (Jinja2, rendered in the sandbox)."""

    class Meta:
        unknown = EXCLUDE

    subject = fields.String(required=True, validate=validate.Length(min=1, max=500))
    html = fields.String(required=True, validate=validate.Length(min=1, max=100_000))
    text = fields.String(required=True, validate=validate.Length(min=1, max=50_000))


class PreviewSchema(Schema):
    """A play's email to show or send: the saved wording, or the wording being edited when given."""

    class Meta:
        unknown = EXCLUDE

    template = fields.String(required=True, validate=validate.OneOf(TEMPLATES))
    locale = fields.String(load_default="en", validate=validate.OneOf(emails.LOCALES))
    subject = fields.String(load_default=None)
    html = fields.String(load_default=None)
    text = fields.String(load_default=None)
    to = fields.Email(load_default=None)
    percent = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=90))


@bp.get("/templates/<template>/<locale>")
def get_template(template: str, locale: str):
    """The shop's version, or our default layout to start from (its variables: subject, body, cta, …)."""
    _known(template, locale)
    with db().session() as session:
        row = _saved(session, g.shop_id, template, locale)
        if row is not None:
            return jsonify({"subject": row.subject, "html": row.html, "text": row.text, "custom": True})
    return jsonify(
        {
            "subject": "{{ subject }}",
            "html": emails.default_template("message.html"),
            "text": emails.default_template("message.txt"),
            "custom": False,
        }
    )


@bp.put("/templates/<template>/<locale>")
def save_template(template: str, locale: str):
    _known(template, locale)
    form = load_or_422(TemplateSchema())
    errors = {}
    for name in ("subject", "html", "text"):
        try:
            emails.check_template(form[name])
        except emails.TemplateError as error:
            errors[name] = [str(error)]
    if errors:
        refuse(errors)
    with db().session() as session:
        row = _saved(session, g.shop_id, template, locale)
        if row is None:
            row = EmailTemplate(shop_id=g.shop_id, template=template, locale=locale)
            session.add(row)
        row.subject, row.html, row.text = form["subject"], form["html"], form["text"]
    return jsonify(dict(form, custom=True))


@bp.delete("/templates/<template>/<locale>")
def reset_template(template: str, locale: str):
    with db().session() as session:
        row = _saved(session, g.shop_id, template, locale)
        if row is not None:
            session.delete(row)
    return jsonify({"custom": False})


@bp.post("/preview")
def preview():
    """The email as the real renderer (sandboxed) makes it, for the locale and the edited template."""
    form = load_or_422(PreviewSchema())
    rendered = _render(form, _shop())
    return jsonify({"subject": rendered.subject, "html": rendered.html, "text": rendered.text})


TEST_SENDS_PER_HOUR = 10  # per shop: a preview for the merchant, not a way to mail the world


@bp.post("/test-send")
def test_send():
    """Send the preview to one of the shop's own addresses (its contact address unless `to` names the
    other), as Shopify knows them: the Settings sender address is not proof that the merchant owns it."""
    form = load_or_422(PreviewSchema())
    shop = _shop()
    contact = _shop_contact(shop)
    to = (form.get("to") or (contact.addresses or ("",))[0]).strip().lower()
    if not contact.allows(to):
        shown = " or ".join(contact.addresses) or "none known"
        refuse({"to": [f"Test emails go only to the shop's own addresses in Shopify ({shown})."]})
    if _over_hourly_limit(shop.id):
        return jsonify({"error": f"at most {TEST_SENDS_PER_HOUR} test emails an hour; try again later"}), 429
    rendered = _render(form, shop)
    sender = emails.shop_sender(shop, current_app.config["MAIL_FROM"])  # as the shop's real emails go
    message_id = f"<test-{secrets.token_hex(6)}.{shop.id}@lifecycle>"
    message = emails.build_message(
        rendered, sender, to, message_id, None, clock.now(), reply_to=shop.sender_email
    )
    message.replace_header("Subject", "[Test] " + rendered.subject)
    config = current_app.config
    try:
        emails.send_email(message, config.get("SMTP_URL"), config["OUTBOX"])
    except emails.EmailDeliveryError as error:
        return jsonify({"error": f"the mail server refused: {error}"}), 502
    return jsonify({"sent_to": to})


def _shop_contact(shop: Shop) -> ShopContact:
    """The shop's own addresses from the Admin API; the request ends (502) when Shopify cannot say."""
    try:
        client = shop_client(db(), shop.id, shop.domain)
        if client is None:
            raise ShopifyError("the shop has no access token")
        return cached_shop_contact(current_app.extensions["lifecycle.redis"], shop.id, client)
    except ShopifyError as error:
        abort(refused(502, f"could not read the shop's addresses from Shopify: {error}"))


def _over_hourly_limit(shop_id: int) -> bool:
    """Count this test send against the shop's hour (a fixed window in Redis); True past the limit."""
    connection = current_app.extensions["lifecycle.redis"]
    key = f"lifecycle:test-sends:{shop_id}:{int(clock.now().timestamp()) // 3600}"
    count = connection.incr(key)
    if count == 1:
        connection.expire(key, 3600)
    return count > TEST_SENDS_PER_HOUR


def _known(template: str, locale: str) -> None:
    if template not in TEMPLATES or locale not in emails.LOCALES:
        abort(refused(404, "unknown template or locale"))


def _saved(session: Session, shop_id: int, template: str, locale: str) -> EmailTemplate | None:
    """The shop's own wording of one play's email in one locale, if it wrote one."""
    match = (EmailTemplate.shop_id == shop_id, EmailTemplate.template == template)
    return session.scalar(select(EmailTemplate).where(*match, EmailTemplate.locale == locale))


def _shop() -> Shop:
    with db().session() as session:
        return session.get(Shop, g.shop_id)


def _render(form: dict, shop: Shop) -> emails.RenderedEmail:
    """The form's email with sample values, from the wording being edited, else the shop's saved one.
    Wording the sandbox refuses ends the request (422, on the html field)."""
    if form.get("subject") or form.get("html") or form.get("text"):
        override = SimpleNamespace(
            subject=form["subject"] or "", html=form["html"] or "", text=form["text"] or ""
        )
    else:
        with db().session() as session:
            override = _saved(session, shop.id, form["template"], form["locale"])
    percent = form.get("percent")
    context = dict(
        SAMPLE,
        percent=percent,
        code=SAMPLE["code"] if percent else None,
        shop_name=emails.shop_name(shop.domain),
        marketing=True,
        expires_at=clock.now(),
        unsubscribe_url="https://example.invalid/unsubscribe",
    )
    try:
        return emails.render_email(form["template"], context, form["locale"], override)
    except emails.TemplateError as error:
        refuse({"html": [str(error)]})
