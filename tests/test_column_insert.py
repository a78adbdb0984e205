"""`column_insert.insert_rows`: many rows in one statement of one text (PostgreSQL: an array per column),
stored exactly as the ORM stores them, conflicting keys skipped and only the inserted rows returned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import event, select

from plugin.store import column_insert
from plugin.store.models import ActionRun, Order, Shopper, StageTransition

AT = datetime(2026, 10, 3, 4, 5, 6, tzinfo=UTC)


def _run(shop_id: int, shopper_id: int, key: str, **changes) -> dict:
    row = dict(
        shop_id=shop_id,
        rule_id=None,
        play="thank_you",
        action="send_email",
        shopper_id=shopper_id,
        recipient_email=None,
        cycle="order-1",
        idempotency_key=key,
        trigger="orders/paid",
        context={"order_id": 1, "total": "12.50", "first_order": True},
        params={"template": "thank_you", "tags": []},
        priority=70,
        marketing=True,
        status="scheduled",
        created_at=AT,
        due_at=AT + timedelta(hours=2),
        wait_until=None,
        event_at=AT - timedelta(minutes=3),
    )
    row.update(changes)
    return row


def _order(shop_id: int, order_id: int, **changes) -> dict:
    row = dict(
        shop_id=shop_id,
        order_id=order_id,
        customer_id=9,
        name=f"#{order_id}",
        placed_at=AT,
        source_updated_at=AT,
        cancelled_at=None,
        currency="EUR",
        total_price=Decimal("12.50"),
        refunded=Decimal(0),
        financial_status="paid",
        fulfillment_status=None,
        checkout_token=None,
        line_items=[{"product_id": 5, "quantity": 1}],
        discount_codes=["WELCOME"],
    )
    row.update(changes)
    return row


def test_rows_are_stored_as_the_orm_stores_them_and_taken_keys_are_skipped(db, shop):
    with db.session() as session:
        shopper = Shopper(shop_id=shop.id, customer_id=77, stage="prospect", tag_events=[])
        session.add(shopper)
        session.flush()
        session.add(ActionRun(**_run(shop.id, shopper.id, "by-the-orm")))
        session.flush()
        shopper_id = shopper.id
    statements: list[str] = []

    def record(_connection, _cursor, statement, *_rest):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.session() as session:
            inserted = column_insert.insert_rows(
                db,
                session,
                ActionRun.__table__,
                [
                    _run(shop.id, shopper_id, "new-1"),
                    _run(shop.id, shopper_id, "by-the-orm", status="queued"),  # taken: skipped
                    _run(shop.id, None, "new-2", recipient_email="a@example.com", wait_until=AT),
                ],
                skip_conflicts_on=("idempotency_key",),
                returning=("id", "idempotency_key"),
            )
            column_insert.insert_rows(
                db,
                session,
                StageTransition.__table__,
                [
                    dict(
                        shop_id=shop.id,
                        shopper_id=shopper_id,
                        from_stage=None,
                        to_stage="prospect",
                        at=AT,
                        reason="known, no order",
                        cause="customers/create",
                    )
                ],
            )
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert sorted(key for _id, key in inserted) == ["new-1", "new-2"]
    with db.session() as session:
        runs = {run.idempotency_key: run for run in session.scalars(select(ActionRun))}
        transition = session.scalars(select(StageTransition)).one()
        assert runs["by-the-orm"].status == "scheduled"  # left alone
        orm, ours = runs["by-the-orm"], runs["new-1"]
        for column in ("context", "params", "created_at", "due_at", "event_at", "marketing", "priority"):
            assert getattr(ours, column) == getattr(orm, column), column
        assert ours.created_at == AT and ours.created_at.tzinfo is not None
        assert ours.attempts == 0  # a column default the rows leave out, filled as an ORM insert fills it
        assert runs["new-2"].shopper_id is None and runs["new-2"].wait_until == AT
        assert (transition.from_stage, transition.to_stage, transition.at) == (None, "prospect", AT)
    if not db.is_sqlite:  # one statement per table, whatever the number of rows
        inserts = [s for s in statements if s.startswith("INSERT INTO action_runs")]
        assert len(inserts) == 1 and "unnest(" in inserts[0]


def test_an_upsert_updates_older_and_undated_rows_and_never_a_newer_one(db, shop):
    """The orders' staleness guard in one statement: a stored row whose `source_updated_at` is later than
    the given row's keeps its values; an older or undated one takes the given row's."""

    def order(order_id: int, total: str, updated_at: datetime | None) -> dict:
        return _order(shop.id, order_id, total_price=Decimal(total), source_updated_at=updated_at)

    upsert = column_insert.Upsert(
        ("shop_id", "order_id"),
        ("total_price", "source_updated_at", "line_items"),
        newer_by="source_updated_at",
    )
    later = AT + timedelta(hours=1)
    with db.session() as session:  # stored: 1 newer, 2 older, 3 undated; 4 is new
        column_insert.insert_rows(
            db, session, Order.__table__, [order(1, "10", later), order(2, "20", AT), order(3, "30", None)]
        )
    with db.session() as session:
        column_insert.insert_rows(
            db,
            session,
            Order.__table__,
            [order(n, f"{n}00", AT + timedelta(minutes=30)) for n in (1, 2, 3, 4)],
            upsert=upsert,
        )
    with db.session() as session:
        stored = {
            row.order_id: (row.total_price, row.source_updated_at, row.line_items)
            for row in session.scalars(select(Order).where(Order.shop_id == shop.id))
        }
    half = AT + timedelta(minutes=30)
    assert stored == {
        1: (Decimal("10.00"), later, [{"product_id": 5, "quantity": 1}]),  # newer: kept
        2: (Decimal("200.00"), half, [{"product_id": 5, "quantity": 1}]),
        3: (Decimal("300.00"), half, [{"product_id": 5, "quantity": 1}]),
        4: (Decimal("400.00"), half, [{"product_id": 5, "quantity": 1}]),
    }


def test_a_numeric_column_may_mix_ints_and_decimals_in_one_statement(db, shop):
    """psycopg refuses a list mixing int and Decimal; a batch's free order (0) beside a paid one
    (Decimal) must still go in as one statement."""
    rows = [
        _order(shop.id, n, total_price=total, refunded=0)
        for n, total in ((1, Decimal("19.90")), (2, 0), (3, Decimal(0)))
    ]
    upsert = column_insert.Upsert(("shop_id", "order_id"), ("total_price",), newer_by="source_updated_at")
    with db.session() as session:
        column_insert.insert_rows(db, session, Order.__table__, rows, upsert=upsert)
    with db.session() as session:
        stored = dict(
            session.execute(select(Order.order_id, Order.total_price).where(Order.shop_id == shop.id)).all()
        )
    assert stored == {1: Decimal("19.90"), 2: Decimal("0.00"), 3: Decimal("0.00")}


def test_update_rows_sets_the_given_columns_of_the_rows_with_those_keys_in_one_statement(db, shop):
    with db.session() as session:
        shoppers = [Shopper(shop_id=shop.id, customer_id=n, email=f"s{n}@example.com") for n in (1, 2, 3)]
        session.add_all(shoppers)
        session.flush()
        ids = [shopper.id for shopper in shoppers]
    vip = {"vip": {"on": True, "at": "2026-10-03T04:05:06+00:00"}}
    rows = [  # not in key order; a JSON, an aware datetime, NULLs, and an int beside a Decimal
        dict(
            id=ids[2],
            orders_count=5,
            total_spent=Decimal("80.10"),
            tag_events=vip,
            last_order_at=AT,
            stage="repeat",
            email=None,
        ),
        dict(
            id=ids[1],
            orders_count=2,
            total_spent=0,
            tag_events={},
            last_order_at=None,
            stage="first_time",
            email="new@example.com",
        ),
    ]
    updates = []

    def record(_connection, _cursor, statement, _parameters, _context, _executemany):
        if statement.lstrip().upper().startswith("UPDATE"):
            updates.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.session() as session:
            updated = column_insert.update_rows(db, session, Shopper.__table__, rows)
            gone = column_insert.update_rows(
                db, session, Shopper.__table__, [dict(id=ids[2] + 100, stage="lapsed")]
            )
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert (updated, gone) == (2, 0)
    assert len(updates) == 2  # one statement each
    with db.session() as session:
        stored = {
            s.customer_id: (s.orders_count, s.total_spent, s.tag_events, s.last_order_at, s.stage, s.email)
            for s in session.scalars(select(Shopper).where(Shopper.shop_id == shop.id))
        }
    assert stored == {
        1: (0, Decimal("0.00"), {}, None, "prospect", "s1@example.com"),
        2: (2, Decimal("0.00"), {}, None, "first_time", "new@example.com"),
        3: (5, Decimal("80.10"), vip, AT, "repeat", None),
    }
