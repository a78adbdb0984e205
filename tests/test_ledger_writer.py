"""Group commit at the webhook endpoint: concurrent requests share INSERTs, each is answered only once its
own row is committed, and a failed write fails every request that was in it (503, nothing lost)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import event, func, select
from werkzeug.serving import make_server

from plugin.demo.synthetic import encode, order_payload, webhook_headers
from plugin.store.models import Delivery
from tests.conftest import SECRET, SHOP

REQUESTS = 64


def _bodies(count: int) -> list[tuple[str, bytes]]:
    placed = datetime(2026, 10, 1, tzinfo=UTC)
    return [
        (
            f"wh-{i}",
            encode(order_payload(9000 + i, 700 + i, placed, Decimal("12.00"), email=f"s{i}@example.com")),
        )
        for i in range(count)
    ]


def _post_all(port: int, items: list[tuple[str, bytes]], threads: int = 16) -> list[int]:
    """POST every item from `threads` client threads at once; the status of each, in order."""
    import http.client

    statuses: list[int | None] = [None] * len(items)
    start = threading.Barrier(threads)

    def send(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start.wait()
        for index in range(offset, len(items), threads):
            webhook_id, body = items[index]
            headers = webhook_headers("orders/paid", SHOP, webhook_id, body, SECRET)
            connection.request("POST", "/webhooks", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            statuses[index] = response.status
        connection.close()

    workers = [threading.Thread(target=send, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statuses


def _serve(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def _count_inserts(db) -> list[str]:
    """The INSERTs into deliveries the endpoint's engine runs, as they run."""
    inserts: list[str] = []

    @event.listens_for(db.autocommit_engine, "before_cursor_execute")
    def _seen(_conn, _cursor, statement, _parameters, _context, _many):
        if statement.lstrip().upper().startswith("INSERT INTO DELIVERIES"):
            inserts.append(statement)

    return inserts


def test_concurrent_webhooks_are_each_stored_once_and_share_inserts(app, db):
    inserts = _count_inserts(db)
    server = _serve(app)
    try:
        items = _bodies(REQUESTS)
        statuses = _post_all(server.server_port, items + items[:16])  # 16 duplicates racing their originals
    finally:
        server.shutdown()
    assert statuses == [200] * (REQUESTS + 16)
    with db.session() as session:
        stored = session.execute(select(Delivery.webhook_id, Delivery.body)).all()
    assert sorted(stored) == sorted(items)  # every webhook once, its own body
    assert len(inserts) < REQUESTS + 16  # some INSERTs carried several requests' rows


def test_a_failed_write_answers_503_to_every_request_in_it_and_keeps_nothing_half_done(app, db):
    """The database refuses the INSERT (a constraint the table does not have would be a schema bug; here
    the connection's statement fails): every request of the batch gets 503, none is acked."""
    failing = {"on": True}

    @event.listens_for(db.autocommit_engine, "before_cursor_execute", retval=True)
    def _break(_conn, _cursor, statement, parameters, _context, _many):
        if failing["on"] and statement.lstrip().upper().startswith("INSERT INTO DELIVERIES"):
            statement = "INSERT INTO no_such_table VALUES (1)"
        return statement, parameters

    server = _serve(app)
    try:
        items = _bodies(24)
        assert set(_post_all(server.server_port, items, threads=8)) == {503}
        with db.session() as session:
            assert session.scalar(select(func.count()).select_from(Delivery)) == 0
        failing["on"] = False  # Shopify retries: now everything is stored once
        assert _post_all(server.server_port, items, threads=8) == [200] * 24
    finally:
        server.shutdown()
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 24


def test_an_interrupted_leader_hands_over_and_the_next_webhook_is_stored(app, db, monkeypatch):
    """Whatever stops a leader (here an interrupt inside its write), its batch is answered and the next
    request becomes a leader: no webhook waits forever."""
    from plugin.shopify.verify import read_headers
    from plugin.store import deliveries
    from plugin.web.ledger_writer import LedgerWriter

    real, calls = deliveries.record_deliveries, []

    def interrupted_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(deliveries, "record_deliveries", interrupted_once)
    writer = LedgerWriter(app.extensions)
    (first_id, first_body), (second_id, second_body) = _bodies(2)
    with pytest.raises(KeyboardInterrupt):
        writer.record(
            read_headers(webhook_headers("orders/paid", SHOP, first_id, first_body, SECRET)), first_body
        )
    stored = {}
    second = threading.Thread(
        target=lambda: stored.update(
            row=writer.record(
                read_headers(webhook_headers("orders/paid", SHOP, second_id, second_body, SECRET)),
                second_body,
            )
        ),
        daemon=True,
    )
    second.start()
    second.join(10)
    assert not second.is_alive(), "the second webhook waited for a leader that was gone"
    assert stored["row"].created
