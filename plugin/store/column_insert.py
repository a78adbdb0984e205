"""Many rows into (or onto) one table in one statement whose text does not depend on how many rows there
are.

On PostgreSQL the rows travel as one array per column: `INSERT INTO t (a, b) SELECT * FROM
unnest(CAST(:a AS integer[]), CAST(:b AS text[]))`. The same text serves every batch, so psycopg parses
it once and PostgreSQL can prepare it. The ORM's flush and SQLAlchemy's multi-row VALUES ("insertmanyvalues")
write a new text for every row count, with a placeholder per value, which psycopg parses anew each time
(about a twentieth of a worker's CPU for a batch's transitions and runs); an executemany runs one
statement per row. SQLite is in-process: an executemany costs no round trip there, and is kept.
`update_rows` does the same for rows already stored: `UPDATE … FROM unnest(…)`, one statement where the
ORM's flush runs an executemany of one UPDATE per row.

Values pass through each column's own bind processor, so the rows are stored exactly as the ORM stores
them (aware datetimes as naive UTC, JSON as text). The arrays travel in PostgreSQL's binary format
(`_BinaryArray`), except NUMERIC ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

import psycopg
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import Float, Numeric, Table, bindparam, text, update
from sqlalchemy.orm import Session

from plugin.store.db import Database, planned_without


@dataclass(frozen=True)
class Upsert:
    """ON CONFLICT (`key`) DO UPDATE SET each of `columns` to the row given, unless the stored row's
    `newer_by` column is later than the given one's (a stored NULL is overwritten): the staleness guard.
    The rows must not repeat a key (PostgreSQL refuses to update one row twice in a statement)."""

    key: tuple[str, ...]
    columns: tuple[str, ...]
    newer_by: str


def insert_rows(
    db: Database,
    session: Session,
    table: Table,
    rows: Sequence[dict],
    *,
    skip_conflicts_on: tuple[str, ...] = (),
    upsert: Upsert | None = None,
    returning: tuple[str, ...] = (),
) -> list[tuple]:
    """Insert `rows` (dicts with the same keys) in one statement; with `skip_conflicts_on`, a row whose
    key is taken is skipped (ON CONFLICT DO NOTHING); with `upsert`, it updates the stored row as
    `Upsert` says. Returns the `returning` columns of the rows inserted (none of the skipped ones), in
    no particular order."""
    if not rows:
        return []
    assert not (skip_conflicts_on and upsert), "one ON CONFLICT clause: skip or upsert"
    rows = _with_defaults(table, rows)
    columns = tuple(rows[0])
    if db.is_sqlite:
        statement = db.insert(table)
        if skip_conflicts_on:
            statement = statement.on_conflict_do_nothing(index_elements=list(skip_conflicts_on))
        if upsert:
            guard = table.c[upsert.newer_by]
            statement = statement.on_conflict_do_update(
                index_elements=list(upsert.key),
                set_={name: statement.excluded[name] for name in upsert.columns},
                where=guard.is_(None) | (statement.excluded[upsert.newer_by] >= guard),
            )
        if returning:
            statement = statement.returning(*(table.c[column] for column in returning))
            return [tuple(row) for row in session.execute(statement, list(rows))]
        session.execute(statement, list(rows))
        return []
    sql, processors = _unnest_insert(db.engine.dialect, table, columns, skip_conflicts_on, upsert, returning)
    result = session.execute(sql, _arrays(rows, columns, processors))
    return [tuple(row) for row in result] if returning else []


def update_rows(db: Database, session: Session, table: Table, rows: Sequence[dict], key: str = "id") -> int:
    """Set the columns of `rows` (dicts with the same keys, `key` among them) on the stored rows of the
    same `key`, in one statement: `UPDATE t SET a = v.a … FROM unnest(…) AS v WHERE t.key = v.key` on
    PostgreSQL, an executemany on SQLite. The rows are sent in key order. Returns how many rows were
    updated (fewer than given when some key is not stored)."""
    if not rows:
        return 0
    rows = sorted(rows, key=lambda row: row[key])
    columns = tuple(rows[0])
    if db.is_sqlite:
        statement = (
            update(table)
            .where(table.c[key] == bindparam(f"v_{key}"))
            .values({column: bindparam(f"v_{column}") for column in columns if column != key})
        )
        parameters = [{f"v_{column}": value for column, value in row.items()} for row in rows]
        return session.execute(statement, parameters).rowcount
    sql, processors = _unnest_update(db.engine.dialect, table, columns, key)
    with planned_without(session, *NESTED_LOOP_ONLY):
        return session.execute(sql, _arrays(rows, columns, processors)).rowcount


# The UPDATE … FROM unnest finds each row through the table's key index (a nested loop), never by hashing
# the whole table: with rows in the hundreds the planner prefers a hash join over a sequential scan, which
# reads every row version of the table (on a table updated this often, every one since the last VACUUM).
NESTED_LOOP_ONLY = ("enable_hashjoin", "enable_mergejoin")


@lru_cache(maxsize=64)
def _unnest_update(dialect, table: Table, columns: tuple[str, ...], key: str):
    """The UPDATE … FROM unnest statement for these columns, and their bind processors."""
    changes = ", ".join(f"{column} = v.{column}" for column in columns if column != key)
    sql = (
        f"UPDATE {table.name} SET {changes} FROM unnest({_casts(dialect, table, columns)})"
        f" AS v({', '.join(columns)}) WHERE {table.name}.{key} = v.{key}"
    )
    return text(sql), _processors(dialect, table, columns)


class _BinaryArray(list):
    """A column's values, which psycopg sends in PostgreSQL's binary array format (registered below).

    psycopg's default for a list is the text format, which escapes and quotes every element in Python:
    1 µs an integer or a string, 4 µs a timestamp, 6 µs a JSON text (measured, psycopg 3.3), about a tenth
    of a worker's CPU over a batch's statements. The binary format packs each element: 0.2–0.4 µs. NUMERIC
    arrays stay text (`_array_kinds`), where psycopg's binary Decimal dumper is the slower one (2.1 µs
    against 0.9 µs). The array's element type is the one psycopg reads off the values (int8, text,
    timestamp…); each statement casts it to its column's type, as it does the text arrays.
    """


psycopg.adapters.register_dumper(_BinaryArray, ListBinaryDumper)


def _arrays(rows: Sequence[dict], columns: tuple[str, ...], processors) -> dict[str, list]:
    """One array per column (`c0`, `c1`…), each value through its column's bind processor."""
    return {
        f"c{index}": kind(
            value if process is None or value is None else process(value)
            for value in (row[column] for row in rows)
        )
        for index, (column, (process, kind)) in enumerate(zip(columns, processors, strict=True))
    }


