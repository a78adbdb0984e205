"""Rules as data that cannot break planning: typed condition values, one operator evaluated, a rule that
still raises planned as a failed run, and `marketing` fixed by the play (pure core, plain data)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from marshmallow import ValidationError

from plugin.core.rules import DEFAULT_RULES, Profile, Trigger, condition_holds, load_rule, plan_runs

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ANN = Profile(
    shopper_id=7,
    orders_count=3,
    total_spent=Decimal("180.50"),
    stage="repeat",
    accepts_marketing=True,
    locale="it",
    last_order_at=NOW - timedelta(days=40),
    tags=("vip", "wholesale"),
)


def rule(*conditions, **changes) -> dict:
    return load_rule(
        dict(
            key="custom",
            name="Custom",
            trigger="order_paid",
            action="send_email",
            params={"template": "thank_you"},
            conditions=list(conditions),
            **changes,
        )
    )


def cond(field, op, value) -> dict:
    return {"field": field, "op": op, "value": value}


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (cond("tags", "==", "vip"), "tags takes contains"),
        (cond("tags", "contains", 3), "tags contains needs a text"),
        (cond("orders_count", ">", "lots"), "orders_count > needs a whole number"),
        (cond("orders_count", ">=", True), "orders_count >= needs a whole number"),
        (cond("orders_count", "in", 3), "orders_count in needs a list"),
        (cond("total_spent", ">=", "a lot"), "total_spent >= needs an amount"),
        (cond("total_spent", ">=", "NaN"), "total_spent >= needs an amount"),
        (cond("stage", "==", "gold"), "stage == needs one of prospect"),
        (cond("stage", ">", "loyal"), "stage takes ==, !=, in"),
        (cond("locale", "==", ["it"]), "locale == needs a text"),
        (cond("accepts_marketing", "==", "yes"), "accepts_marketing == needs true or false"),
    ],
)
def test_a_condition_value_is_typed_by_its_field(condition, message):
    with pytest.raises(ValidationError) as refused:
        rule(condition)
    errors = refused.value.messages["conditions"][0]
    assert any(message in text for texts in errors.values() for text in texts), errors


@pytest.mark.parametrize(
    ("condition", "holds"),
    [
        (cond("tags", "contains", "vip"), True),
        (cond("tags", "contains", "retail"), False),
        (cond("orders_count", ">=", 3), True),
        (cond("orders_count", "in", [1, 2]), False),
        (cond("total_spent", ">", "180.49"), True),
        (cond("total_spent", "<=", 100), False),
        (cond("stage", "in", ["repeat", "loyal"]), True),
        (cond("locale", "!=", "en"), True),
        (cond("days_since_last_order", ">=", 30), True),
        (cond("accepts_marketing", "==", True), True),
    ],
)
def test_typed_conditions_hold_as_written(condition, holds):
    [loaded] = rule(condition)["conditions"]
    assert condition_holds(loaded, ANN, NOW) is holds


def test_a_condition_evaluates_only_its_own_operator():
    # before: every comparison was computed first, so `tags == …` raised TypeError on `tuple > str`
    assert condition_holds(cond("tags", "==", "vip"), ANN, NOW) is False
    assert condition_holds(cond("stage", "!=", "loyal"), ANN, NOW) is True


def trigger() -> Trigger:
    return Trigger("order_paid", NOW, "order:11", "orders/paid", {"order_id": 11})


def test_a_stored_rule_that_raises_is_planned_as_a_failed_run_with_its_reason():
    good = rule()
    bad = dict(good, key="broken", conditions=[cond("orders_count", ">", "lots")])  # never through the schema
    planned = plan_runs(1, [(1, bad), (2, good)], ANN, trigger(), NOW)
    by_play = {run.play: run for run in planned}
    assert by_play["custom"].error is None
    assert "could not be evaluated" in by_play["broken"].error
    assert "InvalidOperation" in by_play["broken"].error


def test_marketing_is_the_plays_not_the_rules_field():
    assert rule(marketing=False)["marketing"] is True  # posted `marketing: false` is ignored
    defaults = {r["key"]: load_rule(r)["marketing"] for r in DEFAULT_RULES}
    assert [key for key, marketing in defaults.items() if not marketing] == ["back_in_stock"]
    # a stored welcome that says it is not marketing is still planned as marketing, and needs consent:
    # without it, the run waits for consent (issue 13) instead of going
    welcome = load_rule(next(r for r in DEFAULT_RULES if r["key"] == "welcome"))
    stored = dict(welcome, marketing=False, trigger="order_paid", conditions=[])
    [run] = plan_runs(1, [(1, stored)], ANN, trigger(), NOW)
    assert run.marketing is True
    [waiting] = plan_runs(1, [(1, stored)], Profile(shopper_id=8), trigger(), NOW)
    assert (waiting.marketing, waiting.gate.status) == (True, "waiting")
    # the asked-for play stays transactional only while it is that play: moved to a stage, it is marketing
    asked = load_rule(dict(next(r for r in DEFAULT_RULES if r["key"] == "back_in_stock")))
    assert load_rule(dict(asked, trigger="stage:at_risk"))["marketing"] is True
