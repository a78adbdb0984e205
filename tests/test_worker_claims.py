"""Workers claim batches from one shared backlog (issue 13, points 1 and 4): two workers never take the same
delivery and every order counts once; a poison delivery fails alone while the rest of its batch commits;
a worker killed with `kill -9` mid-batch leaves nothing half-applied, and the backlog is processed after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import OperationalError

from plugin.demo import synthetic as s
from plugin.pipeline.deliveries import drain_deliveries, process_batch
from plugin.shopify import payloads
from plugin.store import runs
from plugin.store.models import ActionRun, Delivery, Order, Shop, Shopper
from plugin.store.shopper_book import ShopperBook
from tests.conftest import API_KEY, NOW, SECRET
from tests.webhook_client import post_webhook

TOTAL = Decimal("25.00")


def post_orders(client, orders: list[tuple[int, int]], topics=("orders/paid",), prefix="wh") -> None:
    """Post each (order id, customer id) under each topic, one minute apart (updated_at)."""
    for order_id, customer_id in orders:
        placed = NOW - timedelta(days=order_id % 50 + 1)
        for step, topic in enumerate(topics):
            body = s.order_payload(
                order_id,
                customer_id,
                placed,
                TOTAL,
                email=f"c{customer_id}@example.com",
                updated_at=placed + step * timedelta(minutes=1),
            )
            webhook_id = f"{prefix}-{order_id}-{step}"
            assert post_webhook(client, topic, body, webhook_id=webhook_id).status_code == 200


def delivery_ids(db) -> list[int]:
    with db.session() as session:
        return list(session.scalars(select(Delivery.id).order_by(Delivery.id)))


def counts_by_customer(db) -> dict[int, tuple[int, Decimal]]:
    with db.session() as session:
        rows = session.execute(select(Shopper.customer_id, Shopper.orders_count, Shopper.total_spent))
        return {customer: (count, spent) for customer, count, spent in rows}


def order_count(db) -> int:
    with db.session() as session:
        return session.scalar(select(func.count(Order.id)))


POISON_ORDER = 666

POISON_TRIGGER = {
    "sqlite": [
        f"CREATE TRIGGER poison_order BEFORE INSERT ON orders WHEN NEW.order_id = {POISON_ORDER} "
        "BEGIN SELECT RAISE(ABORT, 'poison order'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION poison_order() RETURNS trigger AS $$ BEGIN "
        f"IF NEW.order_id = {POISON_ORDER} THEN RAISE EXCEPTION 'poison order'; END IF; RETURN NEW; END "
        "$$ LANGUAGE plpgsql",
        "CREATE TRIGGER poison_order BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION poison_order()",
    ],
}
DROP_POISON = {
    "sqlite": ["DROP TRIGGER IF EXISTS poison_order"],
    "postgresql": [
        "DROP TRIGGER IF EXISTS poison_order ON orders",
        "DROP FUNCTION IF EXISTS poison_order()",
    ],
}


def run_sql(db, statements: list[str]) -> None:
    with db.engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


def test_a_poison_delivery_fails_alone_and_the_rest_of_its_batch_commits(app, client, db, shop):
    backend = "sqlite" if db.is_sqlite else "postgresql"
    run_sql(db, POISON_TRIGGER[backend])  # the database itself refuses this one order
    try:
        # given a backlog of 17 orders, the poison one in the middle
        orders = [(100 + n, 1 + n) for n in range(16)]
        orders.insert(8, (POISON_ORDER, 50))
        post_orders(client, orders)
        poison_id = delivery_ids(db)[8]
        # when one batch claims them all
        with app.app_context():
            settled = process_batch(limit=100)
        # then the poison delivery alone waits for its retry, with its reason; the rest is committed
        assert settled.pop(poison_id) == "retrying"
        assert set(settled.values()) == {"processed"} and len(settled) == 16
        with db.session() as session:
            poison = session.get(Delivery, poison_id)
            assert (poison.status, poison.attempts) == ("received", 1)
            assert "poison order" in poison.reason and poison.next_attempt_at > NOW
        assert order_count(db) == 16
        counted = counts_by_customer(db)
        assert all(counted[customer] == (1, TOTAL) for _, customer in orders if customer != 50)
        # and once the cause is gone, its retry goes through
        run_sql(db, DROP_POISON[backend])
        with db.session() as session:
            session.execute(update(Delivery).where(Delivery.id == poison_id).values(next_attempt_at=NOW))
        with app.app_context():
            assert process_batch(limit=100) == {poison_id: "processed"}
        assert counts_by_customer(db)[50] == (1, TOTAL)
    finally:
        run_sql(db, DROP_POISON[backend])


def test_two_workers_share_one_backlog_never_take_the_same_delivery_and_count_each_order_once(
    app, client, db, shop
):
    # given 12 shoppers with 3 orders each, every order under create, paid and updated, some redelivered
    # (the same webhook id: acked once; a new id with the same body: a second delivery of the same facts)
    orders = [(1000 + n, 1 + n % 12) for n in range(36)]
    topics = ("orders/create", "orders/paid", "orders/updated")
    post_orders(client, orders, topics)
    post_orders(client, orders[:6], topics[1:2])  # same webhook ids as above: not recorded again
    post_orders(client, orders[:10], topics[1:2], prefix="again")
    ids = delivery_ids(db)
    assert len(ids) == 36 * 3 + 10
    # when two workers, each with its own connections, drain it in small batches at the same time
    taken: list[dict[int, str]] = [{}, {}]
    start, errors = threading.Barrier(2), []

    def work(mine: dict[int, str]) -> None:
        try:
            with app.app_context():
                start.wait()
                while settled := process_batch(limit=5):
                    mine.update(settled)
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors
    # then no delivery was taken twice, both took some (unless one was faster throughout), none is left
    assert not set(taken[0]) & set(taken[1])
    assert sorted(taken[0] | taken[1]) == ids
    assert set(taken[0].values()) | set(taken[1].values()) == {"processed"}
    # and every order counts once: 3 orders of 25.00 per shopper
    assert order_count(db) == 36
    assert counts_by_customer(db) == {customer: (3, 3 * TOTAL) for customer in range(1, 13)}


SLOW_ORDER = 505


def test_a_worker_killed_mid_batch_leaves_nothing_half_applied(app, client, db, shop, database_url):
    if db.is_sqlite:
        pytest.skip("needs a batch held open from outside: PostgreSQL (SQLite's one writer is tested above)")
    run_sql(
        db,
        [
            "CREATE FUNCTION slow_order() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.order_id = {SLOW_ORDER} THEN "
            "PERFORM pg_sleep(60); "
            "END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER slow_order BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION slow_order()",
        ],
    )
    drop = ["DROP TRIGGER IF EXISTS slow_order ON orders", "DROP FUNCTION IF EXISTS slow_order()"]
    try:
        # given 30 orders queued, and a worker process whose batch stops inside the sixth order's insert
        orders = [(500 + n, 1 + n) for n in range(30)]
        post_orders(client, orders)
        worker = subprocess.Popen(
            [sys.executable, "-m", "plugin.cli", "worker", "--burst"], env=worker_env(app, database_url)
        )
        assert wait_for(lambda: sleeping_backends(db) == 1, 60), "the worker never reached the slow order"
        # when it is killed with kill -9 mid-batch
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        assert wait_for(lambda: sleeping_backends(db) == 0, 30), "PostgreSQL kept the dead batch open"
        # then nothing of the batch is applied: no order, no shopper, every delivery waiting, no attempt
        assert order_count(db) == 0
        assert counts_by_customer(db) == {}
        with db.session() as session:
            left = session.execute(select(Delivery.status, Delivery.attempts)).all()
        assert set(left) == {("received", 0)} and len(left) == 30
        # and the next drain processes all of it, each order counted once
        run_sql(db, drop)
        with app.app_context():
            assert drain_deliveries() == {"processed": 30}
        assert counts_by_customer(db) == {customer: (1, TOTAL) for _, customer in orders}
    finally:
        run_sql(db, drop)


def worker_env(app, database_url: str) -> dict:
    """The `lifecycle worker` environment; its PostgreSQL sessions notice a vanished client within 0.1 s
    (else the killed worker's transaction stays open until the trigger's sleep ends)."""
    separator = "&" if "?" in database_url else "?"
    return dict(
        os.environ,
        DATABASE_URL=f"{database_url}{separator}options=-c%20client_connection_check_interval%3D100",
        REDIS_URL=app.config["REDIS_URL"],
        SHOPIFY_API_KEY=API_KEY,
        SHOPIFY_API_SECRET=SECRET,
        LIFECYCLE_SECRET_KEY="test-secret-key",
        SMTP_URL=app.config["SMTP_URL"],
        SHOPIFY_ADMIN_ORIGIN=app.config["SHOPIFY_ADMIN_ORIGIN"],
        LIFECYCLE_NOW=NOW.isoformat(),
        LIFECYCLE_INSTANCE_PATH=app.instance_path,
    )


def sleeping_backends(db) -> int:
    with db.engine.connect() as connection:
        return connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()"
            )
        )


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_an_older_version_stored_by_table_never_overwrites_a_newer_order(app, client, db, shop):
    # given an order stored at its newest version (a later update: 40.00)
    placed = NOW - timedelta(days=3)
    newer = s.order_payload(
        77, 7, placed, Decimal("40.00"), email="c7@example.com", updated_at=placed + timedelta(hours=2)
    )
    assert post_webhook(client, "orders/updated", newer, webhook_id="wh-newer").status_code == 200
    with app.app_context():
        assert list(process_batch(limit=10).values()) == ["processed"]
    # when a batch of orders of other shoppers also brings that order's older version (25.00)
    older = s.order_payload(77, 7, placed, TOTAL, email="c7@example.com", updated_at=placed)
    assert post_webhook(client, "orders/create", older, webhook_id="wh-older").status_code == 200
    post_orders(client, [(780 + n, 20 + n) for n in range(5)])
    with app.app_context():
        settled = process_batch(limit=10)
    assert set(settled.values()) == {"processed"} and len(settled) == 6
    # then the stored order keeps its newer facts, and every order counts once
    with db.session() as session:
        assert session.scalar(select(Order.total_price).where(Order.order_id == 77)) == Decimal("40.00")
    counted = counts_by_customer(db)
    assert counted[7] == (1, Decimal("40.00"))
    assert all(counted[20 + n] == (1, TOTAL) for n in range(5))


def test_a_drain_lingers_after_a_partial_batch_only_while_webhooks_keep_arriving(
    app, client, db, shop, monkeypatch
):
    from plugin.pipeline import deliveries as drain_module
    from plugin.pipeline import queue

    # given one order posted, a second posted once the drain has lowered its flag (so during its first
    # batch, as far as the flag can tell), and a third posted while it waits
    post_orders(client, [(2001, 1)])
    lower_drain_flag, later = queue.lower_drain_flag, [(2002, 2)]
    waits: list[float] = []

    def lower_then_another_arrives(connection):
        lower_drain_flag(connection)
        post_orders(client, [later.pop()])

    def wait_while_another_arrives(seconds: float) -> None:  # the wait itself is not timed here
        waits.append(seconds)
        if len(waits) == 1:
            post_orders(client, [(2003, 3)])

    monkeypatch.setattr(queue, "lower_drain_flag", lower_then_another_arrives)
    monkeypatch.setattr(drain_module.time, "sleep", wait_while_another_arrives)
    # when one drain runs
    with app.app_context():
        outcome = drain_deliveries()
    # then it waited after each partial batch during which one arrived, and claimed every newcomer itself
    assert outcome == {"processed": 3}
    assert waits == [drain_module.BATCH_LINGER_SECONDS] * 2
    assert counts_by_customer(db) == {customer: (1, TOTAL) for customer in (1, 2, 3)}
    # and a drain during which nothing arrives ends without waiting
    monkeypatch.setattr(queue, "lower_drain_flag", lower_drain_flag)
    waits.clear()
    post_orders(client, [(2004, 4)])
    with app.app_context():
        assert drain_deliveries() == {"processed": 1}
    assert waits == []


def read_queued_welcome(app, client, session, customer_id: int) -> ActionRun:
    """A customer who consents, their deliveries applied: their welcome, queued, read by `session`."""
    email = f"c{customer_id}@example.com"
    post_webhook(client, "customers/create", s.customer_payload(customer_id, email, NOW - timedelta(days=1)))
    consent = s.consent_payload(customer_id, email, "subscribed", NOW - timedelta(hours=20))
    post_webhook(client, "customers_email_marketing_consent/update", consent)
    with app.app_context():
        process_batch(limit=10)
    run = session.scalar(select(ActionRun).where(ActionRun.play == "welcome"))
    assert run.status == "queued"
    return run


def test_a_stale_play_a_worker_took_meanwhile_is_neither_cancelled_nor_planned_again(app, client, db, shop):
    if db.is_sqlite:
        pytest.skip("needs a worker committing beside an open batch: PostgreSQL (SQLite has one writer)")
    # given: a queued welcome, read by a batch's transaction; then a worker takes it (`run_action` marks
    # it running and commits) before the batch decides to supersede it
    with db.session() as batch:
        run = read_queued_welcome(app, client, batch, 801)
        with db.session() as worker:
            worker.execute(update(ActionRun).where(ActionRun.id == run.id).values(status="running"))
        # when: the batch asks which of its stale plays are still pending
        pending = runs.still_pending(db, batch, [run])
        # then: none, the run reads as running, and committing the batch writes nothing over it
        assert pending == [] and run.status == "running"
    with db.session() as session:
        assert session.get(ActionRun, run.id).status == "running"


def assert_worker_cannot_lock(db, run_id: int) -> None:
    """A worker's `run_action` (which locks the run before it acts) cannot take the run now."""
    with db.session() as worker, pytest.raises(OperationalError):
        worker.execute(select(ActionRun).where(ActionRun.id == run_id).with_for_update(nowait=True))


