"""Installed shops: registering one (with its default rules), reading it once per batch, its rules."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from plugin.core import rules as rules_module
from plugin.store.models import Rule, Shop


def get_shop(session: Session, domain: str) -> Shop | None:
    return session.scalar(select(Shop).where(Shop.domain == domain))


# Topics after which a shop row read earlier in a worker's batch may be outdated (deleted, deactivated).
SHOP_CHANGING_TOPICS = frozenset({"app/uninstalled", "shop/redact", "bulk_operations/finish"})


def batch_shop(session: Session, domain: str) -> Shop | None:
    """The shop, read once per transaction: a worker's batch processes many deliveries of one store.

    Settings a merchant saves meanwhile apply from the next batch (a fraction of a second later).
    """
    shops = session.info.setdefault("batch_shops", {})
    if domain not in shops:
        shops[domain] = get_shop(session, domain)
    return shops[domain]


def expire_for_next_delivery(session: Session, topic: str, keep=()) -> None:
    """Between two deliveries of one batch: everything is read fresh, as it would be alone, except the
    shops (see batch_shop), unless this delivery's topic may have changed one, and what the batch's book
    holds (`keep`: `store.shopper_book` is the truth for those rows until the batch writes them)."""
    if topic in SHOP_CHANGING_TOPICS:
        session.info.pop("batch_shops", None)
        session.expire_all()
        return
    for instance in list(session.identity_map.values()):
        if not isinstance(instance, Shop) and instance not in keep:
            session.expire(instance)


def upsert_shop(session: Session, domain: str, access_token_encrypted: str | None, now: datetime) -> Shop:
    """Register (or re-activate) an installed shop."""
    shop = get_shop(session, domain)
    if shop is None:
        shop = Shop(domain=domain, installed_at=now, active=True)
        session.add(shop)
    shop.active = True
    shop.uninstalled_at = None
    shop.paused_at = shop.pause_reason = None  # installed again (or a token exchange proves it installed)
    if access_token_encrypted:
        shop.access_token_encrypted = access_token_encrypted
    session.flush()

    ensure_default_rules(session, shop, now)
    return shop


def pause_shop(session: Session, shop: Shop, reason: str, now: datetime) -> None:
    """Stop all sending for the shop at once (kept from the first pause, with its reason)."""
    if shop.paused_at is None:
        shop.paused_at, shop.pause_reason = now, reason


def is_uninstalled(shop: Shop | None) -> bool:
    """True when the uninstall is recorded (deactivated), or there is no shop row at all."""
    return shop is None or (not shop.active and shop.uninstalled_at is not None)


def deactivate_shop(
    session: Session, shop: Shop, now: datetime, reason: str = "the app was uninstalled"
) -> None:
    """Record the uninstall: inactive, paused, tokens forgotten (once Shopify refused the token)."""
    session.execute(
        update(Shop)
        .where(Shop.id == shop.id)
        .values(
            active=False,
            uninstalled_at=now,
            paused_at=shop.paused_at or now,
            pause_reason=shop.pause_reason or reason,
            access_token_encrypted=None,
            access_token_expires_at=None,
            refresh_token_encrypted=None,
            refresh_token_expires_at=None,
        )
    )


def ensure_default_rules(session: Session, shop: Shop, now: datetime) -> None:
    """Give a newly installed shop the default plays (existing rules are left as the merchant set them)."""
    have = set(session.scalars(select(Rule.key).where(Rule.shop_id == shop.id)))
    for definition in rules_module.DEFAULT_RULES:
        if definition["key"] in have:
            continue
        rule = rules_module.load_rule(definition)
        session.add(
            Rule(shop_id=shop.id, key=rule["key"], definition=rule, enabled=rule["enabled"], updated_at=now)
        )
    session.flush()
    session.info.pop("shop_rules", None)


def shop_rules(session: Session, shop_id: int) -> list[tuple[int, dict]]:
    """(rule id, definition) of every rule of a shop, `enabled` taken from the column.

    Read once per transaction (a worker's batch plans many runs against the same rules).
    """
    cache = session.info.setdefault("shop_rules", {})
    if shop_id not in cache:
        rows = session.execute(select(Rule.id, Rule.definition, Rule.enabled).where(Rule.shop_id == shop_id))
        cache[shop_id] = [(rule_id, dict(d, enabled=enabled)) for rule_id, d, enabled in rows]
    return cache[shop_id]
