"""Access tokens: token exchange, refresh and the authorization-code grant's exchange.

Embedded installs (Shopify managed installation): the App Home page's session token is exchanged for an
offline access token of the *expiring* kind (token exchange, through `shopifyapp`). The authorization-code
grant (`web/install.py`) is the fallback for installs outside the admin.

Tokens are stored encrypted (LIFECYCLE_SECRET_KEY). An access token lives an hour; `access_token()` refreshes
it a few minutes before it lapses, by the one clock, holding the shop's row lock so two workers never
refresh at once (a refresh token works once: the loser of a race would be locked out).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from shopify_app import refresh_access_token, token_exchange

from plugin import clock
from plugin.crypto import decrypt_token, encrypt_token
from plugin.store import shops
from plugin.store.db import Database
from plugin.store.models import Shop

# Least needed: profiles and consent (customers), history beyond 60 days (orders, all orders), back in
# stock (products, inventory), codes (discounts). Kept in step with shopify.app.toml (a test checks).
SCOPES = (
    "read_customers,write_customers,read_orders,read_all_orders,read_products,read_inventory,write_discounts"
)


REFRESH_MARGIN = timedelta(minutes=5)


class TokenError(Exception):
    """No usable token for the shop: it must open the app again (or reinstall)."""


# --- token exchange and refresh ---------------------------------------------------------------------------
def app_config(config) -> dict:
    return {
        "client_id": config["SHOPIFY_API_KEY"],
        "client_secret": str(config["SHOPIFY_API_SECRET"]),
        "old_client_secret": str(config["SHOPIFY_API_SECRET_PREVIOUS"] or "") or None,
    }


class _Reroute(httpx.BaseTransport):
    """Send `https://{shop}/…` to SHOPIFY_ADMIN_ORIGIN instead (the fake store in tests and the demo)."""

    def __init__(self, origin: str):
        self.origin = httpx.URL(origin)
        self.inner = httpx.HTTPTransport()

    def handle_request(self, req: httpx.Request) -> httpx.Response:
        req.url = req.url.copy_with(scheme=self.origin.scheme, host=self.origin.host, port=self.origin.port)
        req.headers["Host"] = req.url.netloc.decode()
        return self.inner.handle_request(req)


def http_client(config) -> httpx.Client:
    origin = config.get("SHOPIFY_ADMIN_ORIGIN")
    return httpx.Client(transport=_Reroute(origin), timeout=10) if origin else httpx.Client(timeout=10)


def exchange_session_token(db: Database, config, id_token, shop_domain: str) -> tuple[Shop, bool]:
    """Trade a verified App Home session token for an expiring offline token; returns (shop, new install)."""
    with http_client(config) as client:
        result = token_exchange(
            "offline", app_config(config), id_token=id_token, expiring=True, http_client=client
        )
    if not result.ok:
        raise TokenError(f"token exchange failed: {result.log.code}")
    token = result.access_token
    with db.session() as session:
        return store_tokens(
            session,
            shop_domain,
            token.token,
            _remaining(token.expires),
            token.refresh_token,
            _remaining(token.refresh_token_expires),
            token.scope,
            config,
        )


def store_tokens(session, domain, access, expires_in, refresh, refresh_expires_in, scope, config):
    """Install (or re-activate) the shop with fresh tokens, encrypted; returns (shop, newly installed)."""
    now = clock.now()
    existing = shops.get_shop(session, domain)
    newly = existing is None or not existing.active
    key = config["SECRET_KEY"]
    shop = shops.upsert_shop(session, domain, encrypt_token(access, key), now)
    shop.access_token_expires_at = now + expires_in if expires_in is not None else None
    shop.refresh_token_encrypted = encrypt_token(refresh, key) if refresh else None
    shop.refresh_token_expires_at = now + refresh_expires_in if refresh_expires_in is not None else None
    shop.scopes = scope
    if newly:
        shop.backfill = {"status": "pending"}
    return shop, newly


def access_token(db: Database, shop_id: int, config, loaded: Shop | None = None) -> str | None:
    """The shop's access token, refreshed first when it lapses within REFRESH_MARGIN (None: no token).

    `loaded` is the shop's row as the caller read it just now (detached is fine): when its token needs
    no refresh, it is decrypted from that row instead of reading the row again. A refresh always
    re-reads the row under its lock."""
    now = clock.now()
    if loaded is None:
        with db.read_session() as session:
            loaded = session.get(Shop, shop_id)
    if loaded is None or not loaded.access_token_encrypted:
        return None
    if not _needs_refresh(loaded, now):
        return decrypt_token(loaded.access_token_encrypted, config["SECRET_KEY"])
    with db.session() as session:
        shop = session.get(Shop, shop_id, with_for_update=True, populate_existing=True)
        if _needs_refresh(shop, now):  # still: nobody refreshed it while we waited for the lock
            _refresh(session, shop, now, config)
        return decrypt_token(shop.access_token_encrypted, config["SECRET_KEY"])


def refresh_due_tokens(db: Database, config) -> int:
    """Refresh every active shop's token that lapses soon (the tick runs this, so idle shops keep theirs)."""
    now = clock.now()
    with db.session() as session:
        ids = [s.id for s in session.query(Shop).filter(Shop.active.is_(True)) if _needs_refresh(s, now)]
    for shop_id in ids:
        access_token(db, shop_id, config)
    return len(ids)