def test_a_stale_play_still_pending_is_locked_until_the_batch_commits(app, client, db, shop):
    if db.is_sqlite:
        pytest.skip("needs a worker beside an open batch: PostgreSQL (SQLite has one writer)")
    with db.session() as batch:
        run = read_queued_welcome(app, client, batch, 802)
        assert runs.still_pending(db, batch, [run]) == [run]
        # a worker's `run_action` (which locks the run before it acts) cannot take it meanwhile
        assert_worker_cannot_lock(db, run.id)


def test_a_worker_that_waited_for_the_run_reads_the_shopper_as_the_batch_holding_it_left_them(
    app, client, db, shop
):
    """A batch holds a queued welcome's lock while it withdraws the shopper's consent; a worker's
    `run_action` waits for that lock, then must check the policy against the consent the batch
    committed, not the consent as it stood when the worker's read began (PostgreSQL reads a row it
    waited for again, but not the rows a statement joined to it)."""
    if db.is_sqlite:
        pytest.skip("needs a worker waiting beside an open batch: PostgreSQL (SQLite has one writer)")
    from plugin.pipeline.run_action import run_action

    with db.session() as session:
        run = read_queued_welcome(app, client, session, 807)
        run_id, shopper_id = run.id, run.shopper_id
    outcome: dict = {}

    def work() -> None:
        with app.app_context():
            outcome["status"] = run_action(run_id)

    with db.session() as batch:
        batch.execute(select(ActionRun.id).where(ActionRun.id == run_id).with_for_update())
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        worker.join(1.0)
        assert worker.is_alive(), "the worker took a run a batch holds"
        batch.execute(update(Shopper).where(Shopper.id == shopper_id).values(consent_state="unsubscribed"))
    worker.join(20)
    assert outcome == {"status": "skipped"}
    with db.session() as session:
        assert session.get(ActionRun, run_id).skip_reason == "no email marketing consent"


