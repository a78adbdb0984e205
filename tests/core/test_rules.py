"""Rules as data: what RuleSchema refuses (by field), how each condition evaluates, and what plan_runs plans."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal

import pytest
from marshmallow import ValidationError

from plugin.core.rules import (
    DEFAULT_RULES,
    MAX_TRIGGER_AGE,
    Profile,
    Trigger,
    condition_holds,
    is_held_out,
    load_rule,
    plan_runs,
)
from tests.conftest import NOW

DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
SHOP_ID = 3
WIN_BACK = {
    "key": "win_back_custom",
    "name": "Win them back",
    "trigger": "stage:at_risk",
    "action": "send_email",
    "params": {"template": "win_back"},
}
SHOPPER = Profile(
    shopper_id=7,
    orders_count=3,
    total_spent=Decimal("250.00"),
    stage="repeat",
    accepts_marketing=True,
    locale="it",
    last_order_at=NOW - 40 * DAY,
    tags=("vip", "wholesale"),
    email="ada@example.com",
)
NOBODY_YET = Profile(shopper_id=8, email="bo@example.com", accepts_marketing=True)  # no order, locale, tags


def default_rule(play, **changes):
    """A default rule, validated as a stored one is, with `changes` applied before validation."""
    return load_rule({**next(rule for rule in DEFAULT_RULES if rule["key"] == play), **changes})


def trigger(name, at=NOW, cycle="c1", source="orders/paid", **context):
    return Trigger(name=name, at=at, cycle=cycle, source=source, context=context)


def load_or_refuse(data):
    """The validated rule and None, or None and the schema's messages."""
    try:
        return load_rule(data), None
    except ValidationError as refused:
        return None, refused.messages


def error_paths(messages, prefix=()):
    """Every (field, …, subfield) path that carries an error message."""
    if isinstance(messages, dict):
        return {path for key, value in messages.items() for path in error_paths(value, (*prefix, key))}
    return {prefix}


# --- RuleSchema: errors by field ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"trigger": "stage:vip"}, ("trigger",)),
        ({"trigger": "orders/paid"}, ("trigger",)),
        ({"trigger": ""}, ("trigger",)),
        ({"conditions": [{"field": "age", "op": "==", "value": 1}]}, ("conditions", 0, "field")),
        ({"conditions": [{"field": "orders_count", "op": "=~", "value": 1}]}, ("conditions", 0, "op")),
        ({"conditions": [{"field": "orders_count", "op": "=="}]}, ("conditions", 0, "value")),
        ({"conditions": [{"op": "==", "value": 1}]}, ("conditions", 0, "field")),
        (
            {
                "conditions": [
                    {"field": "stage", "op": "==", "value": "loyal"},
                    {"field": "x", "op": "==", "value": 1},
                ]
            },
            ("conditions", 1, "field"),
        ),
        ({"conditions": ["orders_count == 0"]}, ("conditions", 0, "_schema")),
        ({"delay_minutes": -1}, ("delay_minutes",)),
        ({"delay_minutes": 60 * 24 * 90 + 1}, ("delay_minutes",)),
        (
            {"params": {"template": "win_back", "discount": {"percent": 0, "valid_days": 14}}},
            ("params", "discount", "percent"),
        ),
        (
            {"params": {"template": "win_back", "discount": {"percent": 91, "valid_days": 14}}},
            ("params", "discount", "percent"),
        ),
        (
            {"params": {"template": "win_back", "discount": {"percent": 20, "valid_days": 0}}},
            ("params", "discount", "valid_days"),
        ),
        (
            {"params": {"template": "win_back", "discount": {"percent": 20, "valid_days": 366}}},
            ("params", "discount", "valid_days"),
        ),
        (
            {"params": {"template": "win_back", "discount": {"percent": 20}}},
            ("params", "discount", "valid_days"),
        ),
        ({"holdout_percent": -1}, ("holdout_percent",)),
        ({"holdout_percent": 91}, ("holdout_percent",)),
        ({"priority": -1}, ("priority",)),
        ({"priority": 101}, ("priority",)),
        ({"key": "Win-Back"}, ("key",)),
        ({"key": "w"}, ("key",)),
        ({"name": ""}, ("name",)),
        ({"action": "send_sms"}, ("action",)),
        ({"params": {"template": "birthday"}}, ("params", "template")),
        ({"params": {}}, ("params",)),  # an email needs a template
        ({"action": "tag_customer", "params": {"tags": []}}, ("params",)),  # a tagging rule needs a tag
    ],
)
def test_rule_schema_refuses_by_field(changes, path):
    with pytest.raises(ValidationError) as refused:
        load_rule({**WIN_BACK, **changes})
    assert path in error_paths(refused.value.messages)


