"""The embedded admin (App Home): the page Shopify loads in its iframe, and the JSON it calls.

Opening the page is also how a store installs Lifecycle: Shopify's managed installation sends the
merchant here with a session token, which `plugin.shopify.tokens` exchanges for an offline access token
before the first paint; the backfill of the store's history starts then. The JSON is `admin.api`.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, render_template, request
from shopify_app import app_home_patch_id_token

from admin import i18n
from admin.auth import NO_SHOP, keep_private, refused, session_token_required, verify_app_home
from plugin import clock, emails
from plugin.core import rules
from plugin.pipeline import queue
from plugin.shopify import tokens
from plugin.shopify.tokens import app_config
from plugin.store import status
from plugin.web.install import request_input

bp = Blueprint("admin", __name__, url_prefix="/app", template_folder="templates", static_folder="static")


@bp.get("/")
def home():
    """The App Home document: verify, install on first visit, render with Shopify's frame headers."""
    result, shop_domain = verify_app_home()
    if not result.ok:
        return Response(result.response.body, result.response.status, dict(result.response.headers))
    if shop_domain is None:
        return refused(401, NO_SHOP)
    db = current_app.extensions["lifecycle.db"]
    if not status.has_live_token(db, shop_domain):
        try:
            shop, newly = tokens.exchange_session_token(db, current_app.config, result.id_token, shop_domain)
        except tokens.TokenError as error:
            return refused(502, str(error))
        if newly:
            queue.enqueue_backfill(current_app.extensions["lifecycle.redis"], shop.id)
    locale = i18n.pick(request.args.get("locale"))
    boot = {
        "shop": shop_domain,
        "locale": locale,
        "strings": i18n.strings(locale),
        "triggers": list(rules.TRIGGERS),
        "condition_fields": list(rules.CONDITION_FIELDS),
        "operators": list(rules.OPERATORS),
        "locales": list(emails.LOCALES),
        "language_names": {lang: i18n.language_name(lang) for lang in emails.LOCALES},
        "today": clock.now().date().isoformat(),  # the one clock's day (backtest dates), not the browser's
    }
    page = render_template(
        "admin/home.html",
        api_key=current_app.config["SHOPIFY_API_KEY"],
        shop=shop_domain,
        locale=locale,
        boot=boot,
    )
    response = Response(page, 200, content_type="text/html; charset=utf-8")
    response.headers.update(dict(result.response.headers))  # CSP frame-ancestors, App Bridge preload
    return response


@bp.get("/patch-id-token")
def patch_id_token():
    """Shopify's bounce page that fetches a fresh session token with App Bridge, then reloads."""
    result = app_home_patch_id_token(request_input(), app_config(current_app.config))
    return Response(result.response.body, result.response.status, dict(result.response.headers))


@bp.get("/api/status")
@session_token_required
def api_status():
    """Install, backfill and data freshness of the token's shop."""
    return jsonify(status.shop_status(current_app.extensions["lifecycle.db"], g.shop_domain))


@bp.after_request
def frame_headers(response: Response) -> Response:
    """Embedded responses may only be framed by the shop's admin (and never cached across shops)."""
    keep_private(response)
    if request.endpoint == "admin.home" and "Content-Security-Policy" not in response.headers:
        response.headers["Content-Security-Policy"] = "frame-ancestors https://admin.shopify.com;"
    return response
