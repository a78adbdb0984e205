"""Database access: engines (SQLite embedded default, PostgreSQL in production), migrations, sessions,
and the small ledger functions the edges call.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, and_, create_engine, event, make_url, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from plugin.models import Delivery, DeliveryStatus, Shop

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def database_url(configured: str | None, instance_path: str) -> str:
    """Return the configured URL, or a SQLite file in the instance folder."""
    if configured:
        return configured
    os.makedirs(instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(instance_path, "lifecycle.sqlite3")


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and write-locking transactions."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
        _serialise_sqlite_writers(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _serialise_sqlite_writers(engine: Engine) -> None:
    # pysqlite's own transaction handling starts transactions lazily (and deferred), so two workers can both
    # read a shopper and then race to write it. BEGIN IMMEDIATE takes the write lock up front instead: the
    # SQLite equivalent of PostgreSQL's SELECT ... FOR UPDATE that lock_shopper() uses there.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(url: str) -> None:
    """Bring the database at `url` to the newest Alembic revision, once, however many processes start at once.

    Every process that starts on its own (gunicorn's workers, `lifecycle worker`, the scheduler) calls this.
    The upgrade runs under a lock (a file lock beside a SQLite file, an advisory lock on PostgreSQL) and in
    one transaction, so the first process migrates and the others wait, then find the head and do nothing.
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    engine = make_engine(url)
    try:
        with _sqlite_file_lock(url), engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Held until this transaction ends; PostgreSQL's DDL is transactional, so a process that
                # waited here sees either no schema or all of it.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


MIGRATION_LOCK_KEY = 0x6C6966656379  # "lifecy": any constant shared by every process of the app


@contextmanager
def _sqlite_file_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock on `<database file>.migrate-lock` (nothing to lock for other databases)."""
    path = make_url(url).database if url.startswith("sqlite") else None
    if not path or path == ":memory:":
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".migrate-lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


class Database:
    """An engine and its session factory, one per app (or per CLI process)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def insert(self, table):
        """A dialect-aware INSERT supporting ON CONFLICT."""
        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)


@dataclass(frozen=True)
class WebhookHeaders:
    """The identifying headers of a verified webhook."""

    webhook_id: str
    topic: str
    shop_domain: str
    api_version: str | None
    event_id: str | None
    triggered_at: datetime | None


@dataclass(frozen=True)
class RecordedDelivery:
    id: int
    status: str
    created: bool


def record_delivery(
    db: Database, headers: WebhookHeaders, body: bytes, received_at: datetime
) -> RecordedDelivery:
    """Store a delivery once per webhook id (committed before returning); say whether it was new."""
    table = Delivery.__table__
    values = dict(
        webhook_id=headers.webhook_id,
        shop_domain=headers.shop_domain,
        topic=headers.topic,
        api_version=headers.api_version,
        event_id=headers.event_id,
        triggered_at=headers.triggered_at,
        received_at=received_at,
        body=body,
        status=DeliveryStatus.RECEIVED,
        attempts=0,
    )
    statement = db.insert(table).values(**values).on_conflict_do_nothing(index_elements=["webhook_id"])
    with db.engine.begin() as connection:
        new_id = connection.execute(statement.returning(table.c.id)).scalar()
        if new_id is not None:
            return RecordedDelivery(new_id, DeliveryStatus.RECEIVED, True)
        row = connection.execute(
            select(table.c.id, table.c.status).where(table.c.webhook_id == headers.webhook_id)
        ).one()
    return RecordedDelivery(row.id, row.status, False)


def finish_delivery(
    session: Session, delivery: Delivery, status: str, now: datetime, reason: str | None = None
):
    """Move a delivery to a final status with an optional reason."""
    delivery.status = status
    delivery.reason = reason
    delivery.processed_at = now


def lock_delivery(session: Session, delivery_id: int) -> Delivery | None:
    """Load a delivery with its row locked until commit, so two drains never process it both."""
    return session.get(Delivery, delivery_id, with_for_update=True)


def due_delivery_ids(
    session: Session, slot: int, slots: int, now: datetime, after_id: int = 0, limit: int = 200
) -> list[int]:
    """Ids of `received` deliveries of one drain slot that are due now (not waiting for a retry)."""
    return list(
        session.scalars(
            select(Delivery.id)
            .where(
                Delivery.status == DeliveryStatus.RECEIVED,
                Delivery.id > after_id,
                Delivery.id % slots == slot,
                or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
            )
            .order_by(Delivery.id)
            .limit(limit)
        )
    )


def stuck_delivery_ids(session: Session, older_than: datetime, now: datetime) -> list[int]:
    """Ids of deliveries waiting with no drain coming: `received` since before `older_than` (their wake-up
    was lost), or due for a retry now."""
    return list(
        session.scalars(
            select(Delivery.id)
            .where(
                Delivery.status == DeliveryStatus.RECEIVED,
                or_(
                    and_(Delivery.next_attempt_at.is_(None), Delivery.received_at < older_than),
                    Delivery.next_attempt_at <= now,
                ),
            )
            .order_by(Delivery.id)
        )
    )


def reset_delivery(session: Session, delivery_id: int) -> Delivery | None:
    """Put a delivery back to `received` so it can be processed again (replay after a fix)."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is not None:
        delivery.status = DeliveryStatus.RECEIVED
        delivery.reason = None
        delivery.processed_at = None
        delivery.next_attempt_at = None
    return delivery


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


def expire_for_next_delivery(session: Session, topic: str) -> None:
    """Between two deliveries of one batch: everything is read fresh, as it would be alone, except the
    shops (see batch_shop), unless this delivery's topic may have changed one."""
    if topic in SHOP_CHANGING_TOPICS:
        session.info.pop("batch_shops", None)
        session.expire_all()
        return
    for instance in list(session.identity_map.values()):
        if not isinstance(instance, Shop):
            session.expire(instance)


def upsert_shop(session: Session, domain: str, access_token_encrypted: str | None, now: datetime) -> Shop:
    """Register (or re-activate) an installed shop."""
    shop = get_shop(session, domain)
    if shop is None:
        shop = Shop(domain=domain, installed_at=now, active=True)
        session.add(shop)
    shop.active = True
    shop.uninstalled_at = None
    if access_token_encrypted:
        shop.access_token_encrypted = access_token_encrypted
    session.flush()
    from plugin.runs import ensure_default_rules

    ensure_default_rules(session, shop, now)
    return shop


def deactivate_shop(session: Session, shop: Shop, now: datetime) -> None:
    """Mark a shop uninstalled and forget its tokens."""
    session.execute(
        update(Shop)
        .where(Shop.id == shop.id)
        .values(
            active=False,
            uninstalled_at=now,
            access_token_encrypted=None,
            access_token_expires_at=None,
            refresh_token_encrypted=None,
            refresh_token_expires_at=None,
        )
    )
