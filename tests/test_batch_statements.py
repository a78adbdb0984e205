"""On PostgreSQL a batch's statements keep one text whatever the batch's size (its key lists are one array
parameter, `Database.among`), so psycopg converts each once and PostgreSQL can prepare it; and every
execution is planned for its own parameters (a generic plan costed while a table was nearly empty would
walk a whole shop's rows for every batch). A batch settles its deliveries with one UPDATE per settlement,
not one per delivery.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis as redis_lib
from sqlalchemy import event, text

from plugin.demo import synthetic as s
from plugin.pipeline import queue
from plugin.pipeline.deliveries import drain_deliveries
from tests.conftest import NOW, REDIS_URL, SHOP
from tests.test_worker_claims import post_orders
from tests.webhook_client import post_webhook


def drain_watched(app, db, listener) -> None:
    """Drain the waiting deliveries with `listener` called before each statement (SQLAlchemy's
    `before_cursor_execute`)."""
    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        with app.app_context():
            drain_deliveries()
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)


def statements_of_a_drain(app, db) -> set[str]:
    seen: set[str] = set()

    def record(_connection, _cursor, statement, _parameters, _context, _executemany):
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE")):
            seen.add(statement)

    drain_watched(app, db, record)
    return seen


def test_a_batch_reads_and_updates_with_the_same_statements_whatever_its_size(app, client, db, shop):
    if db.is_sqlite:
        pytest.skip("PostgreSQL's array parameters; SQLite gets IN lists")
    # given a batch of 3 orders of 3 new shoppers, then one of 9 orders of 9 others
    post_orders(client, [(3000 + n, 300 + n) for n in range(3)], ("orders/create", "orders/paid"))
    small = statements_of_a_drain(app, db)
    post_orders(client, [(4000 + n, 400 + n) for n in range(9)], ("orders/create", "orders/paid"))
    large = statements_of_a_drain(app, db)
    # then the larger batch ran no SELECT or UPDATE text the smaller one did not: its key lists were
    # arrays, not one placeholder per key
    assert large - small == set()
    assert any("= ANY (" in statement for statement in large)


def test_every_execution_is_planned_for_its_parameters(db):
    if db.is_sqlite:
        pytest.skip("a PostgreSQL setting")
    with db.session() as session:
        assert session.execute(text("SHOW plan_cache_mode")).scalar() == "force_custom_plan"


def test_a_batch_settles_its_deliveries_with_one_update_per_settlement(app, client, db, shop):
    """Not one UPDATE per delivery (an executemany runs a statement per row on PostgreSQL): the batch's
    deliveries, all processed at their first attempt, are settled by one statement."""
    from sqlalchemy import select

    from plugin.store.models import Delivery

    post_orders(client, [(5000 + n, 500 + n) for n in range(9)], ("orders/create", "orders/paid"))
    updates: list[tuple[bool, int]] = []

    def record(_connection, _cursor, statement, parameters, _context, executemany):
        if statement.lstrip().upper().startswith("UPDATE DELIVERIES"):
            updates.append((executemany, len(parameters) if executemany else 1))

    drain_watched(app, db, record)
    assert updates == [(False, 1)]
    with db.session() as session:
        settled = session.execute(select(Delivery.status, Delivery.attempts, Delivery.processed_at)).all()
    assert len(settled) == 18
    assert {(status, attempts) for status, attempts, _ in settled} == {("processed", 1)}
    assert None not in {processed_at for _, _, processed_at in settled}


def test_the_claim_walks_the_waiting_index_as_a_plain_index_scan_and_nothing_else_does(app, client, db, shop):
    """A bitmap scan of ix_deliveries_waiting never marks the entries of settled deliveries dead, so every
    claim re-read every delivery settled since the last VACUUM (22,000 index entries a claim in the full
    replay). The claim is planned as an ordered index scan; the batch's other statements plan as usual."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's planner")
    with db.engine.begin() as connection:  # a queue table as a busy day leaves it: 20,000 settled rows
        connection.execute(
            text(
                "INSERT INTO deliveries (webhook_id, shop_domain, topic, received_at, body, status, attempts) "
                "SELECT 'settled-' || n, :shop, 'orders/create', now(), '{}', 'received', 0 "
                "FROM generate_series(1, 20000) AS n"
            ),
            {"shop": SHOP},
        )
        connection.execute(text("UPDATE deliveries SET status = 'processed'"))
    post_orders(client, [(5000 + n, 500 + n) for n in range(4)], ("orders/create",))
    plans: list[str] = []
    settings_after_claim: list[tuple[str, str]] = []

    def explain(_connection, cursor, statement, parameters, _context, executemany):
        if executemany or not statement.lstrip().startswith("SELECT"):
            return
        raw = cursor.connection  # psycopg's own connection: the same transaction, the same settings
        if "FROM deliveries" in statement and "SKIP LOCKED" in statement:
            plans.append("\n".join(row[0] for row in raw.execute("EXPLAIN " + statement, parameters)))
        elif plans and not settings_after_claim and "pg_settings" not in statement:
            settings_after_claim.append(
                raw.execute(
                    "SELECT current_setting('enable_bitmapscan'), current_setting('enable_seqscan')"
                ).fetchone()
            )

    drain_watched(app, db, explain)
    assert plans, "no claim ran"
    assert "Index Scan using ix_deliveries_waiting" in plans[0], plans[0]
    assert "Bitmap" not in plans[0] and "Seq Scan" not in plans[0], plans[0]
    assert settings_after_claim == [("on", "on")]


