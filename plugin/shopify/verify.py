"""Webhook verification: HMAC-SHA256 over the raw body, with the standard library only.

Shopify signs the exact bytes it sends: `X-Shopify-Hmac-Sha256` is the base64 of the HMAC-SHA256 digest
keyed with the app's secret (shopify.dev, "Verify webhooks"). We check those bytes as they are, before
anything else reads them: nothing is decoded or parsed here, so a deeply nested or non-UTF-8 body costs
one hash and never a crash. `shopifyapp`'s own webhook verifier decodes and re-encodes the body as JSON
first (a cost on the hot path, and a RecursionError on a deeply nested body); we keep `shopifyapp` for
session tokens, app-proxy signatures and token exchange.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence

from werkzeug.datastructures import Headers

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


def decode_signature(value: str | None) -> bytes | None:
    """The 32 digest bytes a base64 signature header carries, or None when it is not one (non-ASCII,
    not base64, or the wrong length)."""
    if not value or not value.isascii():
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest if len(digest) == hashlib.sha256().digest_size else None


def signed_with(body: bytes, digest: bytes, secrets: Sequence[bytes]) -> bool:
    """True when `digest` is the HMAC-SHA256 of `body` under one of `secrets` (every secret is tried,
    each compare in constant time, so the answer's timing says nothing about which one matched)."""
    valid = False
    for secret in secrets:
        valid |= hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).digest(), digest)
    return valid


class WebhookVerifier:
    """Verifies webhooks against the app's current and previous secrets (during a rotation)."""

    def __init__(self, secrets: Sequence[str]):
        if not secrets:
            raise ValueError("at least one webhook secret is required")
        self.secrets = tuple(str(s).encode() for s in secrets)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> WebhookHeaders:
        """Check the signature over the raw bytes, then read the identifying headers. Raises on either."""
        headers = _lowered(headers)
        digest = decode_signature(_header(headers, "X-Shopify-Hmac-Sha256"))
        if digest is None:
            raise WebhookVerificationError("missing or malformed X-Shopify-Hmac-Sha256")
        if not signed_with(body, digest, self.secrets):
            raise WebhookVerificationError("invalid_hmac")
        return read_headers(headers)


def oauth_hmac(params: Mapping[str, str], secret: str) -> str:
    """Shopify's signature of an OAuth redirect: hex HMAC-SHA256 of the sorted `k=v&…` query, less `hmac`."""
    message = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in ("hmac", "signature"))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def read_headers(headers: Mapping[str, str]) -> WebhookHeaders:
    """Read topic, shop, webhook id and the optional event metadata of a verified webhook."""
    headers = _lowered(headers)
    topic = _printable(_header(headers, "X-Shopify-Topic"), 128)
    shop_domain = sanitize_shop_domain(_header(headers, "X-Shopify-Shop-Domain"))
    webhook_id = _printable(_header(headers, "X-Shopify-Webhook-Id"), 255)
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
    return WebhookHeaders(
        webhook_id=webhook_id,
        topic=topic,
        shop_domain=shop_domain,
        api_version=_printable(_header(headers, "X-Shopify-API-Version"), 32),
        event_id=_printable(_header(headers, "X-Shopify-Event-Id"), 255),
        triggered_at=_instant(_header(headers, "X-Shopify-Triggered-At")),
    )


def _printable(value: str | None, limit: int) -> str | None:
    """The header as stored: printable ASCII within the column's length, else None (Shopify sends
    topics, ids and versions in ASCII; a NUL or a surrogate would only make the insert fail)."""
    if not value or len(value) > limit or not value.isascii() or not value.isprintable():
        return None
    return value


def _instant(value: str | None):
    """X-Shopify-Triggered-At, when it is a usable timestamp: informative only, never a reason to refuse
    a signed delivery."""
    try:
        return parse_instant(value) if value and value.isascii() else None
    except (ClockError, OverflowError):  # OverflowError: year 1 with a positive offset, and the like
        return None


class _Lowered(dict):
    """Headers keyed by their lower-cased names (HTTP header names are case-insensitive)."""


def _lowered(headers: Mapping[str, str]) -> Mapping[str, str]:
    """Headers whose lookups ignore case: a request's own (Werkzeug's `Headers` already do, and its
    `EnvironHeaders` look each name up in the WSGI environ at once), or one pass over any other mapping,
    so each lookup after it is a dict lookup (the first occurrence of a repeated header wins)."""
    if isinstance(headers, _Lowered | Headers):
        return headers
    lowered = _Lowered()
    for key, value in headers.items():
        lowered.setdefault(key.lower(), value)
    return lowered


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return headers.get(name.lower())
