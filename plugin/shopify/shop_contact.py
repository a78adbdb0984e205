"""The shop's own addresses and whether it is a development store, as Shopify knows them.

What the merchant types into Settings is not proof of anything; the Admin API's `shop.email` (the owner's)
and `shop.contactEmail` (the customer-facing one) are addresses Shopify verified for this shop. Test sends
go only to these, and a development store's real sends too.
"""

from __future__ import annotations

from dataclasses import dataclass

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
