"""Webhook verification: HMAC-SHA256 of the raw body, checked by Shopify's `shopifyapp` package.

`shopifyapp` compares in constant time and tries the previous secret during a rotation. It takes the body
as text, so a body that is not UTF-8 (which Shopify never sends, but a signed one must still be accepted
and quarantined, not dropped) is checked over its raw bytes here with the same constant-time comparison.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence

from shopify_app import ShopifyApp

from plugin.clock import ClockError, parse_instant
from plugin.store.deliveries import WebhookHeaders

SHOP_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")


class WebhookVerificationError(Exception):
    """The request is not a webhook signed by Shopify with our secret: answer 401."""


class WebhookHeaderError(Exception):
    """A correctly signed webhook lacks a header we need: answer 400 (Shopify retries, we log why)."""


def sanitize_shop_domain(value: str | None) -> str | None:
    """Return the lower-cased `*.myshopify.com` domain, or None when `value` is not one."""
    domain = (value or "").strip().lower()
    return domain if SHOP_DOMAIN.match(domain) else None


class WebhookVerifier:
    """Verifies webhooks for one app (its API key and current + previous secrets)."""

    def __init__(self, api_key: str, secrets: Sequence[str]):
        if not secrets:
            raise ValueError("at least one webhook secret is required")
        self.secrets = tuple(str(s) for s in secrets)
        previous = self.secrets[1] if len(self.secrets) > 1 else None
        self.app = ShopifyApp(client_id=api_key, client_secret=self.secrets[0], old_client_secret=previous)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> WebhookHeaders:
        """Check the signature, then read the identifying headers. Raises on either failure."""
        header_map = {k: v for k, v in headers.items()}
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            self._verify_raw(body, header_map)
        else:
            result = self.app.verify_webhook_req(
                {"method": "POST", "headers": header_map, "url": "/webhooks", "body": text}
            )
            if not result.ok:
                raise WebhookVerificationError(result.log.code)
        return read_headers(header_map)

    def _verify_raw(self, body: bytes, headers: Mapping[str, str]) -> None:
        received = _header(headers, "X-Shopify-Hmac-Sha256") or ""
        valid = False
        for secret in self.secrets:
            digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
            valid |= hmac.compare_digest(received.encode(), base64.b64encode(digest))
        if not valid:
            raise WebhookVerificationError("invalid_hmac")


def oauth_hmac(params: Mapping[str, str], secret: str) -> str:
    """Shopify's signature of an OAuth redirect: hex HMAC-SHA256 of the sorted `k=v&…` query, less `hmac`."""
    message = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in ("hmac", "signature"))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def read_headers(headers: Mapping[str, str]) -> WebhookHeaders:
    """Read topic, shop, webhook id and the optional event metadata of a verified webhook."""
    topic = _header(headers, "X-Shopify-Topic")
    shop_domain = sanitize_shop_domain(_header(headers, "X-Shopify-Shop-Domain"))
    webhook_id = _header(headers, "X-Shopify-Webhook-Id")
    missing = [
        name
        for name, value in (
            ("X-Shopify-Topic", topic),
            ("X-Shopify-Shop-Domain (a *.myshopify.com domain)", shop_domain),
            ("X-Shopify-Webhook-Id", webhook_id),
        )
        if not value
    ]
    if missing:
        raise WebhookHeaderError("missing or invalid " + ", ".join(missing))
    triggered = _header(headers, "X-Shopify-Triggered-At")
    try:
        triggered_at = parse_instant(triggered) if triggered else None
    except ClockError:
        triggered_at = None  # informative only; never a reason to refuse a signed delivery
    return WebhookHeaders(
        webhook_id=webhook_id[:255],
        topic=topic[:128],
        shop_domain=shop_domain,
        api_version=_header(headers, "X-Shopify-API-Version"),
        event_id=_header(headers, "X-Shopify-Event-Id"),
        triggered_at=triggered_at,
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None
