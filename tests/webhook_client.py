"""Post signed webhooks to the real endpoint, as Shopify does."""

from __future__ import annotations

import itertools

from plugin.demo.synthetic import encode, webhook_headers
from tests.conftest import SECRET, SHOP

_ids = itertools.count(1)


def post_webhook(
    client,
    topic: str,
    payload,
    *,
    shop: str = SHOP,
    webhook_id: str | None = None,
    secret: str = SECRET,
    body: bytes | None = None,
    **headers,
):
    """Sign the exact bytes sent (the payload's JSON unless `body` is given) and POST them to /webhooks."""
    raw = body if body is not None else encode(payload)
    webhook_id = webhook_id or f"wh-{next(_ids)}"
    return client.post(
        "/webhooks", data=raw, headers=webhook_headers(topic, shop, webhook_id, raw, secret, **headers)
    )
