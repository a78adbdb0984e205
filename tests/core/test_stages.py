"""Stages as tables: every rule of `core.stages.assess`, each boundary on both sides, and the reason word for word."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest

from plugin.core.facts import ShopperFacts
from plugin.core.stages import DEFAULT_THRESHOLDS, Assessment, Stage, Thresholds, assess, classify
from tests.conftest import NOW

DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def days_ago(n):
    return None if n is None else NOW - n * DAY


def facts(orders=0, spent="0", last_order=None, activity=None, currency="EUR"):
    """A shopper's facts, times given in days before NOW."""
    return ShopperFacts(orders, Decimal(spent), days_ago(last_order), days_ago(activity), currency)


@pytest.mark.parametrize(
    ("orders", "spent", "last_order", "activity", "expected"),
    [
        # no order: engaged while checkout or cart activity is at most engaged_days (30) old
        (0, "0", None, None, Stage.PROSPECT),
        (0, "0", None, 0, Stage.ENGAGED),
        (0, "0", None, 1, Stage.ENGAGED),
        (0, "0", None, 29, Stage.ENGAGED),
        (0, "0", None, 30, Stage.ENGAGED),
        (0, "0", None, 31, Stage.PROSPECT),
        (0, "0", None, 400, Stage.PROSPECT),
        # orders_count 0 wins over a stored last order (every order cancelled)
        (0, "0", 10, None, Stage.PROSPECT),
        (0, "0", 10, 5, Stage.ENGAGED),
        # one order: first_time, whatever was spent and whatever the activity
        (1, "20", 10, None, Stage.FIRST_TIME),
        (1, "900", 10, None, Stage.FIRST_TIME),
        (1, "20", 10, 1, Stage.FIRST_TIME),
        (1, "20", 0, None, Stage.FIRST_TIME),
        # two or more: repeat, until loyal by count (4) or by spend (500 over at least 2 orders)
        (2, "20", 10, None, Stage.REPEAT),
        (3, "499.99", 10, None, Stage.REPEAT),
        (2, "500", 10, None, Stage.LOYAL),
        (3, "500.01", 10, None, Stage.LOYAL),
        (3, "10", 10, None, Stage.REPEAT),
        (4, "10", 10, None, Stage.LOYAL),
        (12, "10", 10, None, Stage.LOYAL),
        # at_risk from 90 days without an order, lapsed from 180: the time rules win over the count rules
        (4, "10", 89, None, Stage.LOYAL),
        (4, "10", 90, None, Stage.AT_RISK),
        (2, "500", 90, None, Stage.AT_RISK),
        (2, "20", 89, None, Stage.REPEAT),
        (2, "20", 90, None, Stage.AT_RISK),
        (1, "10", 89, None, Stage.FIRST_TIME),
        (1, "10", 90, None, Stage.AT_RISK),
        (1, "10", 179, 1, Stage.AT_RISK),
        (9, "9000", 179, None, Stage.AT_RISK),
        (9, "9000", 180, None, Stage.LAPSED),
        (1, "10", 180, 1, Stage.LAPSED),
        (1, "10", 2000, None, Stage.LAPSED),
    ],
)
def test_stage_follows_orders_spend_and_time(orders, spent, last_order, activity, expected):
    assert classify(facts(orders, spent, last_order, activity), NOW, DEFAULT_THRESHOLDS) is expected


@pytest.mark.parametrize(
    ("last_order_age", "expected"),
    [
        (90 * DAY - SECOND, Stage.LOYAL),
        (90 * DAY, Stage.AT_RISK),
        (180 * DAY - SECOND, Stage.AT_RISK),
        (180 * DAY, Stage.LAPSED),
        (-DAY, Stage.LOYAL),  # a store clock ahead of ours: an order "tomorrow" is 0 days old
    ],
)
def test_time_thresholds_count_whole_days(last_order_age, expected):
    shopper = ShopperFacts(5, Decimal(100), NOW - last_order_age)
    assert classify(shopper, NOW) is expected


@pytest.mark.parametrize(
    ("activity_age", "expected"),
    [(30 * DAY - SECOND, Stage.ENGAGED), (30 * DAY, Stage.ENGAGED), (30 * DAY + SECOND, Stage.PROSPECT)],
)
def test_engaged_window_is_inclusive_to_the_second(activity_age, expected):
    assert classify(ShopperFacts(last_activity_at=NOW - activity_age), NOW) is expected


@pytest.mark.parametrize(
    ("thresholds", "orders", "spent", "last_order", "activity", "expected"),
    [
        (Thresholds(engaged_days=7), 0, "0", None, 7, Stage.ENGAGED),
        (Thresholds(engaged_days=7), 0, "0", None, 8, Stage.PROSPECT),
        (Thresholds(engaged_days=60), 0, "0", None, 45, Stage.ENGAGED),
        (Thresholds(at_risk_days=30, lapsed_days=60), 1, "10", 29, None, Stage.FIRST_TIME),
        (Thresholds(at_risk_days=30, lapsed_days=60), 1, "10", 30, None, Stage.AT_RISK),
        (Thresholds(at_risk_days=30, lapsed_days=60), 1, "10", 40, None, Stage.AT_RISK),
        (Thresholds(at_risk_days=30, lapsed_days=60), 1, "10", 60, None, Stage.LAPSED),
        (Thresholds(at_risk_days=200, lapsed_days=365), 4, "10", 190, None, Stage.LOYAL),
        (Thresholds(loyal_orders=3), 3, "10", 10, None, Stage.LOYAL),
        (Thresholds(loyal_orders=6), 5, "10", 10, None, Stage.REPEAT),
        (Thresholds(loyal_spend=Decimal(100)), 2, "100", 10, None, Stage.LOYAL),
        (Thresholds(loyal_spend=Decimal(100)), 2, "99.99", 10, None, Stage.REPEAT),
        (Thresholds(loyal_min_orders=3), 2, "900", 10, None, Stage.REPEAT),
        (Thresholds(loyal_min_orders=3), 3, "900", 10, None, Stage.LOYAL),
        (Thresholds(loyal_min_orders=1), 1, "500", 10, None, Stage.LOYAL),
        (Thresholds(loyal_min_orders=1), 1, "499.99", 10, None, Stage.FIRST_TIME),
    ],
)
def test_thresholds_are_per_shop(thresholds, orders, spent, last_order, activity, expected):
    assert classify(facts(orders, spent, last_order, activity), NOW, thresholds) is expected


