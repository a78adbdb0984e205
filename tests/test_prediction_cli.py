"""`lifecycle predict`, the forecast fields of `lifecycle customers --json`, and `lifecycle lift`, driven as
a merchant would (environment, arguments, JSON out)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from plugin.core.lift import newcombe_interval
from plugin.store.models import ActionRun, Order, Rule, Shopper
from tests.conftest import NOW, SHOP
from tests.test_predictions import END_DAY, simulated, store_orders

DAY = timedelta(days=1)


def day_after_history() -> str:
    return (datetime(1970, 1, 1, 9, tzinfo=UTC) + timedelta(days=END_DAY + 1)).isoformat()


def test_predict_fits_prints_the_model_and_a_holdout_check(run, db, shop):
    # given: a year of simulated orders, and a shopper with none
    store_orders(db, shop.id, simulated(2000))
    with db.session() as session:
        session.add(Shopper(shop_id=shop.id, customer_id=10**9, stage="prospect", tag_events={}))
    # when
    report = json.loads(run("predict", "--shop", SHOP, "--now", day_after_history(), "--json"))
    # then: the model, its parameters with the time unit, shoppers used, and forecast against actual
    assert report["fitted"] is True and report["reason"] is None
    assert report["cutoff_day"] == "2025-11-08"
    assert set(report["bg_nbd"]) == {"r", "alpha", "a", "b", "unit", "log_likelihood"}
    assert report["bg_nbd"]["unit"] == "days" and report["bg_nbd"]["log_likelihood"] < 0
    assert report["gamma_gamma"]["p"] == pytest.approx(6.0, rel=0.3)
    assert report["shoppers"] == 2000 and report["repeat_buyers"] > 100
    holdout = report["holdout"]
    assert holdout["end_day"] == "2025-11-08" and holdout["calibration_end_day"] == "2025-07-31"
    assert holdout["actual_repeat_orders"] > 100
    assert holdout["forecast_repeat_orders"] == pytest.approx(holdout["actual_repeat_orders"], rel=0.2)
    # and: the text form names every figure
    text = run("predict", "--shop", SHOP, "--now", day_after_history())
    assert "BG/NBD: r = " in text and "(days)" in text and "Gamma-Gamma: p = " in text
    assert "shoppers used: 2000" in text and "holdout check: fitted on orders up to 2025-07-31" in text
    # and: customers --json carries each buyer's forecast, null for the shopper who never ordered
    customers = {c["id"]: c for c in json.loads(run("customers", "--shop", SHOP, "--json"))}
    fields = ("p_alive", "expected_orders_90d", "predicted_next_order_at", "predicted_clv_365d")
    assert all(name in customers[10**9] and customers[10**9][name] is None for name in fields)
    buyers = [c for c in customers.values() if c["id"] != 10**9]
    assert all(0 <= c["p_alive"] <= 1 and c["expected_orders_90d"] >= 0 for c in buyers)
    repeat = [c for c in buyers if c["predicted_next_order_at"]]
    assert repeat and all(c["predicted_clv_365d"] > 0 for c in repeat)
    assert datetime.fromisoformat(repeat[0]["predicted_next_order_at"]).tzinfo is not None


def test_predict_on_a_new_shop_says_why_it_keeps_the_fixed_thresholds(run, shop):
    report = json.loads(run("predict", "--shop", SHOP, "--json"))
    assert report["fitted"] is False and "bg_nbd" not in report
    assert report["reason"] == "0 days of order history, the model needs at least 90"
    assert "not fitted: 0 days of order history" in run("predict", "--shop", SHOP)


def add_runs(db, shop_id: int, rule: Rule, arm: str, count: int, converting: int, *, due: datetime) -> None:
    """`count` runs of the rule due at `due` (one shopper each); the first `converting` shoppers order
    50.00 three days later, one more orders eight days later (outside the window)."""
    with db.session() as session:
        base = session.scalar(select(Shopper.customer_id).order_by(Shopper.customer_id.desc()).limit(1)) or 0
        for i in range(count):
            customer = base + 1 + i
            shopper = Shopper(shop_id=shop_id, customer_id=customer, stage="at_risk", tag_events={})
            session.add(shopper)
            session.flush()
            status = "held_out" if arm == "held_out" else ("failed" if i % 5 == 4 else "succeeded")
            session.add(
                ActionRun(
                    shop_id=shop_id, rule_id=rule.id, play=rule.key, action="send_email", shopper_id=shopper.id,
                    cycle=f"at_risk:{customer}", idempotency_key=f"{shop_id}:{rule.key}:{shopper.id}:x",
                    trigger="stage", context={}, params={}, priority=50, marketing=True, status=status,
                    created_at=due, due_at=due, attempts=0,
                )
            )  # fmt: skip
            later = 3 * DAY if i < converting else (8 * DAY if i == converting else None)
            if later:
                session.add(
                    Order(
                        shop_id=shop_id, order_id=customer * 10, customer_id=customer, placed_at=due + later,
                        total_price=Decimal("50.00"), refunded=Decimal(0), line_items=[], discount_codes=[],
                    )
                )  # fmt: skip


def test_lift_compares_the_assigned_arm_with_the_held_out_arm(run, db, shop):
    # given: the win-back with a 20 % hold-out group; 80 runs assigned to send (a fifth of them failed:
    # intent-to-treat counts them), 40 held out, and 10 runs too recent for their window to have closed
    with db.session() as session:
        rule = session.scalar(select(Rule).where(Rule.shop_id == shop.id, Rule.key == "win_back"))
        rule.definition = {**rule.definition, "holdout_percent": 20}
    add_runs(db, shop.id, rule, "sent", 80, 20, due=NOW - 30 * DAY)
    add_runs(db, shop.id, rule, "held_out", 40, 4, due=NOW - 30 * DAY)
    add_runs(db, shop.id, rule, "sent", 10, 10, due=NOW - 3 * DAY)
    # when
    measured = json.loads(run("lift", "--shop", SHOP, "--json"))
    # then
    assert [m["rule"] for m in measured] == ["win_back"]
    row = measured[0]
    assert row["sent"] == {"runs": 80, "conversions": 20, "revenue": 1000.0}
    assert row["held_out"] == {"runs": 40, "conversions": 4, "revenue": 200.0}
    low, high = newcombe_interval(20, 80, 4, 40)
    assert row["lift"]["absolute_lift"] == pytest.approx(0.15)
    assert (row["lift"]["low"], row["lift"]["high"]) == pytest.approx((low, high))
    assert row["lift"]["incremental_revenue"] == pytest.approx(1000 - 80 * 200 / 40)
    text = run("lift", "--shop", SHOP)
    assert "win_back (20 % held out): sent 20/80, held out 4/40 ordered within 7 days" in text
    assert "lift +15.0% (95 % CI" in text


def test_lift_says_not_enough_data_yet_with_few_runs(run, db, shop):
    with db.session() as session:
        rule = session.scalar(select(Rule).where(Rule.shop_id == shop.id, Rule.key == "win_back"))
        rule.definition = {**rule.definition, "holdout_percent": 10}
    add_runs(db, shop.id, rule, "sent", 12, 3, due=NOW - 30 * DAY)
    add_runs(db, shop.id, rule, "held_out", 2, 0, due=NOW - 30 * DAY)
    row = json.loads(run("lift", "--shop", SHOP, "--json"))[0]
    assert row["lift"] is None
    assert row["reason"].startswith("not enough data yet: 12 sent and 2 held out")
    assert "not enough data yet" in run("lift", "--shop", SHOP)