def book_of(db, batch, shop, customer_id: int) -> ShopperBook:
    """The batch's book of one customer of the shop, read as a batch reads it."""
    return ShopperBook.load(db, batch, {batch.get(Shop, shop.id): ({customer_id}, set())})


def booked_run(db, batch, shop, customer_id: int, play: str) -> tuple[ShopperBook, Shopper, ActionRun]:
    """A batch's book holding the customer's shopper, the shopper, and their one pending run of `play`."""
    book = book_of(db, batch, shop, customer_id)
    shopper = book.shopper(shop.id, customer_id)
    [run] = [r for r in book.pending_runs(shopper) if r.play == play]
    return book, shopper, run


def booked_while_taken(db, batch, shop, customer_id: int, run_id: int, status: str):
    """A batch's book read while a worker (or the tick) has the run locked and marked `status`, not yet
    committed: the book's read waits for that commit. Returns (book, shopper) once the read ends."""
    read: dict = {}
    with db.session() as worker:
        worker.execute(update(ActionRun).where(ActionRun.id == run_id).values(status=status))
        reader = threading.Thread(target=lambda: read.update(book=book_of(db, batch, shop, customer_id)))
        reader.start()
        reader.join(1.0)
        assert reader.is_alive(), "the book read a run a worker holds without waiting for it"
    reader.join(10)  # the worker committed: the read ends
    book = read["book"]
    return book, book.shopper(shop.id, customer_id)