def _needs_refresh(shop: Shop, now: datetime) -> bool:
    return bool(
        shop.refresh_token_encrypted
        and shop.access_token_expires_at
        and shop.access_token_expires_at - REFRESH_MARGIN <= now
    )


def _refresh(session, shop: Shop, now: datetime, config) -> None:
    if shop.refresh_token_expires_at and shop.refresh_token_expires_at <= now:
        raise TokenError(f"{shop.domain}: refresh token expired; the merchant must open the app again")
    key = config["SECRET_KEY"]
    current = {
        "shop": shop.domain.removesuffix(".myshopify.com"),
        "refresh_token": decrypt_token(shop.refresh_token_encrypted, key),
        "expires": "",  # the decision to refresh is ours (by the one clock); the library would re-check
        "refresh_token_expires": "",
        "access_mode": "offline",
    }
    with http_client(config) as client:
        result = refresh_access_token(current, app_config(config), http_client=client)
    if not result.ok or result.access_token is None:
        raise TokenError(f"{shop.domain}: token refresh failed: {result.log.code}")
    token = result.access_token
    shop.access_token_encrypted = encrypt_token(token.token, key)
    shop.access_token_expires_at = now + _remaining(token.expires)
    shop.refresh_token_encrypted = encrypt_token(token.refresh_token, key)
    shop.refresh_token_expires_at = now + _remaining(token.refresh_token_expires)


def _remaining(absolute: str | None) -> timedelta | None:
    """`shopifyapp` turns `expires_in` into a wall-clock instant; turn it back into a duration, so expiry
    is measured on the one clock like every other time rule."""
    if not absolute:
        return None
    instant = datetime.fromisoformat(absolute.replace("Z", "+00:00"))
    return max(timedelta(0), instant - datetime.now(UTC)) + timedelta(seconds=1)


def development_session_token(config, shop: str, hours: int = 24) -> str:
    """A session token as App Bridge would give the admin page (HS256 with the app secret), for opening the
    admin outside Shopify in development (`lifecycle demo` prints a URL with one). Never used to verify."""
    import time
    import uuid

    import jwt

    now = int(time.time())
    claims = {
        "iss": f"https://{shop}/admin",
        "dest": f"https://{shop}",
        "aud": config["SHOPIFY_API_KEY"],
        "sub": "1",
        "exp": now + hours * 3600,
        "nbf": now - 5,
        "iat": now - 5,
        "jti": str(uuid.uuid4()),
        "sid": "development",
    }
    return jwt.encode(claims, str(config["SHOPIFY_API_SECRET"]), algorithm="HS256")


# --- authorization-code grant (installs from outside the admin) ------------------------------------------
def admin_base(config, shop: str) -> str:
    return (config.get("SHOPIFY_ADMIN_ORIGIN") or f"https://{shop}").rstrip("/")
