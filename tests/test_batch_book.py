"""A batch applies its order, customer and consent deliveries against a book of their shoppers held in
memory (`store.shopper_book`), and the rest one at a time against the database (issue 13, point 2): both
must give what one delivery per transaction gives, down to the transitions and the runs; a refund, which
names only its order, reaches the buyer of the stored order in the same book as the buyer's next order.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from plugin.demo import synthetic as s
from plugin.pipeline.batch import apply_batch
from plugin.pipeline.deliveries import process_batch
from plugin.store import deliveries
from plugin.store.models import ActionRun, Shopper, StageTransition
from tests.conftest import NOW
from tests.webhook_client import post_webhook

DAY, HOUR = timedelta(days=1), timedelta(hours=1)


def post(client, topic: str, body: dict) -> None:
    assert post_webhook(client, topic, body).status_code == 200


def drain_in_one_batch(app) -> dict[int, str]:
    with app.app_context():
        return process_batch(limit=500)


def shopper_row(db, customer_id: int) -> tuple:
    with db.session() as session:
        shopper = session.scalar(select(Shopper).where(Shopper.customer_id == customer_id))
        transitions = session.execute(
            select(StageTransition.from_stage, StageTransition.to_stage)
            .where(StageTransition.shopper_id == shopper.id)
            .order_by(StageTransition.id)
        ).all()
        runs = session.execute(
            select(ActionRun.play, ActionRun.cycle, ActionRun.status)
            .where(ActionRun.shopper_id == shopper.id, ActionRun.play != "stage_sync")
            .order_by(ActionRun.play, ActionRun.cycle)
        ).all()
        return shopper.orders_count, shopper.total_spent, shopper.stage, transitions, runs


def three_orders(client, customer_id: int, first_order_id: int) -> None:
    email = f"c{customer_id}@example.com"
    post(client, "customers/create", s.customer_payload(customer_id, email, created_at=NOW - 90 * DAY))
    consent = s.consent_payload(customer_id, email, "SUBSCRIBED", NOW - 89 * DAY)
    post(client, "customers_email_marketing_consent/update", consent)
    for step, days_ago in enumerate((60, 30, 1)):  # the last recent enough for its thank-you
        placed = NOW - days_ago * DAY
        body = s.order_payload(first_order_id + step, customer_id, placed, Decimal("30.00"), email=email)
        post(client, "orders/create", body)
        post(client, "orders/paid", body)


def anonymous(runs: list[tuple], first_order_id: int) -> list[tuple]:
    """Runs with the order ids of their cycles replaced by the order's place in the history."""
    named = {str(first_order_id + step): f"order#{step}" for step in range(3)}
    return [(play, named.get(cycle, cycle), status) for play, cycle, status in runs]


def test_a_shoppers_whole_history_in_one_batch_gives_what_one_delivery_a_batch_gives(app, client, db, shop):
    three_orders(client, 501, 9001)
    settled = drain_in_one_batch(app)
    assert len(settled) == 8 and set(settled.values()) == {"processed"}
    three_orders(client, 502, 9101)
    with app.app_context():
        while process_batch(limit=1):
            pass
    in_one, one_by_one = shopper_row(db, 501), shopper_row(db, 502)
    assert in_one[:3] == (3, Decimal("90.00"), "repeat")
    assert in_one[3] == [(None, "prospect"), ("prospect", "first_time"), ("first_time", "repeat")]
    assert in_one[:4] == one_by_one[:4]
    assert anonymous(in_one[4], 9001) == anonymous(one_by_one[4], 9101)
    assert any(play == "thank_you" for play, _, _ in in_one[4])


def test_a_refund_and_its_buyers_next_order_in_one_batch_both_count(app, client, db, shop):
    email = "c601@example.com"
    first = s.order_payload(9201, 601, NOW - 30 * DAY, Decimal("50.00"), email=email)
    post(client, "orders/paid", first)
    drain_in_one_batch(app)
    post(client, "refunds/create", s.refund_payload(77, 9201, Decimal("20.00"), NOW - 10 * DAY))
    second = s.order_payload(9202, 601, NOW - 5 * DAY, Decimal("40.00"), email=email)
    post(client, "orders/paid", second)
    assert set(drain_in_one_batch(app).values()) == {"processed"}
    count, spent, stage, _, _ = shopper_row(db, 601)
    assert (count, spent, stage) == (2, Decimal("70.00"), "repeat")


def test_a_consent_releasing_a_run_planned_earlier_in_the_same_batch_commits_with_it(app, client, db, shop):
    # given: a new customer's order, then their consent, in one batch: the order's marketing plays wait
    # for consent, and the consent releases them before the batch has written them (no id yet)
    email = "c701@example.com"
    post(client, "customers/create", s.customer_payload(701, email, created_at=NOW - 2 * DAY))
    post(client, "orders/paid", s.order_payload(9301, 701, NOW - 3 * HOUR, Decimal("30.00"), email=email))
    consent = s.consent_payload(701, email, "SUBSCRIBED", NOW - 2 * HOUR)
    post(client, "customers_email_marketing_consent/update", consent)
    # when: applied in one transaction (not through `process_batch`, whose split would hide a raise)
    with app.app_context(), db.session() as session:
        claimed = deliveries.claim_due_deliveries(session, NOW, 500)
        result = apply_batch(db, session, claimed, NOW, app.config["CONSENT_WAIT"])
    # then: all three processed, and the released plays due now queued with the batch
    assert len(result.settled) == 3 and set(result.settled.values()) == {"processed"}
    with db.session() as session:
        released = session.execute(
            select(ActionRun.id, ActionRun.play, ActionRun.status).where(
                ActionRun.marketing.is_(True), ActionRun.play != "stage_sync"
            )
        ).all()
    assert released and all(status in ("queued", "scheduled") for _, _, status in released)
    assert {run_id for run_id, _, status in released if status == "queued"} == {
        run_id for run_id, _ in result.queued_runs
    }
    assert result.queued_runs