def test_a_booked_run_is_locked_until_the_batch_commits(app, client, db, shop):
    if db.is_sqlite:
        pytest.skip("needs a worker beside an open batch: PostgreSQL (SQLite has one writer)")
    customer_id = 806
    with db.session() as batch:
        read_queued_welcome(app, client, batch, customer_id)
        batch.rollback()
        _book, _shopper, run = booked_run(db, batch, shop, customer_id, "welcome")
        # a worker's `run_action` (which locks the run before it acts) cannot take it meanwhile
        assert_worker_cannot_lock(db, run.id)
        # and the stale-play check takes it as the book read it (`test_batch_statements` counts reads)
        assert runs.still_pending(db, batch, [run]) == [run]


def test_a_stage_play_a_worker_took_meanwhile_is_not_recorded_as_superseded(app, client, db, shop):
    if db.is_sqlite:
        pytest.skip("needs a worker committing beside an open batch: PostgreSQL (SQLite has one writer)")
    # given: a shopper with a win-back planned for their fall at risk, queued to a worker
    customer_id = 803
    post_webhook(
        client,
        "customers/create",
        s.customer_payload(customer_id, f"c{customer_id}@example.com", NOW - timedelta(days=90)),
    )
    with app.app_context():
        process_batch(limit=10)
    with db.session() as session:
        shopper = session.scalar(select(Shopper).where(Shopper.customer_id == customer_id))
        fell = (NOW - timedelta(days=1)).isoformat()
        session.add(
            ActionRun(
                shop_id=shop.id,
                play="win_back",
                action="send_email",
                shopper_id=shopper.id,
                cycle=f"at_risk:{fell}",
                idempotency_key=f"win_back:{shopper.id}:at_risk:{fell}",
                trigger="stage:at_risk",
                context={},
                params={"template": "win_back"},
                status="queued",
                created_at=NOW,
                due_at=NOW,
            )
        )
        session.commit()
    # when: a worker takes it (`run_action` locks it, marks it running and commits) while a batch reads
    # its book, and then the batch sees the shopper enter another stage entry, superseding that entry's plays
    with db.session() as batch:
        queued = batch.scalar(select(ActionRun.id).where(ActionRun.play == "win_back"))
        batch.rollback()
        book, shopper = booked_while_taken(db, batch, shop, customer_id, queued, "running")
        assert [r for r in book.pending_runs(shopper) if r.play == "win_back"] == []
        runs.supersede_stage_plays(db, batch, shopper, "repeat:2", NOW)
        book.write(db, batch)
    # then: the run is left as the worker records it, not marked superseded over its effect
    with db.session() as session:
        stored = session.get(ActionRun, queued)
        assert (stored.status, stored.skip_reason) == ("running", None)


