"""Group commit at the webhook endpoint: concurrent requests share INSERTs, each is answered only once its
own row is committed, and a failed write fails every request that was in it (503, nothing lost)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select
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


def test_concurrent_webhooks_are_each_stored_once_and_share_inserts(app, db):
    server = _serve(app)
    try:
        items = _bodies(REQUESTS)
        statuses = _post_all(server.server_port, items + items[:16])  # 16 duplicates racing their originals
    finally:
        server.shutdown()
    assert statuses == [200] * (REQUESTS + 16)
    with db.session() as session:
        stored = session.execute(select(Delivery.webhook_id, Delivery.body)).all()
        groups = session.scalar(select(func.count(func.distinct(Delivery.received_at))))
    assert sorted(stored) == sorted(items)  # every webhook once, its own body
    # A group's rows share one INSERT and its one reading of the clock: fewer times than rows means some
    # INSERTs carried several requests' rows.
    assert groups < REQUESTS


def test_a_failed_write_answers_503_to_every_request_in_it_and_keeps_nothing_half_done(app, db):
    """The database refuses the INSERT (here its table is away, renamed): every request of the batch gets
    503, none is acked; once the table is back, Shopify's retries are stored once each."""
    from sqlalchemy import text

    def rename(old: str, new: str) -> None:
        with db.engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))

    server = _serve(app)
    try:
        items = _bodies(24)
        assert _post_all(server.server_port, items[:1], threads=1) == [200]  # the held connection is open
        rename("deliveries", "deliveries_away")
        try:
            assert set(_post_all(server.server_port, items[1:], threads=8)) == {503}
        finally:
            rename("deliveries_away", "deliveries")
        with db.session() as session:
            assert session.scalar(select(func.count()).select_from(Delivery)) == 1
        assert _post_all(server.server_port, items, threads=8) == [200] * 24  # Shopify retries
    finally:
        server.shutdown()
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 24


def _interrupted_once(real):
    """`real`, but its first call raises KeyboardInterrupt (what stops a leader mid-way)."""
    calls = []

    def interrupted_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return interrupted_once


def _the_next_webhook_is_stored_after_an_interrupted_leader(writer) -> None:
    """One webhook whose leader is interrupted (it raises), then a second one from another thread: the
    second must lead its own write and be stored, not wait for a leader that is gone."""
    from plugin.shopify.verify import read_headers

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


def test_an_interrupted_leader_hands_over_and_the_next_webhook_is_stored(app, db, monkeypatch):
    """Whatever stops a leader (here an interrupt inside its write), its batch is answered and the next
    request becomes a leader: no webhook waits forever."""
    from plugin.store import deliveries
    from plugin.web.ledger_writer import LedgerWriter

    record = _interrupted_once(deliveries.LedgerConnection.record)
    monkeypatch.setattr(deliveries.LedgerConnection, "record", record)
    _the_next_webhook_is_stored_after_an_interrupted_leader(LedgerWriter(app.extensions))


def test_a_leader_stopped_while_gathering_leaves_its_group_to_the_next_webhook(app, db, monkeypatch):
    """A leader stopped before it takes its group (here an interrupt while it waits for the group to
    fill) takes itself out of the waiting list: the next webhook leads and is stored. Before, the leader
    handed the lead to itself on its way out, and every later webhook waited for a write that never came."""
    from plugin.web.ledger_writer import LedgerWriter

    monkeypatch.setattr(LedgerWriter, "_gather", _interrupted_once(LedgerWriter._gather))
    _the_next_webhook_is_stored_after_an_interrupted_leader(LedgerWriter(app.extensions))
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 1


def test_the_ledger_row_is_stored_exactly_as_the_orm_stores_it(db):
    """The endpoint's insert is driver SQL: its times must be the same text (SQLite) or values as the
    ORM's, or comparisons between them (due deliveries, pruning) would order them wrongly."""
    from sqlalchemy import text

    from plugin.shopify.verify import read_headers
    from plugin.store import deliveries

    received = datetime(2026, 10, 2, 3, 4, 5, tzinfo=UTC)
    (webhook_id, body), _ = _bodies(2)
    headers = read_headers(webhook_headers("orders/paid", SHOP, webhook_id, body, SECRET))
    deliveries.record_deliveries(db, [(headers, body)], received)
    with db.session() as session:
        session.add(
            Delivery(
                webhook_id="by-the-orm",
                shop_domain=headers.shop_domain,
                topic=headers.topic,
                api_version=headers.api_version,
                event_id=headers.event_id,
                triggered_at=headers.triggered_at,
                received_at=received,
                body=body,
                status="received",
                attempts=0,
            )
        )
    columns = "triggered_at, received_at, body, status, attempts, api_version, event_id"
    with db.engine.connect() as connection:
        rows = connection.execute(text(f"SELECT webhook_id, {columns} FROM deliveries")).all()
    by_id = {row[0]: tuple(row[1:]) for row in rows}
    assert by_id[webhook_id] == by_id["by-the-orm"]
    assert headers.triggered_at is not None and by_id[webhook_id][0] is not None


def test_a_leader_waits_for_as_many_requests_as_its_last_group_carried_and_no_longer(app, db, monkeypatch):
    """Under load the next group is cut to the last one's size (one commit and one Redis round trip for
    them all), never waiting past GROUP_WAIT_SECONDS; after a group of one nothing waits."""
    import time

    from plugin.shopify.verify import read_headers
    from plugin.store import deliveries
    from plugin.web import ledger_writer

    # Long enough that a loaded machine's stalls (a thread started late) do not cut a group short.
    monkeypatch.setattr(ledger_writer, "GROUP_WAIT_SECONDS", 2.0)
    real, groups, hold = deliveries.LedgerConnection.record, [], threading.Event()

    def spied(self, arrived, received_at):
        groups.append(len(arrived))
        if len(groups) == 1:
            hold.wait(10)  # the first write is slow: three requests gather behind it
        return real(self, arrived, received_at)

    monkeypatch.setattr(deliveries.LedgerConnection, "record", spied)
    writer = ledger_writer.LedgerWriter(app.extensions)
    items = iter(_bodies(9))

    def post() -> threading.Thread:
        webhook_id, body = next(items)
        headers = read_headers(webhook_headers("orders/paid", SHOP, webhook_id, body, SECRET))
        thread = threading.Thread(target=writer.record, args=(headers, body), daemon=True)
        thread.start()
        return thread

    first = post()
    while not groups:
        time.sleep(0.005)
    behind = [post() for _ in range(3)]
    time.sleep(0.05)
    hold.set()
    for thread in [first, *behind]:
        thread.join(10)
    assert groups == [1, 3]

    # Three webhooks 100 ms apart: one group, written once the third has joined.
    spaced = []
    for _ in range(3):
        spaced.append(post())
        time.sleep(0.1)
    for thread in spaced:
        thread.join(10)
    assert groups == [1, 3, 3]

    # One webhook alone: it waits GROUP_WAIT_SECONDS for the others, then goes alone; the next one does
    # not wait at all.
    started = time.monotonic()
    post().join(10)
    waited = time.monotonic() - started
    started = time.monotonic()
    post().join(10)
    assert groups == [1, 3, 3, 1, 1]
    assert 2.0 <= waited < 5
    assert time.monotonic() - started < 0.5
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 9
