"""Lifecycle stages: a pure function of a shopper's facts, the shop's thresholds and *now*.

Time rules win over count rules: a loyal shopper with no order for 90 days is `at_risk`. The tick's
set-based moves (`store/stage_sql.py`) are built from the same thresholds; a test holds the two equal.

Personal stages (a shop setting, off by default) replace the fixed time rules for a shopper with a
forecast from the shop's purchase model, while no order came after the fit's cutoff: a repeat buyer is
`lapsed` when P(alive) < 0.2, `at_risk` when P(alive) < 0.5 or the time since the last order exceeds
twice their expected gap between orders; a one-time buyer is `at_risk` past the 80th percentile of the
shop's first-to-second-order gaps, `lapsed` past the 95th. Everyone else keeps the fixed thresholds.
"""

from __future__ import annotations

import math
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


__all__ = ["Assessment", "PersonalPrediction", "ShopperFacts", "Stage", "Thresholds", "assess", "classify"]


@dataclass(frozen=True)
class Thresholds:
    """Per-shop stage boundaries (the defaults are the issue's)."""

    engaged_days: int = 30
    at_risk_days: int = 90
    lapsed_days: int = 180
    loyal_orders: int = 4
    loyal_min_orders: int = 2
    loyal_spend: Decimal = Decimal("500")
    personal: bool = False  # personal stages: each shopper's own rhythm where a forecast applies
    at_risk_p_alive: float = 0.5
    lapsed_p_alive: float = 0.2

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
            personal=bool(getattr(shop, "personal_stages", False)),
        )


@dataclass(frozen=True)
class PersonalPrediction:
    """What personal stages read of a shopper's forecast and of the shop's fit it came from.

    `expected_gap_days` is None for a one-time buyer; the percentiles are the shop's days from first to
    second order among its repeat buyers. The forecast applies while the last order is before `cutoff_at`.
    """

    p_alive: float
    expected_gap_days: float | None
    cutoff_at: datetime
    second_order_p80_days: float
    second_order_p95_days: float


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Assessment:
    stage: Stage
    reason: str


def assess(
    facts: ShopperFacts,
    now: datetime,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    prediction: PersonalPrediction | None = None,
) -> Assessment:
    """Return the shopper's stage as of `now`, with a one-line reason a merchant can read.

    With personal stages on and a `prediction` that applies, the shopper's own rhythm replaces the fixed
    time rules (the count rules stay).
    """
    if facts.orders_count == 0 or facts.last_order_at is None:
        return _without_orders(facts, now, thresholds)
    days = _days(now - facts.last_order_at)
    history = f"{_orders(facts.orders_count)}, {_money(facts)} spent"
    if thresholds.personal and prediction is not None and facts.last_order_at < prediction.cutoff_at:
        personal = _personal(prediction, days, thresholds)
        if personal is not None:
            return personal
    else:
        fixed = _fixed(days, history, thresholds)
        if fixed is not None:
            return fixed
    recency = f"last {days} days ago"
    if facts.orders_count >= thresholds.loyal_orders:
        return Assessment(Stage.LOYAL, f"{history} (loyal from {thresholds.loyal_orders} orders); {recency}")
    if facts.orders_count >= thresholds.loyal_min_orders and facts.total_spent >= thresholds.loyal_spend:
        return Assessment(Stage.LOYAL, f"{history} ({loyal_by_spend(thresholds)}); {recency}")
    if facts.orders_count >= 2:
        return Assessment(Stage.REPEAT, f"{history}; {recency}")
    return Assessment(Stage.FIRST_TIME, f"First order, {_money(facts)}; {recency}")


def _fixed(days: int, history: str, thresholds: Thresholds) -> Assessment | None:
    """The fixed time rules: lapsed, then at risk, by days since the last order; or None (count rules)."""
    if days >= thresholds.lapsed_days:
        return Assessment(
            Stage.LAPSED, f"No order for {days} days (lapsed from {thresholds.lapsed_days}); {history}"
        )
    if days >= thresholds.at_risk_days:
        return Assessment(
            Stage.AT_RISK, f"No order for {days} days (at risk from {thresholds.at_risk_days}); {history}"
        )
    return None


def _personal(prediction: PersonalPrediction, days: int, thresholds: Thresholds) -> Assessment | None:
    """The personal time rules: at risk or lapsed by the shopper's own rhythm, or None (count rules)."""
    gap = prediction.expected_gap_days
    if gap is None:
        for stage, share, limit in (
            (Stage.LAPSED, 95, prediction.second_order_p95_days),
            (Stage.AT_RISK, 80, prediction.second_order_p80_days),
        ):
            if days > limit:
                return Assessment(stage, one_time_reason(days, share, limit))
        return None
    alive = prediction.p_alive
    reason = (
        f"orders about every {span(half_up(gap))}; {span(days)} since the last; "
        f"{percent(alive)} % likely still active"
    )
    if alive < thresholds.lapsed_p_alive:
        return Assessment(Stage.LAPSED, reason)
    if alive < thresholds.at_risk_p_alive or days > 2 * gap:
        return Assessment(Stage.AT_RISK, reason)
    return None


def one_time_reason(days: int, share: int, limit: float) -> str:
    """Why a one-time buyer is at risk (share 80) or lapsed (share 95) by the shop's own second orders."""
    return (
        f"first order {span(days)} ago; {share} % of this shop's repeat buyers order again within "
        f"{span(half_up(limit))}"
    )


def span(days: int) -> str:
    """A whole number of days as a merchant says it: days under two weeks, weeks under nine, then months."""
    if days == 1:
        return "1 day"
    if days < 14:
        return f"{days} days"
    if days < 63:
        return f"{(days + 3) // 7} weeks"
    return f"{(days + 15) // 30} months"


def half_up(value: float) -> int:
    """Round a non-negative number to whole units, halves up (the SQL's floor(x + 0.5))."""
    return math.floor(value + 0.5)


def percent(probability: float) -> int:
    return half_up(probability * 100)


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