def test_a_welcome_a_worker_took_meanwhile_is_not_cancelled_by_an_earlier_order(app, client, db, shop):
    if db.is_sqlite:
        pytest.skip("needs a worker committing beside an open batch: PostgreSQL (SQLite has one writer)")
    # given: a consented shopper's welcome (conditions: no order yet), queued; a batch's book holds it
    customer_id = 804
    with db.session() as batch:
        welcome_id = read_queued_welcome(app, client, batch, customer_id).id
        batch.rollback()
        # when: a worker takes the welcome while the batch reads its book, and then the batch applies an
        # order placed before the consent
        book, shopper = booked_while_taken(db, batch, shop, customer_id, welcome_id, "running")
        placed = NOW - timedelta(days=2)
        order = payloads.load(
            "orders/paid",
            json.dumps(
                s.order_payload(8040, customer_id, placed, TOTAL, email=f"c{customer_id}@example.com")
            ).encode(),
        )
        book.apply_order(shop.id, order)
        runs.recheck_conditions(db, batch, batch.get(Shop, shop.id), shopper, placed, NOW)
        book.write(db, batch)
    # then: the welcome is left as the worker records it, not marked superseded over its effect
    with db.session() as session:
        stored = session.get(ActionRun, welcome_id)
        assert (stored.status, stored.skip_reason) == ("running", None)


