"""The database: engines (SQLite embedded default, PostgreSQL in production), migrations, sessions."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property, lru_cache
from pathlib import Path

from sqlalchemy import URL, ColumnElement, Engine, any_, bindparam, create_engine, event, make_url, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


MIGRATIONS = Path(__file__).parent / "migrations"


def database_url(configured: str | None, instance_path: str) -> str:
    """Return the configured URL, or a SQLite file in the instance folder."""
    if configured:
        return configured
    os.makedirs(instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(instance_path, "lifecycle.sqlite3")


def make_engine(url: str, autocommit: bool = False) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout, write-locking transactions and secure deletes.

    `autocommit` makes the engine of one-statement writes (`Database.autocommit_engine`): every statement
    commits on its own, with no BEGIN and COMMIT round trips, and PostgreSQL connections are not pinged
    on checkout (the caller retries once on a connection found dead instead).

    Bound parameters (emails, names) never appear in an error's text, so neither in logs nor in a
    delivery's stored reason: `hide_parameters`, and PostgreSQL's DETAIL line (which quotes the row's
    values, "Key (email)=(ann@…) already exists") is dropped from the message (`_without_row_values`).
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 60, "check_same_thread": False}, hide_parameters=True
        )
        _serialise_sqlite_writers(engine, begin_immediate=not autocommit)
    elif autocommit:
        engine = create_engine(
            url, isolation_level="AUTOCOMMIT", pool_size=5, max_overflow=10, hide_parameters=True
        )
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, hide_parameters=True)
        event.listen(engine, "connect", _plan_every_execution)
    event.listen(engine, "handle_error", _without_row_values)
    return engine


def _plan_every_execution(dbapi_connection, _record) -> None:
    """PostgreSQL plans each execution of a prepared statement for its own parameters.

    psycopg prepares a statement run five times, and PostgreSQL may then settle on one generic plan, costed
    for whatever the table statistics said at that moment: a plan made while a table was nearly empty
    (a new install, before ANALYZE runs, or never where autovacuum is off) scans a whole shop's orders
    for every batch. A batch's statements carry arrays of a few hundred keys; planning them afresh costs
    far less than one such scan.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute("SET plan_cache_mode = force_custom_plan")
    cursor.close()
    dbapi_connection.commit()  # outside any transaction the pool will roll back


def _without_row_values(context) -> None:
    """Keep only the primary message of a driver error that details the row (the DETAIL stays readable
    through `error.orig.diag` for code that needs it, but is in no str(), log line or stored reason)."""
    original = context.original_exception
    if not drop_row_values(original):
        return
    wrapped = context.sqlalchemy_exception
    if wrapped is not None:  # its message was composed from the driver's before this hook ran
        name = f"{type(original).__module__}.{type(original).__name__}"
        wrapped.args = (f"({name}) {original}", *wrapped.args[1:])


def drop_row_values(error: BaseException) -> bool:
    """Keep only the primary message of a driver error whose DETAIL quotes the row; True when it did."""
    diag = getattr(error, "diag", None)
    if diag is None or not getattr(diag, "message_detail", None):
        return False
    error.args = (diag.message_primary or type(error).__name__,)
    return True


