"""The backtest's replay with plain data: when runs go (no delay at once, the rest at the tick), what the
cap meets (others' hold-outs, others' triggers after the period), the baseline (as the rule lift counts),
its bound, and the O(log n) facts read against a plain scan."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from plugin.core.backtest import BacktestTooLarge, Replay, ShopPolicy, backtest
from plugin.core.backtest_timeline import (
    CheckoutFact,
    FactsIndex,
    OrderFact,
    ShopperHistory,
    last_stage_change,
    stage_timeline,
)
from plugin.core.facts import ShopperFacts
from plugin.core.policy import CONSENT_WAIT
from plugin.core.rules import DEFAULT_RULES, load_rule
from plugin.core.stages import Thresholds

WEEK = timedelta(days=7)
NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
START, END = datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 9, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def rule(key: str, **changes) -> dict:
    default = next(r for r in DEFAULT_RULES if r["key"] == key)
    return load_rule(dict(default, enabled=True, **changes))


def shopper(*orders: str, checkouts: tuple[CheckoutFact, ...] = ()) -> ShopperHistory:
    return ShopperHistory(
        shopper_id=1,
        email="ada@example.com",
        consents=True,
        orders=tuple(OrderFact(10 + n, at(placed), Decimal(40)) for n, placed in enumerate(orders)),
        checkouts=checkouts,
    )


def test_a_run_without_delay_goes_at_its_event_and_a_delayed_one_at_the_next_tick():
    # given: a thank-you at 20:10 in Rome (18:10 UTC), quiet hours from 21:00
    history = shopper("2026-08-10T18:10:00")
    rome = ShopPolicy(timezone="Europe/Rome")
    # when
    at_once = backtest(
        [history], [(1, rule("thank_you", delay_minutes=0))], "thank_you", START, END, NOW, rome, WEEK
    )
    delayed = backtest(
        [history], [(1, rule("thank_you", delay_minutes=7))], "thank_you", START, END, NOW, rome, WEEK
    )
    # then: not rounded up to 21:00 (quiet): sent at 20:10; the delayed one at the first tick after 20:17
    assert (at_once.first_at, at_once.messages_quiet_hours_delayed) == (at("2026-08-10T18:10:00"), 0)
    assert (delayed.first_at, delayed.messages_quiet_hours_delayed) == (at("2026-08-10T18:20:00"), 0)


def test_other_rules_held_out_runs_take_no_room_in_the_cap():
    # given: another rule on the same trigger, higher priority, every run of it held out
    other = dict(rule("thank_you", priority=90), key="thanks_twice", holdout_percent=100)
    rules = [(1, rule("thank_you", delay_minutes=0)), (2, dict(other, delay_minutes=0))]
    # when
    result = backtest(
        [shopper("2026-08-10T12:00:00")], rules, "thank_you", START, END, NOW, ShopPolicy(), WEEK
    )
    # then: the held-out run is never sent, so the cap of 1 a day lets the thank-you through at once
    assert (result.messages_allowed, result.first_at) == (1, at("2026-08-10T12:00:00"))
    assert any("hold-out group" in note for note in result.notes)


def test_the_runs_are_planned_with_the_shops_id():
    replay = Replay([shopper("2026-08-10T12:00:00")], [(1, rule("thank_you"))], "thank_you", START, END, NOW,
                    ShopPolicy(shop_id=42), CONSENT_WAIT)  # fmt: skip
    replay.run()
    assert [run.planned.idempotency_key.split(":")[0] for run in replay.runs] == ["42"]


def test_other_rules_triggers_after_the_period_still_fill_the_cap():
    # given: a thank-you at 22:30 UTC on the period's last day (quiet until 08:00 the next morning), and a
    # checkout started at 07:00 that morning whose reminder (no delay, priority 80) also waits for 08:00
    checkout = CheckoutFact("tok", at("2026-09-01T07:00:00"), recoverable=True)
    history = shopper("2026-08-31T22:30:00", checkouts=(checkout,))
    rules = [(1, rule("thank_you", delay_minutes=0)), (2, rule("abandoned_checkout", delay_minutes=0))]
    # when
    result = backtest([history], rules, "thank_you", START, END, NOW, ShopPolicy(), WEEK)
    # then: the reminder goes first at 08:00; the thank-you waits a day for the cap
    assert (result.messages_allowed, result.first_at) == (1, at("2026-09-02T08:00:00"))


def test_the_baseline_counts_from_the_due_time_and_only_closed_windows():
    # given: a thank-you due 18:17 (sent 18:20), an order at 18:18; another shopper's window still open
    rules = [(1, rule("thank_you", delay_minutes=7))]
    early = shopper("2026-08-10T18:10:00", "2026-08-10T18:18:00")
    late = ShopperHistory(2, "bo@example.com", consents=True, orders=(
        OrderFact(20, at("2026-10-29T10:00:00"), Decimal(40)), OrderFact(21, at("2026-10-30T10:00:00"), Decimal(40)),
    ))  # fmt: skip
    # when
    result = backtest(
        [early, late], rules, "thank_you", START, at("2026-11-01T00:00:00"), NOW, ShopPolicy(), WEEK
    )
    # then: both orders' first send reached; the early shopper converted (the order follows the due time),
    # the late shopper's window is open: out of the baseline, and said
    assert (result.shoppers_reached, result.shoppers_measured, result.ordered_within_window) == (2, 1, 1)
    assert result.as_dict()["baseline_conversion"] == 1.0
    assert any("attribution window is still open" in note for note in result.notes)


def test_the_replay_is_bounded():
    history = shopper(*(f"2026-08-{day:02d}T12:00:00" for day in range(1, 20)))
    with pytest.raises(BacktestTooLarge, match="choose a shorter period"):
        backtest([history], [(1, rule("thank_you"))], "thank_you", START, END, NOW, ShopPolicy(), WEEK,
                 max_steps=10)  # fmt: skip


def _facts_by_scan(history: ShopperHistory, now: datetime, inclusive: bool) -> ShopperFacts:
    """The facts as a plain scan of every order reads them (the definition the index must keep)."""
    kept = [o for o in history.orders if o.kept_at(now) and (inclusive or o.placed_at < now)]
    spent = sum((max(o.total - o.refunded_by(now), Decimal(0)) for o in kept), Decimal(0))
    activity = [c.updated_at for c in history.checkouts if c.updated_at <= now]
    return ShopperFacts(
        orders_count=len(kept),
        total_spent=spent.quantize(Decimal("0.01")),
        last_order_at=max((o.placed_at for o in kept), default=None),
        last_activity_at=max(activity, default=None),
        currency=history.currency,
    )


def test_the_facts_index_reads_what_a_scan_of_the_orders_reads():
    rng = random.Random(7)
    hours = [at("2026-01-01T00:00:00") + timedelta(hours=rng.randrange(0, 2000)) for _ in range(60)]
    for _ in range(40):
        orders = []
        for n in range(rng.randrange(0, 12)):
            placed = rng.choice(hours)
            cancelled = rng.choice([None, None, placed, rng.choice(hours)])
            refunds = tuple(
                (rng.choice([None, *hours]), Decimal(rng.randrange(1, 60)))
                for _ in range(rng.randrange(0, 3))
            )
            orders.append(OrderFact(n, placed, Decimal(rng.randrange(0, 100)), cancelled, refunds))
        checkouts = tuple(CheckoutFact(f"c{n}", rng.choice(hours)) for n in range(rng.randrange(0, 3)))
        history = ShopperHistory(1, orders=tuple(orders), checkouts=checkouts, currency="EUR")
        index = FactsIndex(history)
        for instant in hours + [h + timedelta(minutes=1) for h in hours]:
            for inclusive in (True, False):
                assert index.at(instant, inclusive) == _facts_by_scan(history, instant, inclusive)


def test_a_stage_timeline_from_a_date_reads_as_the_whole_one_from_then_on():
    rng = random.Random(3)
    first = at("2025-01-01T00:00:00")
    orders = tuple(
        OrderFact(n, first + timedelta(hours=rng.randrange(0, 600 * 24)), Decimal(30)) for n in range(30)
    )
    history = ShopperHistory(1, orders=tuple(sorted(orders, key=lambda o: o.placed_at)))
    since = at("2025-09-01T00:00:00")
    whole, part = (stage_timeline(history, NOW, Thresholds(), s) for s in (None, since))
    assert [e for e in whole.entries if e.at >= since] == part.entries
    for hour in range(0, 400 * 24, 7):
        instant = since + timedelta(hours=hour)
        assert part.stage_at(instant) == whole.stage_at(instant)


def test_no_stage_instant_comes_after_the_last_stage_change_bound():
    rng = random.Random(11)
    first = at("2025-01-01T00:00:00")
    for _ in range(200):
        moments = [first + timedelta(minutes=rng.randrange(0, 600 * 24 * 60)) for _ in range(8)]
        orders = tuple(
            OrderFact(n, moments[n], Decimal(30), rng.choice([None, moments[n + 1]]),
                      ((rng.choice([None, moments[n + 2]]), Decimal(5)),))
            for n in range(rng.randrange(0, 4))
        )  # fmt: skip
        checkouts = tuple(CheckoutFact(f"c{n}", moments[4 + n]) for n in range(rng.randrange(0, 3)))
        history = ShopperHistory(1, orders=orders, checkouts=checkouts)
        whole = stage_timeline(history, at("2030-01-01T00:00:00"), Thresholds())
        bound = last_stage_change(history, Thresholds())
        assert all(entry.at <= bound for entry in whole.entries)
