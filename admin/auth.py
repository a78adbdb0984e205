"""Session tokens: every request from the embedded admin is verified by Shopify's `shopifyapp`
(`verify_app_home_req`: HS256 signed with our secret, current or previous, not expired, audience our API
key). The shop comes from the token's `dest`, never from a parameter; a request naming another shop is
refused. No cookie is relied on: inside the admin's iframe they are third-party.
"""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlparse

from flask import Response, current_app, g, jsonify, request
from shopify_app import verify_app_home_req

from plugin.shopify.tokens import app_config
from plugin.shopify.verify import sanitize_shop_domain
from plugin.store import shops
from plugin.web.install import request_input

PATCH_ID_TOKEN_PATH = "/app/patch-id-token"
NO_SHOP = "the session token names no *.myshopify.com shop"


def verify_app_home():
    """Verify the session token of this request; returns (result, shop domain or None)."""
    result = verify_app_home_req(request_input(), app_config(current_app.config), PATCH_ID_TOKEN_PATH)
    if not result.ok:
        return result, None
    dest = urlparse(result.id_token.claims.get("dest", "")).hostname or ""
    return result, sanitize_shop_domain(dest)


def refused(status: int, reason: str, headers: dict | None = None) -> Response:
    response = jsonify({"error": reason})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def authenticate() -> Response | None:
    """Check this data call's session token and set `g.shop_id` and `g.shop_domain`; the refusal (401,
    with a JSON reason) when the token is missing, invalid, foreign, or of a shop not installed."""
    if not request.headers.get("Authorization"):
        return refused(401, "missing session token (Authorization: Bearer …)")
    result, shop_domain = verify_app_home()
    if not result.ok:
        return refused(401, result.log.code, dict(result.response.headers))
    if shop_domain is None:
        return refused(401, NO_SHOP)
    named = request.args.get("shop")
    if named is not None and sanitize_shop_domain(named) != shop_domain:
        return refused(401, "the session token belongs to another shop")
    with current_app.extensions["lifecycle.db"].session() as session:
        shop = shops.get_shop(session, shop_domain)
        if shop is None or not shop.active:
            return refused(401, "the shop has not installed Lifecycle")
        g.shop_id, g.shop_domain = shop.id, shop.domain
    return None


def session_token_required(view):
    """For a data call outside the API blueprint (which authenticates every call before its view)."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        refusal = authenticate()
        return refusal if refusal is not None else view(*args, **kwargs)

    return wrapped


def keep_private(response):
    """Answers for one shop are never cached (and never sniffed into another type)."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
