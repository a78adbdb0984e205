"""Addresses that must get no more marketing from a shop, kept only as hashes (they outlive erasure)."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from plugin.store.db import Database
from plugin.store.models import Suppression


def email_hash(email: str) -> str:
    """The stored form of an address: SHA-256 of its trimmed, lower-cased text."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def is_suppressed(session: Session, shop_id: int, email: str) -> bool:
    """Whether the address unsubscribed from (or was stopped by) the shop."""
    match = (Suppression.shop_id == shop_id, Suppression.email_hash == email_hash(email))
    return bool(session.scalar(select(exists().where(*match))))


def suppress(db: Database, session: Session, shop_id: int, email: str, reason: str, now: datetime) -> None:
    """Record the address as suppressed for the shop, once (a second suppression changes nothing)."""
    session.execute(
        db.insert(Suppression)
        .values(shop_id=shop_id, email_hash=email_hash(email), reason=reason, created_at=now)
        .on_conflict_do_nothing(index_elements=["shop_id", "email_hash"])
    )
