"""Lifecycle stages: a pure function of a shopper's facts, the shop's thresholds and *now*.

Time rules win over count rules: a loyal shopper with no order for 90 days is `at_risk`. The tick's
set-based moves (`store/stage_sql.py`) are built from the same thresholds; a test holds the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from plugin.core.facts import ShopperFacts


class Stage(StrEnum):
    PROSPECT = "prospect"
    ENGAGED = "engaged"
    FIRST_TIME = "first_time"
    REPEAT = "repeat"
    LOYAL = "loyal"
    AT_RISK = "at_risk"
    LAPSED = "lapsed"


__all__ = ["Assessment", "ShopperFacts", "Stage", "Thresholds", "assess", "classify"]


@dataclass(frozen=True)
class Thresholds:
    """Per-shop stage boundaries (the defaults are the issue's)."""

    engaged_days: int = 30
    at_risk_days: int = 90
    lapsed_days: int = 180
    loyal_orders: int = 4
    loyal_min_orders: int = 2
    loyal_spend: Decimal = Decimal("500")

    @classmethod
    def of(cls, shop) -> Thresholds:
        """Read the thresholds stored on a Shop row."""
        return cls(
            engaged_days=shop.engaged_days,
            at_risk_days=shop.at_risk_days,
            lapsed_days=shop.lapsed_days,
            loyal_orders=shop.loyal_orders,
            loyal_min_orders=shop.loyal_min_orders,
            loyal_spend=Decimal(shop.loyal_spend),
        )


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Assessment:
    stage: Stage
    reason: str


def assess(facts: ShopperFacts, now: datetime, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> Assessment:
    """Return the shopper's stage as of `now`, with a one-line reason a merchant can read."""
    if facts.orders_count == 0 or facts.last_order_at is None:
        return _without_orders(facts, now, thresholds)
    days = _days(now - facts.last_order_at)
    history = f"{_orders(facts.orders_count)}, {_money(facts)} spent"
    if days >= thresholds.lapsed_days:
        return Assessment(
            Stage.LAPSED, f"No order for {days} days (lapsed from {thresholds.lapsed_days}); {history}"
        )
    if days >= thresholds.at_risk_days:
        return Assessment(
            Stage.AT_RISK, f"No order for {days} days (at risk from {thresholds.at_risk_days}); {history}"
        )
    recency = f"last {days} days ago"
    if facts.orders_count >= thresholds.loyal_orders:
        return Assessment(Stage.LOYAL, f"{history} (loyal from {thresholds.loyal_orders} orders); {recency}")
    if facts.orders_count >= thresholds.loyal_min_orders and facts.total_spent >= thresholds.loyal_spend:
        return Assessment(Stage.LOYAL, f"{history} ({loyal_by_spend(thresholds)}); {recency}")
    if facts.orders_count >= 2:
        return Assessment(Stage.REPEAT, f"{history}; {recency}")
    return Assessment(Stage.FIRST_TIME, f"First order, {_money(facts)}; {recency}")


def classify(facts: ShopperFacts, now: datetime, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> Stage:
    """Return just the stage."""
    return assess(facts, now, thresholds).stage


def _without_orders(facts: ShopperFacts, now: datetime, thresholds: Thresholds) -> Assessment:
    activity = facts.last_activity_at
    if activity is not None and now - activity <= timedelta(days=thresholds.engaged_days):
        return Assessment(
            Stage.ENGAGED,
            f"No order yet; checkout or cart activity {_days(now - activity)} days ago "
            f"(engaged within {thresholds.engaged_days})",
        )
    return Assessment(Stage.PROSPECT, prospect_reason(thresholds))


def loyal_by_spend(thresholds: Thresholds) -> str:
    """The loyal-by-spend rule in words, as reasons quote it."""
    return f"loyal from {thresholds.loyal_spend} spent over {thresholds.loyal_min_orders}+ orders"


def prospect_reason(thresholds: Thresholds) -> str:
    """Why a shopper with no order and no recent checkout or cart is a prospect."""
    return f"No order yet and no checkout or cart activity in the last {thresholds.engaged_days} days"


def _days(delta: timedelta) -> int:
    return max(delta.days, 0)


def _orders(count: int) -> str:
    return "1 order" if count == 1 else f"{count} orders"


def _money(facts: ShopperFacts) -> str:
    amount = f"{facts.total_spent:.2f}"
    return f"{amount} {facts.currency}" if facts.currency else amount
