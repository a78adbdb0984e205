"""Asking Shopify whether the app is still installed in a shop: the proof a destructive webhook needs.

Shopify's HMAC covers a webhook's body only, so a signed `app/uninstalled` or `shop/redact` proves that
Shopify sent that body once, not that the shop is uninstalled now (a replayed body, or a premature
request). Shopify revokes the app's tokens at uninstall: a token it refuses (the Admin API answers 401/403,
`ShopifyAuthError`; or a refresh answered `invalid_grant`) confirms the uninstall, and one it accepts
disproves it. Anything else (no token, network trouble) proves nothing either way.

The probe is one call of at most PROBE_TIMEOUT seconds, made once per uninstall or shop erasure, inside
the worker's transaction (whose shop row it may update when it has to refresh the token).
"""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum

import requests
from shopify_app import refresh_access_token

from plugin.crypto import TokenDecryptionError, decrypt_token, encrypt_token
from plugin.shopify import tokens
from plugin.shopify.client import ShopifyAuthError, ShopifyClient, ShopifyError, ShopifyTransientError
from plugin.store.models import Shop

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0


class Installation(StrEnum):
    REFUSED = "refused"  # Shopify refused the token: the app is uninstalled
    ACCEPTED = "accepted"  # Shopify accepted it: the app is installed
    UNKNOWN = "unknown"  # no token to ask with, or no clear answer


def probe_installation(shop: Shop, config, now: datetime) -> Installation:
    """Ask the Admin API with the shop's token (refreshed first when it has lapsed by the one clock)."""
    if not shop.access_token_encrypted:
        return Installation.UNKNOWN
    if shop.access_token_expires_at and shop.access_token_expires_at <= now:
        return _probe_by_refresh(shop, config, now)  # a lapsed token's 401 would prove nothing
    try:
        token = decrypt_token(shop.access_token_encrypted, config["SECRET_KEY"])
    except TokenDecryptionError:
        return Installation.UNKNOWN
    return _probe_with(shop.domain, token, config)


def _probe_with(domain: str, token: str, config) -> Installation:
    client = ShopifyClient(
        domain,
        token,
        config["SHOPIFY_API_VERSION"],
        origin=config.get("SHOPIFY_ADMIN_ORIGIN"),
        session=_QuickSession(),
        sleep=_no_retry,
    )
    try:
        client.execute("InstallationProbe")
    except ShopifyAuthError:
        return Installation.REFUSED
    except ShopifyError as error:
        log.warning("installation probe of %s inconclusive: %s", domain, type(error).__name__)
        return Installation.UNKNOWN
    return Installation.ACCEPTED


def _probe_by_refresh(shop: Shop, config, now: datetime) -> Installation:
    """Refresh the lapsed token: refused (`invalid_grant`) confirms the uninstall; granted, the new tokens
    are kept on the row (a refresh token works once) and asked with."""
    if not shop.refresh_token_encrypted or (
        shop.refresh_token_expires_at and shop.refresh_token_expires_at <= now
    ):
        return Installation.UNKNOWN  # an expired refresh token is refused whether installed or not
    key = config["SECRET_KEY"]
    try:
        current = {
            "shop": shop.domain.removesuffix(".myshopify.com"),
            "refresh_token": decrypt_token(shop.refresh_token_encrypted, key),
            "expires": "",
            "refresh_token_expires": "",
            "access_mode": "offline",
        }
    except TokenDecryptionError:
        return Installation.UNKNOWN
    with tokens.http_client(config) as http:
        result = refresh_access_token(current, tokens.app_config(config), http_client=http)
    if result.ok and result.access_token is not None:
        token = result.access_token
        shop.access_token_encrypted = encrypt_token(token.token, key)
        shop.access_token_expires_at = _after(now, token.expires)
        shop.refresh_token_encrypted = encrypt_token(token.refresh_token, key)
        shop.refresh_token_expires_at = _after(now, token.refresh_token_expires)
        return _probe_with(shop.domain, token.token, config)
    return Installation.REFUSED if result.log.code == "invalid_grant" else Installation.UNKNOWN


def _after(now: datetime, absolute: str | None) -> datetime | None:
    remaining = tokens._remaining(absolute)  # the one clock, as tokens' own refresh measures it
    return now + remaining if remaining is not None else None


class _QuickSession(requests.Session):
    """One short call: the probe runs inside a worker's transaction."""

    def request(self, method, url, **kwargs):
        kwargs["timeout"] = PROBE_TIMEOUT
        return super().request(method, url, **kwargs)


def _no_retry(_seconds: float) -> None:
    raise ShopifyTransientError("not retried: the probe asks once")
