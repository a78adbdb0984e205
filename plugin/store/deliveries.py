"""The delivery ledger: every verified webhook is a row, recorded once per webhook id, then processed."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from plugin.store.db import Database, drop_row_values, planned_without
from plugin.store.models import WAITING, Delivery, DeliveryStatus

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
    """Store deliveries once per webhook id, committed before returning (see `LedgerConnection.record`), on
    a connection checked out of the pool for this call."""
    ledger = LedgerConnection(db)
    try:
        return ledger.record(arrived, received_at)
    finally:
        ledger.close()


class LedgerConnection:
    """A database connection held for recording deliveries: the webhook endpoint keeps one per process
    (`web.ledger_writer`, whose writes never overlap), so a group of webhooks costs one round trip and no
    pool checkout, session or execution context around it.

    The connection is a DBAPI one from `db.autocommit_engine`'s pool, opened at the first write (after a
    server's fork): every statement commits by itself. A connection the server dropped (a restart) is found
    dead by the INSERT, not by a ping before it; the statement is then retried once on a fresh connection,
    and a second failure propagates as SQLAlchemy's `DBAPIError` (the endpoint answers 503, Shopify
    retries). Bound values never appear in the error (`hide_parameters`).
    """

    def __init__(self, db: Database):
        self.db = db
        self._held = None  # the pool's proxy of the DBAPI connection, once opened

    def record(
        self, arrived: list[tuple[WebhookHeaders, bytes]], received_at: datetime
    ) -> list[RecordedDelivery]:
        """Store deliveries once per webhook id, committed before returning, in one INSERT; one result per
        item of `arrived`, in its order (the same webhook id twice gets the same row, new only once)."""
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
                    status=DeliveryStatus.RECEIVED.value,  # plain text for the driver
                    attempts=0,
                ),
            )
        try:
            stored = self._insert(list(rows.values()))
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            stored = self._insert(list(rows.values()))
        results, told = [], set()
        for headers, _body in arrived:
            delivery_id, status, created = stored[headers.webhook_id]
            results.append(RecordedDelivery(delivery_id, status, created and headers.webhook_id not in told))
            told.add(headers.webhook_id)
        return results

    def close(self) -> None:
        """Hand the connection back to the pool (the next write opens one again)."""
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def _insert(self, rows: list[dict]) -> dict[str, tuple[int, str, bool]]:
        """webhook id → (row id, status, inserted now)."""
        engine = self.db.autocommit_engine
        dialect = engine.dialect
        if self._held is None:
            self._held = engine.raw_connection()
        statement, parameters = None, None
        try:
            cursor = self._held.cursor()
            try:
                stored: dict[str, tuple[int, str, bool]] = {}
                for start in range(0, len(rows), ROWS_PER_INSERT):
                    chunk = rows[start : start + ROWS_PER_INSERT]
                    statement, bind = _ledger_insert(dialect, len(chunk))
                    cursor.execute(statement, bind(chunk))
                    for delivery_id, webhook_id in cursor.fetchall():
                        stored[webhook_id] = (delivery_id, DeliveryStatus.RECEIVED, True)
                known = [row["webhook_id"] for row in rows if row["webhook_id"] not in stored]
                if known:  # a repeat: its row, as it stands
                    statement, parameters = _known_rows(dialect, len(known)), tuple(known)
                    cursor.execute(statement, parameters)
                    for delivery_id, webhook_id, status in cursor.fetchall():
                        stored[webhook_id] = (delivery_id, status, False)
                return stored
            finally:
                cursor.close()
        except dialect.loaded_dbapi.Error as error:
            dead = dialect.is_disconnect(error, self._held.dbapi_connection, None)
            drop_row_values(error)  # as the engines do (`db.make_engine`): no row's values in any message
            self._drop(error)
            raise DBAPIError.instance(
                statement,
                parameters,
                error,
                dialect.loaded_dbapi.Error,
                hide_parameters=True,
                connection_invalidated=dead,
                dialect=dialect,
            ) from error

    def _drop(self, error: BaseException) -> None:
        """Forget a connection a statement failed on: the pool closes it, the next write opens another."""
        held, self._held = self._held, None
        try:
            held.invalidate(error)
        except Exception:  # closing a broken connection may fail too; it is gone either way
            pass


# A group larger than this (a server with many threads) takes several statements; SQLite's limit on bound
# parameters (32,766) is far away.
ROWS_PER_INSERT = 64


@lru_cache(maxsize=4 * ROWS_PER_INSERT)
def _ledger_insert(dialect, count: int):
    """The text of `INSERT … VALUES (…) × count ON CONFLICT (webhook_id) DO NOTHING RETURNING id,
    webhook_id` for this dialect, and the function turning `count` rows into its flat parameters.

    Driver SQL, not a Core `insert().values(rows)`: that one is built and compiled anew for every group of
    webhooks (about 250 µs of CPU a row, the endpoint's largest cost), while this text is the same for
    every group of one size, so the driver prepares it once on the held connection (psycopg after five
    uses, sqlite3 from its statement cache). The values go through the columns' own bind processors, so they
    are stored exactly as the ORM stores them (aware datetimes as naive UTC, SQLite's datetime text).
    """
    table = Delivery.__table__
    row = "(" + ", ".join([_marker(dialect)] * len(ACK_COLUMNS)) + ")"
    sql = (
        f"INSERT INTO {table.name} ({', '.join(ACK_COLUMNS)}) VALUES {', '.join([row] * count)} "
        "ON CONFLICT (webhook_id) DO NOTHING RETURNING id, webhook_id"
    )
    processors = [
        table.c[column].type.dialect_impl(dialect).bind_processor(dialect) for column in ACK_COLUMNS
    ]

    def bind(rows: list[dict]) -> tuple:
        return tuple(
            value if process is None or value is None else process(value)
            for row in rows
            for process, value in zip(processors, (row[column] for column in ACK_COLUMNS), strict=True)
        )

    return sql, bind


@lru_cache(maxsize=4 * ROWS_PER_INSERT)
def _known_rows(dialect, count: int) -> str:
    """SELECT id, webhook_id, status of `count` webhook ids (the repeats of a group)."""
    table = Delivery.__table__.name
    markers = ", ".join([_marker(dialect)] * count)
    return f"SELECT id, webhook_id, status FROM {table} WHERE webhook_id IN ({markers})"


def _marker(dialect) -> str:
    """The driver's positional placeholder: sqlite3's `?`, psycopg's `%s`."""
    return "?" if dialect.paramstyle == "qmark" else "%s"


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
    postgres = session.get_bind().dialect.name == "postgresql"
    conditions = [
        WAITING,  # not `status = :param`: see WAITING
        or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
    ]
    if ids is not None:
        conditions.append(Delivery.id.in_(ids))
    # See INDEX_SCAN_ONLY; the batch's own reads plan as they would.
    with planned_without(session, *INDEX_SCAN_ONLY) if postgres else nullcontext():
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
        ).all()
    return [ClaimedDelivery(*row) for row in rows]


# The claim walks ix_deliveries_waiting as a plain index scan, never as a bitmap scan. Every delivery leaves
# that index's condition once settled, so the index keeps an entry for each settled delivery until VACUUM
# removes it. A plain index scan marks the entries whose rows are dead to every transaction (PostgreSQL's
# "killed" index tuples) and no later scan reads their rows again; a bitmap scan never marks them, so
# each claim re-read every row settled since the last VACUUM. The planner prefers the bitmap scan (a LIMIT
# larger than the rows it expects gains nothing from the index's order), and on a queue table VACUUM
# always lags: in the full store replay on a PostgreSQL without autovacuum, the claims read 22,000 index
# entries each on average and took 51 of PostgreSQL's seconds (bench/README.md, "Session 11").
# (A sequential scan is ruled out too: it would read the same dead rows.) Both settings are put back to
# the connection's own right after the claim (`db.planned_without`).
INDEX_SCAN_ONLY = ("enable_bitmapscan", "enable_seqscan")


def mark_deliveries(db: Database, session: Session, outcomes: list[dict]) -> None:
    """Settle a batch's deliveries: each dict holds id, status, reason, processed_at and attempts (the
    attempt just made counted). One UPDATE per distinct settlement, `WHERE id = ANY(:ids)`: a batch is
    mostly deliveries processed at their first attempt, so it takes one or a few statements (an
    executemany would run one per delivery)."""
    settlements: dict[tuple, list[int]] = {}
    for outcome in outcomes:
        key = (outcome["status"], outcome["reason"], outcome["processed_at"], outcome["attempts"])
        settlements.setdefault(key, []).append(outcome["id"])
    for (status, reason, processed_at, attempts), ids in settlements.items():
        session.execute(
            update(Delivery)
            .where(db.among(Delivery.id, sorted(ids)))
            .values(status=status, reason=reason, processed_at=processed_at, attempts=attempts)
            .execution_options(synchronize_session=False)
        )


def stuck_delivery_ids(session: Session, older_than: datetime, now: datetime) -> list[int]:
    """Ids of deliveries waiting with no drain coming: `received` since before `older_than` (their wake-up
    was lost), or due for a retry now."""
    return list(
        session.scalars(
            select(Delivery.id)
            .where(
                WAITING,
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