@pytest.mark.parametrize(
    "changes",
    [
        {"delay_minutes": 0},
        {"delay_minutes": 60 * 24 * 90},
        {"params": {"template": "win_back", "discount": {"percent": 1, "valid_days": 1}}},
        {"params": {"template": "win_back", "discount": {"percent": 90, "valid_days": 365}}},
        {"params": {"template": "win_back", "discount": None}},
        {"holdout_percent": 0},
        {"holdout_percent": 90},
        {"priority": 0},
        {"priority": 100},
        {"trigger": "checkout_started"},
        {"trigger": "stage:lapsed"},
        {"action": "tag_customer", "params": {"tags": ["lifecycle:lapsed"]}},
        {"conditions": [{"field": "orders_count", "op": ">=", "value": 2}]},
    ],
)
def test_rule_schema_accepts_the_bounds(changes):
    assert load_rule({**WIN_BACK, **changes})["key"] == "win_back_custom"


def test_rule_schema_fills_the_defaults():
    rule = load_rule(WIN_BACK)
    assert (
        rule["conditions"],
        rule["delay_minutes"],
        rule["priority"],
        rule["enabled"],
        rule["holdout_percent"],
    ) == (
        [],
        0,
        50,
        True,
        0,
    )


@pytest.mark.parametrize("rule", DEFAULT_RULES, ids=lambda rule: rule["key"])
def test_every_default_rule_is_valid(rule):
    assert load_rule(rule)["key"] == rule["key"]


# --- conditions: each operator, each field of the vocabulary ------------------------------------------


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        ("orders_count", "==", 3, True),
        ("orders_count", "==", 2, False),
        ("orders_count", "!=", 2, True),
        ("orders_count", "!=", 3, False),
        ("orders_count", ">", 2, True),
        ("orders_count", ">", 3, False),
        ("orders_count", ">=", 3, True),
        ("orders_count", ">=", 4, False),
        ("orders_count", "<", 4, True),
        ("orders_count", "<", 3, False),
        ("orders_count", "<=", 3, True),
        ("orders_count", "<=", 2, False),
        ("orders_count", "in", [1, 3, 5], True),
        ("orders_count", "in", [1, 2], False),
        ("total_spent", "==", 250, True),
        ("total_spent", "==", 250.01, False),
        ("total_spent", "!=", 250, False),
        ("total_spent", ">", 249.99, True),
        ("total_spent", ">", 250, False),
        ("total_spent", ">=", 250, True),
        ("total_spent", ">=", 250.01, False),
        ("total_spent", "<", 250.01, True),
        ("total_spent", "<", 250, False),
        ("total_spent", "<=", 250, True),
        ("total_spent", "<=", 249.99, False),
        ("stage", "==", "repeat", True),
        ("stage", "==", "loyal", False),
        ("stage", "!=", "loyal", True),
        ("stage", "!=", "repeat", False),
        ("stage", "in", ["repeat", "loyal"], True),
        ("stage", "in", ["at_risk", "lapsed"], False),
        ("accepts_marketing", "==", True, True),
        ("accepts_marketing", "==", False, False),
        ("accepts_marketing", "!=", False, True),
        ("accepts_marketing", "!=", True, False),
        ("locale", "==", "it", True),
        ("locale", "==", "pl", False),
        ("locale", "!=", "pl", True),
        ("locale", "!=", "it", False),
        ("locale", "in", ["it", "pl"], True),
        ("locale", "in", ["en", "ru"], False),
        ("days_since_last_order", "==", 40, True),
        ("days_since_last_order", "!=", 40, False),
        ("days_since_last_order", ">", 39, True),
        ("days_since_last_order", ">", 40, False),
        ("days_since_last_order", ">=", 40, True),
        ("days_since_last_order", ">=", 41, False),
        ("days_since_last_order", "<", 41, True),
        ("days_since_last_order", "<", 40, False),
        ("days_since_last_order", "<=", 40, True),
        ("days_since_last_order", "<=", 39, False),
        ("days_since_last_order", "in", [30, 40, 50], True),
        ("tags", "contains", "vip", True),
        ("tags", "contains", "wholesale", True),
        ("tags", "contains", "retail", False),
        ("tags", "contains", "VIP", False),
    ],
)
def test_condition_on_a_shopper_with_history(field, op, value, expected):
    assert condition_holds({"field": field, "op": op, "value": value}, SHOPPER, NOW) is expected


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        ("orders_count", "==", 0, True),
        ("orders_count", "<", 1, True),
        ("total_spent", "==", 0, True),
        ("total_spent", ">", 0, False),
        ("stage", "==", "prospect", True),
        # no locale, no order: only `== null` holds
        ("locale", "==", None, True),
        ("locale", "==", "it", False),
        ("locale", "in", ["it", "en"], False),
        ("locale", "!=", None, False),
        ("days_since_last_order", "!=", None, False),
        ("days_since_last_order", "==", None, True),
        ("days_since_last_order", ">=", 0, False),
        ("days_since_last_order", "<", 10000, False),
        ("days_since_last_order", "in", [0, 1], False),
        ("tags", "contains", "vip", False),
    ],
)
def test_condition_on_a_shopper_without_history(field, op, value, expected):
    assert condition_holds({"field": field, "op": op, "value": value}, NOBODY_YET, NOW) is expected