def _serialise_sqlite_writers(engine: Engine, begin_immediate: bool = True) -> None:
    # pysqlite's own transaction handling starts transactions lazily (and deferred), so two workers can both
    # read a shopper and then race to write it. BEGIN IMMEDIATE takes the write lock up front instead: the
    # SQLite equivalent of PostgreSQL's SELECT ... FOR UPDATE that lock_shopper() uses there.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # The webhook endpoint's acknowledgements (the autocommit engine) reach the disk before the 200:
        # FULL syncs the write-ahead log at each commit (one per group of webhooks). Workers' commits keep
        # NORMAL: durable when a process dies, not always when the machine loses power.
        cursor.execute("PRAGMA synchronous=NORMAL" if begin_immediate else "PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted and overwritten content is zeroed on disk, not left in free pages for a file search to
        # find after a customers/redact (the erasure job then truncates the write-ahead log too).
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    if not begin_immediate:  # autocommit: the driver runs each statement in a transaction of its own
        return

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # A read-only session (`Database.read_session`) takes no write lock: a plain, deferred BEGIN.
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


READ_ONLY_OPTION = "lifecycle_read_only"  # a connection execution option `_on_begin` reads


@contextmanager
def planned_without(session: Session, *settings: str) -> Iterator[None]:
    """PostgreSQL: plan the block's statements with these planner settings (`enable_…`) off, in this
    transaction only; after the block they are put back to the connection's own (after an error, the
    transaction's rollback puts them back: an aborted transaction takes no more statements)."""
    off, again = _planner_switches(settings)
    session.execute(off)
    yield
    session.execute(again)


@lru_cache(maxsize=8)
def _planner_switches(settings: tuple[str, ...]):
    names = ", ".join(f"'{name}'" for name in settings)  # names from our own code, never input
    off = text("SELECT " + ", ".join(f"set_config('{name}', 'off', true)" for name in settings))
    again = text(f"SELECT set_config(name, reset_val, true) FROM pg_settings WHERE name IN ({names})")
    return off, again


def recreate_database(url: str | URL) -> str:
    """Drop the PostgreSQL database `url` names (closing its connections) and create it again, empty;
    returns `url` as a string with its password. For benchmarks and tests that need a database of
    their own beside the one they were given; never called by the app."""
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    return target.render_as_string(hide_password=False)


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

    @cached_property
    def autocommit_engine(self) -> Engine:
        """A second small pool for single-statement writes that must be durable at once (the webhook
        endpoint's ledger row): one round trip per statement instead of four (ping, BEGIN, the
        statement, COMMIT)."""
        return make_engine(self.url, autocommit=True)

    def dispose(self) -> None:
        """Close both pools' connections (the autocommit one only if it was ever opened)."""
        self.engine.dispose()
        if "autocommit_engine" in self.__dict__:
            self.autocommit_engine.dispose()

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

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only, rolled back at the end: it never holds the write lock.

        On SQLite its transaction is a plain deferred BEGIN (a snapshot of the WAL), not the BEGIN
        IMMEDIATE of `session()` that makes every other writer wait; on PostgreSQL it is a READ ONLY
        transaction (a write in it raises). Keep it short: load what is needed, close, compute after.
        """
        option = {READ_ONLY_OPTION: True} if self.is_sqlite else {"postgresql_readonly": True}
        with self.engine.connect() as connection:
            connection.execution_options(**option)
            session = Session(bind=connection)
            try:
                yield session
            finally:
                session.close()
                connection.rollback()

    def erase_freed_space(self, tables: list[str]) -> dict:
        """Make what was deleted or overwritten unreadable in the database's own files, after a commit.

        SQLite: every connection deletes securely (zeroed pages); a TRUNCATE checkpoint then copies the
        write-ahead log into the main file and empties it, so neither file holds the old values. PostgreSQL:
        a VACUUM of the tables (autocommit) clears their dead row versions; its WAL, replicas and backups
        keep what they hold until they expire (said in the README).
        """
        if self.is_sqlite:
            raw = self.engine.raw_connection()  # no BEGIN: a checkpoint cannot run inside a transaction
            try:
                cursor = raw.cursor()
                busy, wal_frames, copied = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                cursor.close()
            finally:
                raw.close()
            return {"checkpoint": "busy" if busy else "truncated", "wal_frames": wal_frames, "copied": copied}
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in tables:
                connection.exec_driver_sql(f'VACUUM "{table}"')  # names from our own models, never input
        return {"vacuumed": list(tables)}

    def insert(self, table):
        """A dialect-aware INSERT supporting ON CONFLICT."""
        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)

    def among(self, column, values) -> ColumnElement[bool]:
        """`column IN values`. On PostgreSQL as `column = ANY(:values)`, one array parameter: the
        statement's text is the same whatever the number of values, so psycopg converts it once and can
        prepare it, where an IN list writes one placeholder per value (a new text for every batch size,
        parsed again by psycopg each time: a tenth of a worker's CPU in the batch's reads)."""
        values = list(values)
        if self.is_sqlite:
            return column.in_(values)
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(column.type)))