def scheduled_welcome(app, client, db, customer_id: int) -> int:
    """A consented shopper's welcome, scheduled and due (as the tick finds it); its id."""
    with db.session() as batch:
        welcome_id = read_queued_welcome(app, client, batch, customer_id).id
        batch.rollback()
    with db.session() as session:
        session.execute(update(ActionRun).where(ActionRun.id == welcome_id).values(status="scheduled"))
    return welcome_id


def test_a_marketing_run_the_tick_queued_meanwhile_is_left_to_the_send_time_check(app, client, db, shop):
    if db.is_sqlite:
        pytest.skip("needs a tick committing beside an open batch: PostgreSQL (SQLite has one writer)")
    # given: a consented shopper's welcome, scheduled, held by a batch's book
    customer_id = 805
    welcome_id = scheduled_welcome(app, client, db, customer_id)
    with db.session() as batch:
        # when: the tick queues it to a worker while a batch reads its book, and then the batch applies
        # the shopper's withdrawal
        book, shopper = booked_while_taken(db, batch, shop, customer_id, welcome_id, "queued")
        shopper.consent_state = "unsubscribed"
        shopper.consent_updated_at = NOW
        released = runs.apply_consent(db, batch, shopper, NOW)
        book.write(db, batch)
    # then: the run is left queued (the worker's send-time check reads the withdrawal), not skipped
    assert released == []
    with db.session() as session:
        assert session.get(ActionRun, welcome_id).status == "queued"


def test_the_tick_skips_a_due_run_a_batch_holds_and_queues_it_once_the_batch_commits(app, client, db, shop):
    if db.is_sqlite:
        pytest.skip("needs a tick beside an open batch: PostgreSQL (SQLite has one writer)")
    # given: a consented shopper's welcome, scheduled and due, held by a batch's book
    customer_id = 807
    welcome_id = scheduled_welcome(app, client, db, customer_id)
    with db.session() as batch:
        booked_run(db, batch, shop, customer_id, "welcome")
        # when: the tick looks for due runs meanwhile
        with db.session() as tick:
            tick.execute(text("SET LOCAL lock_timeout = '2s'"))
            skipped = [run_id for run_id, _ in runs.due_runs(tick, NOW)]
    # then: it passed over the held run without waiting, and the next tick queues it
    assert welcome_id not in skipped
    with db.session() as tick:
        assert welcome_id in [run_id for run_id, _ in runs.due_runs(tick, NOW)]
    with db.session() as session:
        assert session.get(ActionRun, welcome_id).status == "queued"