def test_a_batch_writes_its_changed_shoppers_with_one_update(app, client, db, shop):
    """Not the ORM's flush of one UPDATE per shopper: the book writes the 9 shoppers its orders changed
    with one statement (an array per column on PostgreSQL, an executemany on SQLite), and they read
    back as the orders made them."""
    from sqlalchemy import select

    from plugin.store.models import Shopper

    post_orders(client, [(6000 + n, 600 + n) for n in range(9)], ("orders/create", "orders/paid"))
    updates: list[int] = []

    def record(_connection, _cursor, statement, parameters, _context, executemany):
        if statement.lstrip().upper().startswith("UPDATE SHOPPERS"):
            updates.append(len(parameters) if executemany else 1)

    drain_watched(app, db, record)
    assert updates == ([9] if db.is_sqlite else [1])
    with db.session() as session:
        stored = session.execute(select(Shopper.customer_id, Shopper.orders_count, Shopper.stage)).all()
    assert sorted(stored) == [(600 + n, 1, "first_time") for n in range(9)]


def test_a_batch_re_dating_many_shoppers_stage_entries_locks_their_runs_in_one_read(app, client, db, shop):
    """An older order arriving late re-dates a shopper's stage entry, and the plays of the entry seen
    before are superseded once locked. Those runs are locked by the batch's one read of its shoppers'
    runs, not by one read per shopper."""
    from datetime import timedelta
    from decimal import Decimal

    from sqlalchemy import func, select

    from plugin.demo import synthetic as s
    from plugin.store.models import ActionRun
    from tests.conftest import NOW
    from tests.webhook_client import post_webhook

    if db.is_sqlite:
        pytest.skip("row locks: PostgreSQL (SQLite has one writer)")
    customers = range(610, 618)

    def post_order(order_id: int, customer_id: int, days_ago: int, total: str) -> None:
        body = s.order_payload(
            order_id,
            customer_id,
            NOW - timedelta(days=days_ago),
            Decimal(total),
            email=f"c{customer_id}@x.com",
        )
        assert post_webhook(client, "orders/paid", body, webhook_id=f"re-{order_id}").status_code == 200

    def vip_rewards(status: tuple[str, ...]) -> int:
        with db.session() as session:
            return session.scalar(
                select(func.count(func.distinct(ActionRun.shopper_id))).where(
                    ActionRun.play == "vip_reward", ActionRun.status.in_(status)
                )
            )

    # given: shoppers loyal from their fourth order, their VIP rewards pending under that entry
    for n, customer_id in enumerate(customers):
        for k, days_ago in enumerate((21, 16, 11, 6)):
            post_order(6000 + 10 * n + k, customer_id, days_ago, "25.00")
    with app.app_context():
        drain_deliveries()
    assert vip_rewards(("scheduled", "waiting", "queued")) == len(customers)
    # when: an older, larger order of each arrives in one batch: seen whole, each was loyal from 2 orders
    for n, customer_id in enumerate(customers):
        post_order(6000 + 10 * n + 9, customer_id, 31, "600.00")
    locking_reads: list[str] = []

    def record(_connection, _cursor, statement, _parameters, _context, _executemany):
        if "FROM action_runs" in statement and "FOR UPDATE" in statement:
            locking_reads.append(statement)

    drain_watched(app, db, record)
    # then: each reward of the old entry was superseded, with one locking read of runs for the batch
    assert vip_rewards(("cancelled",)) == len(customers)
    assert len(locking_reads) == 1


class CountingConnection(redis_lib.Connection):
    """A Redis connection that counts what it sends: one packed command per round trip (a pipeline's
    commands go in one)."""

    sent = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sent += 1
        return super().send_packed_command(command, check_health)


def redis_round_trips_of_a_drain(app) -> int:
    counting = redis_lib.Redis(
        connection_pool=redis_lib.ConnectionPool.from_url(REDIS_URL, connection_class=CountingConnection)
    )
    app.extensions["lifecycle.redis"], real = counting, app.extensions["lifecycle.redis"]
    CountingConnection.sent = 0
    try:
        with app.app_context():
            drain_deliveries()
    finally:
        app.extensions["lifecycle.redis"] = real
        counting.close()
    return CountingConnection.sent


def consenting_customers(client, customer_ids) -> None:
    for customer_id in customer_ids:
        email = f"c{customer_id}@example.com"
        signed_up = NOW - timedelta(hours=1)
        post_webhook(client, "customers/create", s.customer_payload(customer_id, email, signed_up))
        consent = s.consent_payload(customer_id, email, "subscribed", signed_up + timedelta(minutes=1))
        post_webhook(client, "customers_email_marketing_consent/update", consent)


def test_a_batch_queues_its_runs_in_as_many_redis_round_trips_whatever_their_number(
    app, client, db, shop, redis_connection
):
    # given: 2 consenting new customers, drained (each gets a welcome queued), then 8 more
    consenting_customers(client, range(500, 502))
    few = redis_round_trips_of_a_drain(app)
    consenting_customers(client, range(510, 518))
    many = redis_round_trips_of_a_drain(app)
    # then: each batch's welcomes were queued to workers, and the one with four times the runs took no
    # more round trips to Redis (one read of which jobs exist, one MULTI that queues them)
    jobs = queue.get_queue(redis_connection, queue.RUNS).job_ids
    assert len(jobs) == 10
    assert many == few
