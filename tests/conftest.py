"""Fixtures over real services: Redis (flushed per test), SQLite and PostgreSQL (each test runs on both
where PostgreSQL is reachable), and an RQ SimpleWorker draining the queues in-process.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from urllib.parse import urlparse

import pytest
import redis as redis_lib
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from plugin import create_app
from plugin.pipeline import queue
from plugin.store import shops
from plugin.store.db import Database, migrate
from plugin.store.models import Base

API_KEY = "test-api-key"
SECRET = "test-webhook-secret"
PREVIOUS_SECRET = "previous-webhook-secret"
SHOP = "demo-store.myshopify.com"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

# pytest-xdist runs the suite in parallel processes (`-n auto` in pyproject.toml, at most
# `MAX_TEST_PROCESSES`): each process gets a Redis database and a PostgreSQL database of its own, so one
# process's FLUSHDB or emptied tables never touch another's. The first process (or a run without xdist)
# uses the URLs as given; process N the Redis database N below and the PostgreSQL database suffixed _N.
MAX_TEST_PROCESSES = 4
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


def _own_redis_url(url: str) -> str:
    parsed = urlparse(url)
    return parsed._replace(path=f"/{int(parsed.path.strip('/') or 0) - WORKER}").geturl()


REDIS_URL = _own_redis_url(os.environ.get("LIFECYCLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
_postgres = make_url(
    os.environ.get(
        "LIFECYCLE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/lifecycle_test"
    )
)
if WORKER:
    _postgres = _postgres.set(database=f"{_postgres.database}_{WORKER}")
POSTGRES_URL = _postgres.render_as_string(hide_password=False)


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one process per core, at most MAX_TEST_PROCESSES (each needs a Redis database)."""
    return max(1, min(os.cpu_count() or 1, MAX_TEST_PROCESSES))


def _postgres_available() -> bool:
    """Create the test database if the server is reachable; False when there is no PostgreSQL."""
    if os.environ.get("LIFECYCLE_TEST_POSTGRES") == "off":
        return False
    url = make_url(POSTGRES_URL)
    try:
        admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            exists = connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}
            )
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{url.database}"'))
        admin.dispose()
    except Exception:  # noqa: BLE001 - any failure means: no PostgreSQL here
        if os.environ.get("LIFECYCLE_TEST_POSTGRES") == "required":
            raise
        return False
    return True


BACKENDS = ["sqlite"] + (["postgresql"] if _postgres_available() else [])
_migrated: dict[str, str] = {}


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path_factory) -> str:
    """A migrated, emptied database of each backend."""
    backend = request.param
    if backend not in _migrated:
        url = (
            POSTGRES_URL
            if backend == "postgresql"
            else "sqlite:///" + str(tmp_path_factory.mktemp("db") / "test.sqlite3")
        )
        if backend == "postgresql":
            engine = create_engine(url)
            with engine.begin() as connection:
                connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            engine.dispose()
        migrate(url)
        _migrated[backend] = url
    url = _migrated[backend]
    _empty(url)
    return url


def _empty(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    engine.dispose()


@pytest.fixture
def redis_connection():
    connection = redis_lib.Redis.from_url(REDIS_URL)
    connection.flushdb()
    yield connection
    connection.flushdb()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SMTPSink:
    """A real SMTP server (aiosmtpd) on loopback that keeps every message it receives."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                import email
                from email import policy

                sink.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
                return "250 OK"

        port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        self.controller.start()
        self.url = f"smtp://127.0.0.1:{port}"

    def to(self, address: str) -> list:
        return [m for m in self.messages if m["To"] == address]


@pytest.fixture
def smtp():
    sink = SMTPSink()
    yield sink
    sink.controller.stop()


@pytest.fixture
def fake_store():
    from plugin.demo.fake_store import FakeStore, FakeStoreServer

    store = FakeStore(access_token=SHOP_TOKEN, shop_domain=SHOP, api_key=API_KEY, api_secret=SECRET)
    with FakeStoreServer(store) as server:
        yield server


SHOP_TOKEN = "shpat_test_token"


@pytest.fixture
def app(database_url, redis_connection, tmp_path, monkeypatch, smtp, fake_store):
    monkeypatch.setenv("LIFECYCLE_NOW", NOW.isoformat())
    monkeypatch.setenv("LIFECYCLE_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app(
        {
            "TESTING": True,
            "SHOPIFY_API_KEY": API_KEY,
            "SHOPIFY_API_SECRET": SECRET,
            "SHOPIFY_API_SECRET_PREVIOUS": PREVIOUS_SECRET,
            "SECRET_KEY": "test-secret-key",
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "LOG_LEVEL": "WARNING",
            "SMTP_URL": smtp.url,
            "SHOPIFY_ADMIN_ORIGIN": fake_store.origin,
            "APP_URL": "http://127.0.0.1:8000",
        },
        migrate=False,
    )
    yield app
    app.extensions["lifecycle.db"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db(app) -> Database:
    return app.extensions["lifecycle.db"]


@pytest.fixture
def shop(db):
    from plugin.crypto import encrypt_token

    with db.session() as session:
        return shops.upsert_shop(session, SHOP, encrypt_token(SHOP_TOKEN, "test-secret-key"), NOW)


@pytest.fixture
def worker(app, redis_connection):
    """Drain every queue in-process (rq's SimpleWorker, burst mode), inside the app context."""

    class Drain:
        def work(self) -> None:
            queues = [queue.get_queue(redis_connection, name) for name in queue.QUEUE_NAMES]
            with app.app_context():
                SimpleWorker(queues, connection=redis_connection, serializer=JSONSerializer).work(
                    burst=True, logging_level="WARNING"
                )

    return Drain()


@pytest.fixture
def run(database_url, monkeypatch, fake_store, smtp):
    """The `lifecycle` command, run in-process with the test's services in its environment."""
    from click.testing import CliRunner

    from plugin.cli import main

    for name, value in {
        "SHOPIFY_ADMIN_ORIGIN": fake_store.origin,
        "SMTP_URL": smtp.url,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "SHOPIFY_API_KEY": API_KEY,
        "SHOPIFY_API_SECRET": SECRET,
        "LIFECYCLE_SECRET_KEY": "k",
        "LIFECYCLE_NOW": NOW.isoformat(),
    }.items():
        monkeypatch.setenv(name, value)

    def invoke(*args: str) -> str:
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    return invoke
