"""Stage rules as tables, and the tick's SQL held to the same answers as the Python rules."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from plugin.core.facts import ShopperFacts
from plugin.core.stages import DEFAULT_THRESHOLDS, Stage, Thresholds, assess, classify
from tests.conftest import NOW

DAY = timedelta(days=1)


def days_ago(n):
    return None if n is None else NOW - n * DAY


@pytest.mark.parametrize(
    ("orders", "spent", "last_order", "activity", "expected"),
    [
        (0, "0", None, None, Stage.PROSPECT),
        (0, "0", None, 31, Stage.PROSPECT),
        (0, "0", None, 30, Stage.ENGAGED),
        (0, "0", None, 1, Stage.ENGAGED),
        (1, "20", 10, None, Stage.FIRST_TIME),
        (2, "20", 10, None, Stage.REPEAT),
        (3, "499.99", 10, None, Stage.REPEAT),
        (2, "500", 10, None, Stage.LOYAL),
        (1, "900", 10, None, Stage.FIRST_TIME),
        (4, "10", 10, None, Stage.LOYAL),
        (4, "10", 89, None, Stage.LOYAL),
        (4, "10", 90, None, Stage.AT_RISK),
        (1, "10", 179, 1, Stage.AT_RISK),
        (9, "9000", 180, None, Stage.LAPSED),
    ],
)
def test_classify(orders, spent, last_order, activity, expected):
    facts = ShopperFacts(orders, Decimal(spent), days_ago(last_order), days_ago(activity), "EUR")
    assert classify(facts, NOW, DEFAULT_THRESHOLDS) is expected


def test_thresholds_are_per_shop():
    facts = ShopperFacts(1, Decimal(10), days_ago(40), None)
    assert classify(facts, NOW, Thresholds(at_risk_days=30, lapsed_days=60)) is Stage.AT_RISK


def test_reason_explains_the_stage():
    facts = ShopperFacts(3, Decimal("120.5"), days_ago(100), None, "EUR")
    assert assess(facts, NOW).reason == "No order for 100 days (at risk from 90); 3 orders, 120.50 EUR spent"