@pytest.mark.parametrize(
    ("last_order_age", "expected"),
    [(40 * DAY - SECOND, False), (40 * DAY, True), (41 * DAY - SECOND, True)],
)
def test_days_since_last_order_counts_whole_days(last_order_age, expected):
    shopper = Profile(shopper_id=1, orders_count=1, last_order_at=NOW - last_order_age)
    assert (
        condition_holds({"field": "days_since_last_order", "op": ">=", "value": 40}, shopper, NOW) is expected
    )


@pytest.mark.parametrize(
    ("field", "op", "value"),
    [
        ("tags", "==", "vip"),
        ("tags", "!=", ["vip"]),
        ("accepts_marketing", "==", "yes"),
        ("stage", ">", 3),
        ("locale", "==", 3),
        ("orders_count", "==", "three"),
        ("orders_count", "contains", 3),
        ("orders_count", "in", 3),
        ("total_spent", ">=", "lots"),
        ("days_since_last_order", "<", "ten"),
    ],
)
def test_a_rule_the_schema_accepts_never_breaks_planning(field, op, value):
    rule, refused = load_or_refuse({**WIN_BACK, "conditions": [{"field": field, "op": op, "value": value}]})
    if refused:  # refused when saved: fine, as long as the condition is what is refused
        assert all(path[0] == "conditions" for path in error_paths(refused))
        return
    planned = plan_runs(SHOP_ID, [(1, rule)], SHOPPER, trigger("stage:at_risk"), NOW)
    assert len(planned) in (0, 1)


# --- plan_runs ----------------------------------------------------------------------------------------


def test_only_enabled_rules_on_the_trigger_plan_a_run():
    rules = [
        (1, default_rule("thank_you")),
        (2, default_rule("abandoned_checkout")),
        (3, default_rule("review_request")),
        (4, default_rule("thank_you", key="thank_you_off", enabled=False)),
    ]
    planned = plan_runs(SHOP_ID, rules, SHOPPER, trigger("order_paid"), NOW)
    assert [(run.rule_id, run.play) for run in planned] == [(1, "thank_you")]


@pytest.mark.parametrize(
    ("trigger_name", "plays"),
    [
        ("stage:at_risk", ["win_back"]),
        ("stage:lapsed", []),  # win_back_lapsed is off by default
        ("stage:loyal", ["vip_reward"]),
        ("back_in_stock", ["back_in_stock"]),  # the past buyers' variant is off by default
        ("checkout_started", ["abandoned_checkout"]),
        ("order_fulfilled", ["review_request"]),
        ("customer_created", []),
    ],
)
def test_the_default_rules_by_trigger(trigger_name, plays):
    rules = [(n, load_rule(rule)) for n, rule in enumerate(DEFAULT_RULES)]
    assert [run.play for run in plan_runs(SHOP_ID, rules, SHOPPER, trigger(trigger_name), NOW)] == plays


