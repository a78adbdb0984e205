"""`column_insert.insert_rows`: many rows in one statement of one text (PostgreSQL: an array per column),
stored exactly as the ORM stores them, conflicting keys skipped and only the inserted rows returned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import event, select

from plugin.store import column_insert
from plugin.store.models import ActionRun, Shopper, StageTransition

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
