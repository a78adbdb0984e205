"""The storefront's back-in-stock form, reached through Shopify's app proxy, and the one-click link that
stops an alert.

The theme block (`extensions/back-in-stock`) posts to `/apps/lifecycle/back-in-stock` on the shop's own
domain; Shopify forwards it here with a signed query (`verify_app_proxy_req`: HMAC of the sorted
parameters, timestamp within 90 s). The address is validated, requests are rate-limited per shop and per
shopper IP (Redis fixed windows), and the subscription is stored once per variant and address. Answers are
JSON the block shows as they are.
"""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, current_app, jsonify, request
from markupsafe import escape
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate
from shopify_app import verify_app_proxy_req
from sqlalchemy import delete

from plugin import clock, links
from plugin.shopify.tokens import app_config
from plugin.shopify.verify import sanitize_shop_domain
from plugin.store import shops
from plugin.store.models import StockSubscription
from plugin.web.install import request_input

log = logging.getLogger(__name__)


bp = Blueprint("storefront", __name__)


# (limit, window seconds): a shopper's IP may ask 5 times a minute; a whole shop 300 times a minute.
PER_IP, PER_SHOP = (5, 60), (300, 60)


MESSAGES = {
    "subscribed": "Thanks! We'll email you as soon as it's back in stock.",
    "already": "You're already on the list for this item.",
}


class SubscribeSchema(Schema):
    """The block's form."""

    class Meta:
        unknown = EXCLUDE

    email = fields.Email(required=True, validate=validate.Length(max=320))
    variant_id = fields.Integer(required=True, strict=False, validate=validate.Range(min=1, max=2**63 - 1))
    locale = fields.String(load_default=None, validate=validate.Length(max=16))


@bp.post("/proxy/back-in-stock")
def subscribe():
    if (
        not _signature_is_hex()
        or not verify_app_proxy_req(request_input(), app_config(current_app.config)).ok
    ):
        return jsonify({"ok": False, "error": "this request is not signed by Shopify"}), 401
    shop_domain = sanitize_shop_domain(request.args.get("shop"))
    if shop_domain is None:
        return jsonify({"ok": False, "error": "unknown shop"}), 401
    limited = _rate_limited(shop_domain, _shopper_ip())
    if limited:
        return (
            jsonify({"ok": False, "error": "Too many requests. Please try again in a minute."}),
            429,
            {"Retry-After": str(limited)},
        )
    try:
        form = SubscribeSchema().load(_submitted())
    except ValidationError as error:
        return jsonify({"ok": False, "errors": error.messages}), 422
    customer = request.args.get("logged_in_customer_id") or None
    db = current_app.extensions["lifecycle.db"]
    with db.session() as session:
        shop = shops.get_shop(session, shop_domain)
        if shop is None or not shop.active:
            return jsonify({"ok": False, "error": "this shop does not use Lifecycle"}), 404
        inserted = session.execute(
            db.insert(StockSubscription)
            .values(
                shop_id=shop.id,
                variant_id=form["variant_id"],
                email=form["email"].strip().lower(),
                customer_id=_customer_id(customer),
                locale=form["locale"],
                created_at=clock.now(),
            )
            .on_conflict_do_nothing(index_elements=["shop_id", "variant_id", "email"])
            .returning(StockSubscription.id)
        ).scalar()
    state = "subscribed" if inserted is not None else "already"
    return jsonify(
        {"ok": True, "status": state, "message": MESSAGES[state]}
    ), 201 if inserted is not None else 200


def _submitted():
    """The block's JSON, else its form fields (a body nested too deep to parse counts as no JSON)."""
    try:
        document = request.get_json(silent=True)
    except RecursionError:
        document = None
    return document or request.form.to_dict()


def _signature_is_hex() -> bool:
    """Shopify's proxy signature is one hex digest: anything else (non-ASCII, repeated) is refused before
    `shopifyapp` compares it (its compare raises TypeError on non-ASCII text)."""
    values = request.args.getlist("signature")
    return len(values) == 1 and len(values[0]) == 64 and all(c in "0123456789abcdef" for c in values[0])


def _customer_id(value: str | None) -> int | None:
    """The logged-in customer's id as Shopify's proxy passes it (ASCII digits of a 64-bit id), else None."""
    if not value or not value.isascii() or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def _shopper_ip() -> str:
    """Shopify's proxy forwards the shopper's address in X-Forwarded-For (first entry)."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    return forwarded.split(",")[0].strip() or request.remote_addr or "unknown"


def _rate_limited(shop_domain: str, ip: str) -> int:
    """Seconds to wait when a window is full, else 0. Redis down: refuse politely rather than flood."""
    connection = current_app.extensions["lifecycle.redis"]
    try:
        for key, (limit, window) in ((f"shop:{shop_domain}", PER_SHOP), (f"ip:{shop_domain}:{ip}", PER_IP)):
            name = f"lifecycle:proxy:{key}"
            count = connection.incr(name)
            if count == 1:
                connection.expire(name, window)
            if count > limit:
                return max(1, connection.ttl(name))
    except redis.RedisError:
        log.warning("rate limiter unavailable; refusing proxy request")
        return 30
    return 0


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Back-in-stock alert</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 480px; margin: 48px auto; padding: 0 16px;">
<p>{text}</p>{form}</body></html>"""


@bp.get("/alerts/<token>")
def alert_page(token: str):
    if links.read_alert_token(token) is None:
        return PAGE.format(text="This link is not valid.", form=""), 404
    form = '<form method="post"><button type="submit">Stop this alert</button></form>'
    return PAGE.format(text="Stop emails about this item coming back in stock?", form=form)


@bp.post("/alerts/<token>")
def alert_stop(token: str):
    """One click (or a mail client's RFC 8058 POST): the subscription is deleted."""
    subscription_id = links.read_alert_token(token)
    if subscription_id is None:
        return PAGE.format(text="This link is not valid.", form=""), 404
    with current_app.extensions["lifecycle.db"].session() as session:
        session.execute(delete(StockSubscription).where(StockSubscription.id == subscription_id))
    return PAGE.format(text=escape("Done: you won't hear about this item again."), form="")
