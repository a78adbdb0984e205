"""The delivery ledger: every verified webhook is a row, recorded once per webhook id, then processed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select, update
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
