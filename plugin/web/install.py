"""Installs from outside the admin: the authorization-code grant (`/auth/install` → Shopify →
`/auth/callback`), `state` single-use, the callback's HMAC checked.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from urllib.parse import urlencode

import requests
from flask import Blueprint, abort, current_app, redirect, request

from plugin.pipeline import queue
from plugin.shopify.tokens import SCOPES, admin_base, store_tokens
from plugin.shopify.verify import oauth_hmac, sanitize_shop_domain

STATE_KEY = "lifecycle:oauth-state:{state}"


STATE_TTL = 600


bp = Blueprint("oauth", __name__)


def request_input() -> dict:
    """The current request as `shopifyapp`'s verifiers read it, without its body.

    None of them checks the body (a session token travels in a header or the query, an app-proxy
    signature covers the query), but each decodes it as JSON to log it: a deeply nested body or a number
    of 5,000 digits then raised (RecursionError, ValueError), a 500 before any signature was checked.
    """
    return {"method": request.method, "headers": dict(request.headers), "url": request.url, "body": ""}


@bp.get("/auth/install")
def install():
    config = current_app.config
    shop = sanitize_shop_domain(request.args.get("shop"))
    if shop is None:
        abort(400, "shop must be a NAME.myshopify.com domain")
    state = secrets.token_urlsafe(24)
    current_app.extensions["lifecycle.redis"].set(STATE_KEY.format(state=state), shop, ex=STATE_TTL)
    query = urlencode(
        {
            "client_id": config["SHOPIFY_API_KEY"],
            "scope": SCOPES,
            "redirect_uri": config["APP_URL"].rstrip("/") + "/auth/callback",
            "state": state,
        }
    )
    return redirect(f"{admin_base(config, shop)}/admin/oauth/authorize?{query}")


@bp.get("/auth/callback")
def callback():
    config = current_app.config
    params = request.args.to_dict()
    shop = sanitize_shop_domain(params.get("shop"))
    if shop is None:
        abort(400, "shop must be a NAME.myshopify.com domain")
    if not _signed(params, config["WEBHOOK_SECRETS"]):
        abort(401, "the callback is not signed by Shopify")
    stored = current_app.extensions["lifecycle.redis"].getdel(STATE_KEY.format(state=params.get("state", "")))
    if stored is None or stored.decode() != shop:
        abort(403, "unknown or used state: start the install again")
    answer = requests.post(
        f"{admin_base(config, shop)}/admin/oauth/access_token",
        json={
            "client_id": config["SHOPIFY_API_KEY"],
            "client_secret": str(config["SHOPIFY_API_SECRET"]),
            "code": params.get("code", ""),
            "expiring": 1,
        },
        timeout=10,
    )
    if answer.status_code != 200:
        abort(502, "Shopify refused the authorization code")
    body = answer.json()
    db = current_app.extensions["lifecycle.db"]
    with db.session() as session:
        shop_row, newly = store_tokens(
            session,
            shop,
            body["access_token"],
            _seconds(body.get("expires_in")),
            body.get("refresh_token"),
            _seconds(body.get("refresh_token_expires_in")),
            body.get("scope"),
            config,
        )
        shop_id = shop_row.id
    if newly:
        queue.enqueue_backfill(current_app.extensions["lifecycle.redis"], shop_id)
    return redirect(f"https://{shop}/admin/apps/{config['SHOPIFY_API_KEY']}")


def _seconds(value) -> timedelta | None:
    return timedelta(seconds=int(value)) if value is not None else None


def _signed(params: dict, secrets_: tuple) -> bool:
    received = request.args.getlist("hmac")
    if len(received) != 1 or not received[0].isascii():
        return False  # compare_digest raises TypeError on non-ASCII text: refuse it first
    expected = received[0].encode()
    return any(hmac.compare_digest(oauth_hmac(params, str(secret)).encode(), expected) for secret in secrets_)
