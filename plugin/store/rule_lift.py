"""Lift per rule from the action ledger: the runs assigned to send against the held-out runs, by assignment.

Intent-to-treat: a run not held out counts in the sent arm whatever became of it (sent, skipped by the
cap, failed), so the two arms stay the random split `core.rules.is_held_out` made. A run converts when
its shopper placed a kept order in the attribution window, ATTRIBUTION days from the run's `due_at`;
only runs whose window has closed by `now` are counted, so a young run cannot look like a miss.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Float, cast, select
from sqlalchemy.orm import Session

from plugin.core.lift import ArmCounts, Lift, NotEnoughData, measure_lift
from plugin.store.models import ActionRun, Order, Rule, RunStatus, Shop, Shopper

ATTRIBUTION = timedelta(days=7)


@dataclass(frozen=True)
class RuleLift:
    """One rule's two arms and what they say (a lift with its interval, or why not yet)."""

    key: str
    holdout_percent: int
    sent: ArmCounts
    held_out: ArmCounts
    result: Lift | NotEnoughData


def lift_by_rule(session: Session, shop: Shop, now: datetime) -> list[RuleLift]:
    """Measure every rule of the shop with a hold-out group (holdout_percent > 0), by rule key."""
    rules = [
        rule
        for rule in session.scalars(select(Rule).where(Rule.shop_id == shop.id).order_by(Rule.key))
        if int(rule.definition.get("holdout_percent") or 0) > 0
    ]
    if not rules:
        return []
    runs = session.execute(
        select(ActionRun.rule_id, ActionRun.status, ActionRun.due_at, Shopper.customer_id)
        .join(Shopper, Shopper.id == ActionRun.shopper_id)
        .where(
            ActionRun.shop_id == shop.id,
            ActionRun.rule_id.in_([rule.id for rule in rules]),
            ActionRun.due_at <= now - ATTRIBUTION,
        )
    ).all()
    orders = _orders_by_customer(session, shop.id, {customer for *_, customer in runs})
    arms: dict[tuple[int, bool], list[int | float]] = defaultdict(lambda: [0, 0, 0.0])
    for rule_id, status, due_at, customer in runs:
        arm = arms[(rule_id, status == RunStatus.HELD_OUT)]
        revenue = _window_revenue(orders.get(customer), due_at)
        arm[0] += 1
        if revenue is not None:
            arm[1] += 1
            arm[2] += revenue
    measured = []
    for rule in rules:
        sent, held_out = (ArmCounts(*arms[(rule.id, held)]) for held in (False, True))
        measured.append(
            RuleLift(
                rule.key,
                int(rule.definition["holdout_percent"]),
                sent,
                held_out,
                measure_lift(sent, held_out),
            )
        )
    return measured


def _orders_by_customer(session: Session, shop_id: int, customers: set[int]) -> dict:
    """Kept orders of these customers as (sorted placed_at list, nets in the same order), by customer."""
    found: dict[int, tuple[list, list]] = {}
    if not customers:
        return found
    rows = session.execute(
        select(Order.customer_id, Order.placed_at, cast(Order.total_price - Order.refunded, Float))
        .where(Order.shop_id == shop_id, Order.cancelled_at.is_(None), Order.customer_id.in_(customers))
        .order_by(Order.customer_id, Order.placed_at)
    )
    for customer, placed_at, net in rows:
        times, nets = found.setdefault(customer, ([], []))
        times.append(placed_at)
        nets.append(net)
    return found


def _window_revenue(orders: tuple[list, list] | None, due_at: datetime) -> float | None:
    """The net of the orders in [due_at, due_at + ATTRIBUTION), or None when there is none."""
    if orders is None:
        return None
    times, nets = orders
    start, end = bisect.bisect_left(times, due_at), bisect.bisect_left(times, due_at + ATTRIBUTION)
    return sum(nets[start:end]) if end > start else None