@pytest.mark.parametrize(
    ("conditions", "planned"),
    [
        ([], True),
        ([{"field": "orders_count", "op": ">=", "value": 3}], True),
        ([{"field": "orders_count", "op": ">=", "value": 4}], False),
        (
            [
                {"field": "orders_count", "op": ">=", "value": 3},
                {"field": "locale", "op": "==", "value": "it"},
            ],
            True,
        ),
        (
            [
                {"field": "orders_count", "op": ">=", "value": 3},
                {"field": "locale", "op": "==", "value": "pl"},
            ],
            False,
        ),
        ([{"field": "tags", "op": "contains", "value": "vip"}], True),
    ],
)
def test_every_condition_must_hold(conditions, planned):
    rule = load_rule({**WIN_BACK, "conditions": conditions})
    assert bool(plan_runs(SHOP_ID, [(1, rule)], SHOPPER, trigger("stage:at_risk"), NOW)) is planned


@pytest.mark.parametrize(("orders", "planned"), [(0, True), (1, False)])
def test_welcome_goes_only_to_shoppers_without_an_order(orders, planned):
    shopper = Profile(shopper_id=9, orders_count=orders, accepts_marketing=True)
    runs = plan_runs(SHOP_ID, [(1, default_rule("welcome"))], shopper, trigger("consent_granted"), NOW)
    assert bool(runs) is planned


@pytest.mark.parametrize(
    ("key", "trigger_name", "consents", "marketing", "gate"),
    [
        ("win_back", "stage:at_risk", True, True, "scheduled"),
        ("win_back", "stage:at_risk", False, True, "waiting"),  # marketing without consent waits for it
        ("back_in_stock", "back_in_stock", True, False, None),
        ("back_in_stock", "back_in_stock", False, False, None),  # the shopper asked for it
    ],
)
def test_marketing_needs_consent_and_carries_the_flag(key, trigger_name, consents, marketing, gate):
    shopper = Profile(shopper_id=7, accepts_marketing=consents)
    runs = plan_runs(SHOP_ID, [(1, default_rule(key))], shopper, trigger(trigger_name), NOW)
    assert [(run.marketing, run.gate and run.gate.status) for run in runs] == [(marketing, gate)]


def test_a_marketing_play_cannot_be_made_transactional():
    rule, refused = load_or_refuse({**WIN_BACK, "marketing": False})
    if refused:
        return
    no_consent = Profile(shopper_id=7, accepts_marketing=False)
    [run] = plan_runs(SHOP_ID, [(1, rule)], no_consent, trigger("stage:at_risk"), NOW)
    assert (run.marketing, run.gate.status) == (True, "waiting")


@pytest.mark.parametrize(
    ("trigger_at", "delay_minutes", "due_at"),
    [
        (NOW, 0, NOW),
        (NOW, 240, NOW + timedelta(hours=4)),
        (NOW - timedelta(hours=1), 240, NOW + timedelta(hours=3)),
        (NOW - timedelta(hours=5), 240, NOW - timedelta(hours=1)),  # overdue: store_run clamps it to now
        (NOW - 2 * DAY, 7 * 24 * 60, NOW + 5 * DAY),
        (NOW + timedelta(hours=2), 60, NOW + timedelta(hours=1)),  # a store clock ahead: the event is "now"
    ],
)
def test_due_at_is_the_trigger_time_plus_the_delay(trigger_at, delay_minutes, due_at):
    rule = load_rule({**WIN_BACK, "delay_minutes": delay_minutes})
    (run,) = plan_runs(SHOP_ID, [(1, rule)], SHOPPER, trigger("stage:at_risk", at=trigger_at), NOW)
    assert run.due_at == due_at


@pytest.mark.parametrize(
    ("age", "planned"),
    [
        (timedelta(0), True),
        (MAX_TRIGGER_AGE - SECOND, True),
        (2 * DAY, True),
        (2 * DAY + SECOND, False),
        (3 * DAY, False),
        (90 * DAY, False),
    ],
)
def test_a_trigger_older_than_two_days_plans_nothing(age, planned):
    assert MAX_TRIGGER_AGE == 2 * DAY
    runs = plan_runs(
        SHOP_ID, [(1, default_rule("thank_you"))], SHOPPER, trigger("order_paid", at=NOW - age), NOW
    )
    assert bool(runs) is planned