def test_thresholds_are_read_from_a_shop_row():
    shop = SimpleNamespace(
        engaged_days=14,
        at_risk_days=60,
        lapsed_days=120,
        loyal_orders=5,
        loyal_min_orders=3,
        loyal_spend="250.5",
    )
    assert Thresholds.of(shop) == Thresholds(14, 60, 120, 5, 3, Decimal("250.5"))


@pytest.mark.parametrize(
    ("shopper", "reason"),
    [
        (
            ShopperFacts(5, Decimal(80), NOW + timedelta(hours=6), None, "EUR"),
            "5 orders, 80.00 EUR spent (loyal from 4 orders); last 0 days ago",
        ),
        (
            ShopperFacts(last_activity_at=NOW + timedelta(minutes=1)),
            "No order yet; checkout or cart activity 0 days ago (engaged within 30)",
        ),
    ],
)
def test_a_store_clock_ahead_of_ours_counts_as_zero_days(shopper, reason):
    assert assess(shopper, NOW).reason == reason


@pytest.mark.parametrize(
    ("shopper", "thresholds", "stage", "reason"),
    [
        (
            facts(),
            DEFAULT_THRESHOLDS,
            Stage.PROSPECT,
            "No order yet and no checkout or cart activity in the last 30 days",
        ),
        (
            facts(activity=45),
            Thresholds(engaged_days=14),
            Stage.PROSPECT,
            "No order yet and no checkout or cart activity in the last 14 days",
        ),
        (
            facts(activity=12),
            DEFAULT_THRESHOLDS,
            Stage.ENGAGED,
            "No order yet; checkout or cart activity 12 days ago (engaged within 30)",
        ),
        (
            facts(activity=0),
            DEFAULT_THRESHOLDS,
            Stage.ENGAGED,
            "No order yet; checkout or cart activity 0 days ago (engaged within 30)",
        ),
        (
            facts(1, "42.5", 3),
            DEFAULT_THRESHOLDS,
            Stage.FIRST_TIME,
            "First order, 42.50 EUR; last 3 days ago",
        ),
        (
            facts(1, "42.5", 3, currency=None),
            DEFAULT_THRESHOLDS,
            Stage.FIRST_TIME,
            "First order, 42.50; last 3 days ago",
        ),
        (
            facts(3, "120.5", 20, currency="USD"),
            DEFAULT_THRESHOLDS,
            Stage.REPEAT,
            "3 orders, 120.50 USD spent; last 20 days ago",
        ),
        (
            facts(3, "120.5", 20, currency=None),
            DEFAULT_THRESHOLDS,
            Stage.REPEAT,
            "3 orders, 120.50 spent; last 20 days ago",
        ),
        (
            facts(5, "80", 6),
            DEFAULT_THRESHOLDS,
            Stage.LOYAL,
            "5 orders, 80.00 EUR spent (loyal from 4 orders); last 6 days ago",
        ),
        (
            facts(2, "640.126", 6, currency=None),
            DEFAULT_THRESHOLDS,
            Stage.LOYAL,
            "2 orders, 640.13 spent (loyal from 500 spent over 2+ orders); last 6 days ago",
        ),
        (
            facts(2, "640", 6, currency="PLN"),
            Thresholds(loyal_spend=Decimal("600.00")),
            Stage.LOYAL,
            "2 orders, 640.00 PLN spent (loyal from 600.00 spent over 2+ orders); last 6 days ago",
        ),
        (
            facts(3, "120.5", 100),
            DEFAULT_THRESHOLDS,
            Stage.AT_RISK,
            "No order for 100 days (at risk from 90); 3 orders, 120.50 EUR spent",
        ),
        (
            facts(1, "9", 45, currency=None),
            Thresholds(at_risk_days=30, lapsed_days=60),
            Stage.AT_RISK,
            "No order for 45 days (at risk from 30); 1 order, 9.00 spent",
        ),
        (
            facts(1, "9", 200),
            DEFAULT_THRESHOLDS,
            Stage.LAPSED,
            "No order for 200 days (lapsed from 180); 1 order, 9.00 EUR spent",
        ),
        (
            facts(7, "1234", 61, currency=None),
            Thresholds(at_risk_days=30, lapsed_days=60),
            Stage.LAPSED,
            "No order for 61 days (lapsed from 60); 7 orders, 1234.00 spent",
        ),
    ],
)
def test_reason_explains_the_stage_word_for_word(shopper, thresholds, stage, reason):
    assert assess(shopper, NOW, thresholds) == Assessment(stage, reason)


def test_reason_names_the_shops_minimum_orders_for_loyal_by_spend():
    reason = assess(facts(3, "900", 6, currency=None), NOW, Thresholds(loyal_min_orders=3)).reason
    assert reason == "3 orders, 900.00 spent (loyal from 500 spent over 3+ orders); last 6 days ago"
