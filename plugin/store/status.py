"""A shop's install state and data freshness, for `lifecycle shops status` and the admin."""

from __future__ import annotations

from sqlalchemy import func, select

from plugin import clock
from plugin.clock import aware, iso
from plugin.store import shops
from plugin.store.db import Database
from plugin.store.models import Delivery
from plugin.store.shoppers import count_by_stage


def has_live_token(db: Database, shop_domain: str) -> bool:
    """Installed, with a token that works now or can still be refreshed (by the one clock)."""
    now = clock.now()
    with db.session() as session:
        shop = shops.get_shop(session, shop_domain)
        if shop is None or not shop.active or not shop.access_token_encrypted:
            return False
        if shop.refresh_token_encrypted:
            return shop.refresh_token_expires_at is None or shop.refresh_token_expires_at > now
        return shop.access_token_expires_at is None or shop.access_token_expires_at > now


def shop_status(db: Database, shop_domain: str, with_stages: bool = True) -> dict | None:
    with db.session() as session:
        shop = shops.get_shop(session, shop_domain)
        if shop is None:
            return None
        stages = count_by_stage(session, shop.id) if with_stages else {}  # the overview counts its own
        last_webhook = session.scalar(
            select(func.max(Delivery.received_at)).where(Delivery.shop_domain == shop_domain)
        )
        return {
            "shop": shop.domain,
            "installed": bool(shop.active),
            "installed_at": iso(shop.installed_at),
            "uninstalled_at": iso(shop.uninstalled_at),
            "scopes": shop.scopes,
            "token": _token_state(shop),
            "backfill": shop.backfill or {"status": "not started"},
            "last_webhook_at": iso(aware(last_webhook)),
            "last_reconciled_at": iso(shop.last_reconciled_at),
            "shoppers_by_stage": stages,
        }


def _token_state(shop) -> dict:
    return {
        "present": bool(shop.access_token_encrypted),
        "expiring": bool(shop.refresh_token_encrypted),
        "expires_at": iso(shop.access_token_expires_at),
        "refresh_expires_at": iso(shop.refresh_token_expires_at),
    }
