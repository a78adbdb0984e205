"""The delivery ledger: every verified webhook is a row, recorded once per webhook id, then processed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from plugin.store.db import Database
from plugin.store.models import Delivery, DeliveryStatus

PRUNED_BODY = b'{"pruned": true}'
DONE_WITH = (DeliveryStatus.PROCESSED, DeliveryStatus.IGNORED, DeliveryStatus.QUARANTINED)


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
    return record_deliveries(db, [(headers, body)], received_at)[0]


def record_deliveries(
    db: Database, arrived: list[tuple[WebhookHeaders, bytes]], received_at: datetime
) -> list[RecordedDelivery]:
    """Store deliveries once per webhook id, committed before returning, in one INSERT; one result per
    item of `arrived`, in its order (the same webhook id twice gets the same row, new only once).

    The webhook endpoint's whole database work (see `web.ledger_writer`): one statement that commits by
    itself on `db.autocommit_engine`, a second only for duplicates. A pooled connection the server dropped
    (a restart) is found dead by the INSERT, not by a ping before it; the statement is then retried once
    on a fresh connection, and a second failure propagates (the endpoint answers 503, Shopify retries).
    """
    rows: dict[str, dict] = {}
    for headers, body in arrived:
        rows.setdefault(
            headers.webhook_id,
            dict(
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
            ),
        )
    try:
        stored = _insert_deliveries(db, list(rows.values()))
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
        stored = _insert_deliveries(db, list(rows.values()))
    results, told = [], set()
    for headers, _body in arrived:
        delivery_id, status, created = stored[headers.webhook_id]
        results.append(RecordedDelivery(delivery_id, status, created and headers.webhook_id not in told))
        told.add(headers.webhook_id)
    return results


def _insert_deliveries(db: Database, rows: list[dict]) -> dict[str, tuple[int, str, bool]]:
    """webhook id → (row id, status, inserted now)."""
    table = Delivery.__table__
    statement = _insert_statement(db.is_sqlite)
    with db.autocommit_engine.connect() as connection:
        if len(rows) == 1:  # the common case, and the compiled-statement cache's: parameters only
            inserted = connection.execute(statement, rows[0]).all()
        else:
            inserted = connection.execute(
                _multi_insert(db.is_sqlite).values(rows).returning(table.c.id, table.c.webhook_id)
            ).all()
        stored = {row.webhook_id: (row.id, DeliveryStatus.RECEIVED, True) for row in inserted}
        known = [row["webhook_id"] for row in rows if row["webhook_id"] not in stored]
        if known:
            for row in connection.execute(
                select(table.c.id, table.c.webhook_id, table.c.status).where(table.c.webhook_id.in_(known))
            ):
                stored[row.webhook_id] = (row.id, row.status, False)
    return stored


@lru_cache(maxsize=2)
def _insert_statement(is_sqlite: bool):
    """INSERT … ON CONFLICT (webhook_id) DO NOTHING RETURNING id, webhook_id, built once: its values come
    as parameters, so SQLAlchemy's compiled-statement cache serves every webhook after the first."""
    table = Delivery.__table__
    return (
        _multi_insert(is_sqlite)
        .values({column: bindparam(column) for column in ACK_COLUMNS})
        .returning(table.c.id, table.c.webhook_id)
    )


def _multi_insert(is_sqlite: bool):
    table = Delivery.__table__
    insert = sqlite.insert if is_sqlite else postgresql.insert
    return insert(table).on_conflict_do_nothing(index_elements=["webhook_id"])


ACK_COLUMNS = (
    "webhook_id",
    "shop_domain",
    "topic",
    "api_version",
    "event_id",
    "triggered_at",
    "received_at",
    "body",
    "status",
    "attempts",
)


def finish_delivery(
    session: Session, delivery: Delivery, status: str, now: datetime, reason: str | None = None
):
    """Move a delivery to a final status with an optional reason."""
    delivery.status = status
    delivery.reason = reason
    delivery.processed_at = now


@dataclass(frozen=True)
class ClaimedDelivery:
    """A claimed delivery as plain values: the batch reads it once and marks it in one statement."""

    id: int
    topic: str
    shop_domain: str
    triggered_at: datetime | None
    body: bytes
    attempts: int


def claim_due_deliveries(
    session: Session, now: datetime, limit: int, ids: list[int] | None = None
) -> list[ClaimedDelivery]:
    """Claim up to `limit` `received` deliveries that are due now (or those of `ids` still waiting), oldest
    first, locked until the transaction ends.

    PostgreSQL: `FOR UPDATE SKIP LOCKED`, so any number of workers share one backlog and never take the
    same delivery; a worker that dies mid-batch (even `kill -9`) loses its connection, its transaction
    rolls back and the rows are free again. SQLite: the transaction already holds the one write lock
    (BEGIN IMMEDIATE), so there is one writer and the clause is not rendered.
    """
    conditions = [
        Delivery.status == DeliveryStatus.RECEIVED,
        or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
    ]
    if ids is not None:
        conditions.append(Delivery.id.in_(ids))
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.topic,
            Delivery.shop_domain,
            Delivery.triggered_at,
            Delivery.body,
            Delivery.attempts,
        )
        .where(*conditions)
        .order_by(Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [ClaimedDelivery(*row) for row in rows]


def mark_deliveries(session: Session, outcomes: list[dict]) -> None:
    """Settle a batch's deliveries in one statement: each dict holds id, status, reason, processed_at and
    attempts (the attempt just made counted)."""
    if outcomes:
        session.execute(update(Delivery), outcomes)


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


def prune_bodies(db: Database, received_before: datetime) -> int:
    """Replace the raw bodies of deliveries done with (processed, ignored, quarantined) and received before
    the cut-off by a small marker, in one statement; returns how many. `received` and `failed` ones keep
    theirs: they may still be processed or replayed."""
    with db.engine.begin() as connection:
        return connection.execute(
            update(Delivery)
            .where(
                Delivery.status.in_(DONE_WITH),
                Delivery.received_at < received_before,
                Delivery.body != PRUNED_BODY,
            )
            .values(body=PRUNED_BODY)
        ).rowcount