def _with_defaults(table: Table, rows: Sequence[dict]) -> Sequence[dict]:
    """The rows with the Python-side defaults of the columns they leave out, as an INSERT of the table
    (Core or ORM) would fill them (`attempts=0`, `context={}`…); the database fills its own defaults."""
    missing = [
        column
        for column in table.columns
        if column.name not in rows[0] and column.default is not None and not column.default.is_sequence
    ]
    if not missing:
        return rows
    filled = []
    for row in rows:
        row = dict(row)
        for column in missing:
            default = column.default
            row[column.name] = default.arg(None) if default.is_callable else default.arg
        filled.append(row)
    return filled


@lru_cache(maxsize=64)
def _unnest_insert(
    dialect,
    table: Table,
    columns: tuple[str, ...],
    conflict: tuple[str, ...],
    upsert: Upsert | None,
    returning,
):
    """The statement for these columns (each array cast to its column's type) and their bind processors."""
    casts = _casts(dialect, table, columns)
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({casts})"
    if conflict:
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    if upsert:
        changes = ", ".join(f"{column} = excluded.{column}" for column in upsert.columns)
        newer = f"{table.name}.{upsert.newer_by}"
        sql += (
            f" ON CONFLICT ({', '.join(upsert.key)}) DO UPDATE SET {changes}"
            f" WHERE {newer} IS NULL OR excluded.{upsert.newer_by} >= {newer}"
        )
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    return text(sql), _processors(dialect, table, columns)


def _casts(dialect, table: Table, columns: tuple[str, ...]) -> str:
    """`CAST(:c0 AS type[]), …`: each column's array parameter, cast to an array of its column's type."""
    return ", ".join(
        f"CAST(:c{index} AS {table.c[column].type.compile(dialect=dialect)}[])"
        for index, column in enumerate(columns)
    )


def _processors(dialect, table: Table, columns: tuple[str, ...]) -> tuple:
    """Per column, its bind processor and the kind of list its array travels as (`_BinaryArray` but for
    NUMERIC columns)."""
    return tuple(
        (_processor(dialect, table.c[column].type), _array_kind(table.c[column].type)) for column in columns
    )


def _array_kind(column_type) -> type:
    return list if isinstance(column_type, Numeric) and not isinstance(column_type, Float) else _BinaryArray


def _processor(dialect, column_type):
    """The column's bind processor; for a NUMERIC column without one, `_as_decimal`: psycopg refuses to
    dump a list that mixes ints and Decimals (a free order's `0` beside `Decimal("19.90")`), which one
    row at a time never met."""
    process = column_type.dialect_impl(dialect).bind_processor(dialect)
    if process is None and isinstance(column_type, Numeric) and not isinstance(column_type, Float):
        return _as_decimal
    return process


def _as_decimal(value) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))