def test_a_planned_run_carries_the_rule_and_the_trigger():
    rule = default_rule("abandoned_checkout")
    at = NOW - timedelta(minutes=30)
    source = trigger(
        "checkout_started", at=at, cycle="tok-123", source="checkouts/create", checkout_token="tok-123"
    )
    (run,) = plan_runs(SHOP_ID, [(11, rule)], SHOPPER, source, NOW)
    assert (run.rule_id, run.play, run.action, run.shopper_id, run.cycle) == (
        11,
        "abandoned_checkout",
        "send_email",
        7,
        "tok-123",
    )
    assert run.idempotency_key == "3:abandoned_checkout:7:tok-123"
    assert (run.due_at, run.priority, run.marketing, run.trigger) == (
        at + timedelta(hours=4),
        80,
        True,
        "checkouts/create",
    )
    assert run.params == {"template": "abandoned_checkout", "discount": None, "tags": []}
    assert run.context == {"checkout_token": "tok-123"}
    assert (run.held_out, run.recipient_email) == (False, None)


def test_a_run_for_an_address_without_a_profile_is_keyed_and_sent_by_email():
    subscriber = Profile(shopper_id=None, email="cy@example.com")
    source = trigger("back_in_stock", cycle="sub:41", source="storefront", subscription_id=41)
    (run,) = plan_runs(SHOP_ID, [(5, default_rule("back_in_stock"))], subscriber, source, NOW)
    assert (run.idempotency_key, run.shopper_id, run.recipient_email) == (
        "3:back_in_stock:email:cy@example.com:sub:41",
        None,
        "cy@example.com",
    )
    assert (run.priority, run.marketing) == (90, False)


@pytest.mark.parametrize(
    ("shop_id", "key", "shopper_id", "cycle", "expected"),
    [
        (1, "win_back", 7, "at_risk:1", "1:win_back:7:at_risk:1"),
        (1, "win_back", 7, "at_risk:2", "1:win_back:7:at_risk:2"),  # a new cycle: a new run
        (2, "win_back", 7, "at_risk:1", "2:win_back:7:at_risk:1"),
        (1, "win_back", 8, "at_risk:1", "1:win_back:8:at_risk:1"),
    ],
)
def test_idempotency_key_is_shop_rule_shopper_cycle(shop_id, key, shopper_id, cycle, expected):
    rule = load_rule({**WIN_BACK, "key": key})
    shopper = Profile(shopper_id=shopper_id, accepts_marketing=True)
    (run,) = plan_runs(shop_id, [(1, rule)], shopper, trigger("stage:at_risk", cycle=cycle), NOW)
    assert run.idempotency_key == expected


def test_runs_keep_each_rules_priority():
    rules = [
        (1, load_rule({**WIN_BACK, "key": "low", "priority": 5})),
        (2, load_rule({**WIN_BACK, "key": "high", "priority": 95})),
    ]
    planned = plan_runs(SHOP_ID, rules, SHOPPER, trigger("stage:at_risk"), NOW)
    assert {run.play: run.priority for run in planned} == {"low": 5, "high": 95}


# --- the holdout draw ---------------------------------------------------------------------------------


def test_the_holdout_draw_is_deterministic_for_a_key():
    keys = [f"3:win_back:{n}:at_risk:1" for n in range(500)]
    first = [is_held_out(key, 30) for key in keys]
    assert first == [is_held_out(key, 30) for key in keys]
    assert 0 < sum(first) < len(keys)


@pytest.mark.parametrize("key", ["3:win_back:7:at_risk:1", "1:welcome:email:a@b.c:x", ""])
def test_no_holdout_holds_nobody_out(key):
    assert is_held_out(key, 0) is False


def test_a_larger_holdout_holds_out_everyone_a_smaller_one_does():
    keys = [f"3:win_back:{n}:at_risk:1" for n in range(2000)]
    assert all(is_held_out(key, 50) for key in keys if is_held_out(key, 10))


@pytest.mark.parametrize("percent", [1, 10, 25, 50, 89, 90])
def test_the_holdout_share_is_close_to_its_percentage(percent):
    shoppers = 100_000
    held = sum(is_held_out(f"3:win_back:{n}:at_risk:1", percent) for n in range(shoppers))
    share, expected = held / shoppers, percent / 100
    assert share == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / shoppers))  # 4 sd


def test_plan_runs_draws_the_holdout_per_run():
    rule = load_rule({**WIN_BACK, "holdout_percent": 20})
    source = trigger("stage:at_risk", cycle="at_risk:1")
    runs = [
        run
        for n in range(5000)
        for run in plan_runs(SHOP_ID, [(1, rule)], Profile(shopper_id=n, accepts_marketing=True), source, NOW)
    ]
    assert len(runs) == 5000
    assert all(run.held_out is is_held_out(run.idempotency_key, 20) for run in runs)
    assert sum(run.held_out for run in runs) / len(runs) == pytest.approx(0.20, abs=0.02)
