"""The shop's own addresses and whether it is a development store, as Shopify knows them.

What the merchant types into Settings is not proof of anything; the Admin API's `shop.email` (the owner's)
and `shop.contactEmail` (the customer-facing one) are addresses Shopify verified for this shop. Test sends
go only to these, and a development store's real sends too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from plugin.shopify.client import ShopifyClient


@dataclass(frozen=True)
class ShopContact:
    """The shop's verified addresses (lower-cased, no blanks) and whether it is a development store."""

    addresses: tuple[str, ...]
    development: bool

    def allows(self, address: str) -> bool:
        """Whether `address` is one of the shop's own."""
        return address.strip().lower() in self.addresses


def fetch_shop_contact(client: ShopifyClient) -> ShopContact:
    """Ask the Admin API (one query of cost 1); raises the client's error classes when it cannot."""
    shop = client.execute("ShopContact")["shop"]
    found = (shop.get("contactEmail"), shop.get("email"))
    addresses = tuple(dict.fromkeys(a.strip().lower() for a in found if a and a.strip()))
    return ShopContact(addresses, bool((shop.get("plan") or {}).get("partnerDevelopment")))


CACHE_SECONDS = 600  # how long a shop's addresses and plan, read from the Admin API, are reused


def cached_shop_contact(connection: redis.Redis, shop_id: int, client: ShopifyClient) -> ShopContact:
    """The shop's contact, cached in Redis for a few minutes (a query per shop, not per email or test send);
    raises the client's error classes when Shopify cannot say."""
    key = f"lifecycle:shop-contact:{shop_id}"
    cached = connection.get(key)
    if cached is not None:
        stored = json.loads(cached)
        return ShopContact(tuple(stored["addresses"]), stored["development"])
    contact = fetch_shop_contact(client)
    payload = {"addresses": list(contact.addresses), "development": contact.development}
    connection.set(key, json.dumps(payload), ex=CACHE_SECONDS)
    return contact
