"""The storefront's back-in-stock form through the app proxy: signed as Shopify signs, validated,
rate-limited, stored once; unsigned, stale or tampered requests refused."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from plugin.store.models import StockSubscription
from plugin.web.storefront import PER_IP
from tests.conftest import SECRET, SHOP


def proxy_url(secret=SECRET, shop=SHOP, timestamp=None, customer="", **extra) -> str:
    """Shopify's app-proxy query: sorted `k=v` joined without separators, hex HMAC-SHA256 as `signature`."""
    params = {
        "shop": shop,
        "logged_in_customer_id": customer,
        "path_prefix": "/apps/lifecycle",
        "timestamp": str(int(timestamp or time.time())),
        **extra,
    }
    message = "".join(f"{k}={v}" for k, v in sorted(params.items()))
    params["signature"] = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return "/proxy/back-in-stock?" + urlencode(params)


def subscribe(client, form, ip="203.0.113.7", **kw):
    return client.post(proxy_url(**kw), json=form, headers={"X-Forwarded-For": f"{ip}, 10.0.0.1"})


def subscriptions(db) -> list[tuple[int, str, int | None]]:
    with db.session() as session:
        rows = session.scalars(select(StockSubscription).order_by(StockSubscription.id))
        return [(s.variant_id, s.email, s.customer_id) for s in rows]


def test_a_signed_request_subscribes_once(client, db, shop):
    first = subscribe(client, {"email": "Zoe@Example.com", "variant_id": "8001"}, customer="77")
    assert first.status_code == 201 and first.json["status"] == "subscribed"
    again = subscribe(client, {"email": "zoe@example.com", "variant_id": 8001})
    assert again.status_code == 200 and again.json["message"] == "You're already on the list for this item."
    assert subscriptions(db) == [(8001, "zoe@example.com", 77)]


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"secret": "forged"}, "wrong secret"),
        ({"timestamp": time.time() - 3600}, "an hour old: a replay"),
    ],
)
def test_unsigned_or_stale_requests_are_refused(client, db, shop, kw, why):
    assert subscribe(client, {"email": "a@example.com", "variant_id": 1}, **kw).status_code == 401, why
    assert subscriptions(db) == []


def test_a_tampered_query_is_refused(client, db, shop):
    url = proxy_url().replace(f"shop={SHOP}", "shop=other-store.myshopify.com")
    assert client.post(url, json={"email": "a@example.com", "variant_id": 1}).status_code == 401
    assert (
        client.post("/proxy/back-in-stock", json={"email": "a@example.com", "variant_id": 1}).status_code
        == 401
    )


def test_bad_input_gets_field_errors(client, db, shop):
    answer = subscribe(client, {"email": "not-an-address", "variant_id": -3})
    assert answer.status_code == 422
    assert set(answer.json["errors"]) == {"email", "variant_id"}
    assert subscriptions(db) == []


def test_flooding_the_form_is_rate_limited_per_ip(client, db, shop):
    limit = PER_IP[0]
    codes = [
        subscribe(client, {"email": f"f{n}@example.com", "variant_id": 5}).status_code
        for n in range(limit + 2)
    ]
    assert codes[:limit] == [201] * limit and codes[limit:] == [429, 429]
    # another shopper of the same shop is not held back by the flood
    assert (
        subscribe(client, {"email": "calm@example.com", "variant_id": 5}, ip="198.51.100.2").status_code
        == 201
    )
    assert len(subscriptions(db)) == limit + 1


def test_unknown_shop_is_not_served(client, db):
    answer = subscribe(client, {"email": "a@example.com", "variant_id": 1}, shop="nobody.myshopify.com")
    assert answer.status_code == 404


@pytest.mark.parametrize("signature", ["é" * 64, "zz", "", "0" * 63, "%00", "\u202e" + "a" * 63])
def test_a_malformed_signature_is_refused_not_a_crash(client, db, shop, signature):
    url = proxy_url().rsplit("&signature=", 1)[0] + "&" + urlencode({"signature": signature})
    response = client.post(url, json={"email": "zoe@example.com", "variant_id": 8001})
    assert response.status_code == 401
    assert subscriptions(db) == []


def test_a_logged_in_customer_id_of_odd_digits_is_not_a_crash(client, db, shop):
    response = subscribe(client, {"email": "zoe@example.com", "variant_id": 8001}, customer="²" + "9" * 40)
    assert response.status_code in (200, 201)
    assert subscriptions(db) == [(8001, "zoe@example.com", None)]
