"""A shopper's stored history as a backtest reads it, and what it says at any past instant: the facts and
stage the shopper had then, and the triggers the history fires.

Pure: the store loads a `ShopperHistory` per shopper (`store.backtest_history`); everything here is
plain data in, plain data out. The stage at an instant is `core.stages.assess` of the facts as of that
instant, the very function the tick and the handlers call; it is evaluated at the instants where it
can change: each event of the shopper (an order placed or cancelled, a refund, checkout or cart
activity; the handlers restage then) and each tick at which a time rule starts to hold (the tick's moves
to at risk and lapsed, and back from engaged to prospect, rounded up to the tick that first sees them).

Every read is O(log n) in the shopper's events: the facts after each event are computed once, in time
order (`FactsIndex`), and read by bisection; a stage timeline is built only from the instants of the
window asked for, starting from the stage the shopper had just before it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property

from plugin.core.facts import ShopperFacts
from plugin.core.rules import Trigger
from plugin.core.stages import Stage, Thresholds, assess

TICK = timedelta(seconds=300)  # LIFECYCLE_TICK_SECONDS' default: how often the tick releases due runs
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIME_STAGES = (Stage.AT_RISK.value, Stage.LAPSED.value)  # entries counted from the last kept order
PAID_STATUSES = ("paid", "partially_refunded", "refunded")  # as the order handler reads them
# Triggers the stored history cannot replay, and why; every other trigger can be.
NOT_REPLAYABLE = {
    "customer_created": "when each customer was created is not stored",
    "stage:prospect": "when each customer was created (and so became a prospect) is not stored",
    "order_fulfilled": "when each order was fulfilled is not stored",
    "back_in_stock": "inventory history is not stored, only the current levels",
}


def ceil_tick(at: datetime, tick: timedelta = TICK) -> datetime:
    """The first tick at or after `at` (one every `tick` from the Unix epoch): when the tick sees it."""
    late = (at - EPOCH) % tick
    return at + (tick - late) if late else at


@dataclass(frozen=True)
class OrderFact:
    """One stored order: when placed, cancelled, refunded (amount by time), and whether it was paid."""

    order_id: int
    placed_at: datetime
    total: Decimal
    cancelled_at: datetime | None = None
    refunds: tuple[tuple[datetime | None, Decimal], ...] = ()
    paid: bool = True
    name: str | None = None
    currency: str | None = None

    def kept_at(self, at: datetime) -> bool:
        """Placed by `at` and not cancelled by then."""
        return self.placed_at <= at and (self.cancelled_at is None or self.cancelled_at > at)

    def refunded_by(self, at: datetime) -> Decimal:
        """Refunded by `at` (a refund of unknown time counts from the start)."""
        return sum((amount for when, amount in self.refunds if when is None or when <= at), Decimal(0))


@dataclass(frozen=True)
class CheckoutFact:
    """One stored checkout: its last update (the only time stored; it stands in for its start)."""

    token: str
    updated_at: datetime
    completed_at: datetime | None = None
    closed_at: datetime | None = None
    recoverable: bool = True  # it has an abandoned-checkout URL (the handler's condition to trigger)
    total: Decimal | None = None
    currency: str | None = None


@dataclass(frozen=True)
class ShopperHistory:
    """What the store holds of one shopper, with consent, suppression and tags as they are now."""

    shopper_id: int
    email: str | None = None
    consents: bool = False  # subscribed now and not deleted
    consent_at: datetime | None = None
    deleted: bool = False
    suppressed: bool = False
    locale: str | None = None
    tags: tuple[str, ...] = ()
    timezone: str | None = None
    currency: str | None = None
    orders: tuple[OrderFact, ...] = ()
    checkouts: tuple[CheckoutFact, ...] = ()
    cart_activity: tuple[datetime, ...] = ()

    # Built once on first use (a frozen dataclass may cache: cached_property writes the instance's dict).
    @cached_property
    def facts_index(self) -> FactsIndex:
        return FactsIndex(self)

    @cached_property
    def orders_by_id(self) -> dict[int, OrderFact]:
        return {o.order_id: o for o in self.orders}

    @cached_property
    def checkouts_by_token(self) -> dict[str, CheckoutFact]:
        return {c.token: c for c in self.checkouts}


class FactsIndex:
    """The shopper's facts after each of their events, in time order, for reads by bisection.

    At one instant, cancellations and refunds come before orders placed: `inclusive=False` then stops
    after the former (the facts of an order's own event leave that order out, nothing else).
    """

    PLACED, CHANGED = 1, 0

    def __init__(self, history: ShopperHistory):
        events = [(o.placed_at, self.PLACED, i, None) for i, o in enumerate(history.orders)]
        orders = history.orders
        events += [(o.cancelled_at, self.CHANGED, i, None) for i, o in enumerate(orders) if o.cancelled_at]
        events += [
            (when, self.CHANGED, i, amount)
            for i, o in enumerate(history.orders)
            for when, amount in o.refunds
            if when is not None
        ]
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        refunded = [sum((a for w, a in o.refunds if w is None), Decimal(0)) for o in history.orders]
        kept: set[int] = set()
        placed_kept: list[datetime] = []  # sorted placed_at of the kept orders
        spent = Decimal(0)
        self.keys: list[tuple[datetime, int]] = []
        self.states: list[tuple[int, Decimal, datetime | None]] = []

        def net(i: int) -> Decimal:
            return max(history.orders[i].total - refunded[i], Decimal(0))

        for when, kind, i, amount in events:
            order = history.orders[i]
            if kind == self.PLACED:
                if order.cancelled_at is not None and order.cancelled_at <= when:
                    continue  # placed cancelled: never kept (as kept_at reads it)
                kept.add(i)
                bisect.insort(placed_kept, order.placed_at)
                spent += net(i)
            elif amount is None:  # cancelled
                if i in kept:
                    kept.discard(i)
                    del placed_kept[bisect.bisect_left(placed_kept, order.placed_at)]
                    spent -= net(i)
            else:  # refunded
                before = net(i)
                refunded[i] += amount
                if i in kept:
                    spent += net(i) - before
            self.keys.append((when, kind))
            self.states.append((len(kept), spent, placed_kept[-1] if placed_kept else None))
        self.activity = sorted([c.updated_at for c in history.checkouts] + list(history.cart_activity))
        self.currency = history.currency

    def at(self, at: datetime, inclusive: bool = True) -> ShopperFacts:
        index = bisect.bisect_right(self.keys, (at, self.PLACED if inclusive else self.CHANGED)) - 1
        count, spent, last_order = self.states[index] if index >= 0 else (0, Decimal(0), None)
        active = bisect.bisect_right(self.activity, at) - 1
        return ShopperFacts(
            orders_count=count,
            total_spent=spent.quantize(Decimal("0.01")),
            last_order_at=last_order,
            last_activity_at=self.activity[active] if active >= 0 else None,
            currency=self.currency,
        )


def facts_at(history: ShopperHistory, at: datetime, *, inclusive: bool = True) -> ShopperFacts:
    """The facts classification read of the shopper at `at`: orders kept then, net of refunds by then.

    `inclusive=False` leaves out an order placed exactly at `at` (an event's own facts, as
    `store.shoppers.profile_as_of` reads them: orders placed before the event). O(log n).
    """
    return history.facts_index.at(at, inclusive)


def _activity(history: ShopperHistory) -> list[datetime]:
    return [c.updated_at for c in history.checkouts] + list(history.cart_activity)


@dataclass(frozen=True)
class StageEntry:
    """The shopper entered `stage` at `at`, in the stage entry (cycle) `cycle`, with these facts."""

    at: datetime
    stage: str
    cycle: str
    facts: ShopperFacts


@dataclass
class StageTimeline:
    """The stage a shopper had from each entry on; `stage_at` reads it at any instant from `since` on."""

    entries: list[StageEntry] = field(default_factory=list)
    initial: str = Stage.PROSPECT.value  # the stage before the first entry

    @cached_property
    def times(self) -> list[datetime]:
        return [e.at for e in self.entries]

    def stage_at(self, at: datetime) -> str:
        """The stage at `at` (`initial` before the first entry)."""
        index = bisect.bisect_right(self.times, at) - 1
        return self.entries[index].stage if index >= 0 else self.initial


def stage_timeline(
    history: ShopperHistory, until: datetime, thresholds: Thresholds, since: datetime | None = None
) -> StageTimeline:
    """Every stage entry of the shopper in [since, until], by `assess` at each instant the stage can change;
    before `since`, only the stage the shopper had then (`initial`) is worked out."""
    instants = _instants(history, until, thresholds)
    first = bisect.bisect_left(instants, since) if since is not None else 0
    current = Stage.PROSPECT.value
    if first:
        before = instants[first - 1]
        current = assess(facts_at(history, before), before, thresholds).stage.value
    timeline = StageTimeline(initial=current)
    for at in instants[first:]:
        facts = facts_at(history, at)
        stage = assess(facts, at, thresholds).stage.value
        if stage != current:
            timeline.entries.append(StageEntry(at, stage, _cycle(stage, facts), facts))
            current = stage
    return timeline


def _cycle(stage: str, facts: ShopperFacts) -> str:
    """The stage entry a stage play belongs to (as `store.runs.stage_cycle` names it)."""
    if stage in TIME_STAGES and facts.last_order_at is not None:
        return f"{stage}:{facts.last_order_at.isoformat()}"
    return f"{stage}:{facts.orders_count}"


def last_stage_change(history: ShopperHistory, thresholds: Thresholds) -> datetime | None:
    """An instant after which the shopper's stage cannot change (None: it never can), found without
    building the instants: a shopper whose stage cannot change in a window needs no timeline for it."""
    longest = timedelta(days=max(thresholds.at_risk_days, thresholds.lapsed_days)) + TICK
    latest = [o.placed_at + longest for o in history.orders]
    latest += [o.cancelled_at for o in history.orders if o.cancelled_at]
    latest += [when for o in history.orders for when, _ in o.refunds if when]
    latest += [t + timedelta(days=thresholds.engaged_days) + TICK for t in _activity(history)]
    return max(latest, default=None)


def _instants(history: ShopperHistory, until: datetime, thresholds: Thresholds) -> list[datetime]:
    """The events of the shopper (restaged by the handlers when they happen) and the hours on which a time
    rule may start to hold (restaged by the tick), up to `until`."""
    events = {o.placed_at for o in history.orders}
    events |= {o.cancelled_at for o in history.orders if o.cancelled_at}
    events |= {when for o in history.orders for when, _ in o.refunds if when}
    events |= set(_activity(history))
    hours = set()
    for placed in (o.placed_at for o in history.orders):
        hours |= {
            placed + timedelta(days=thresholds.at_risk_days),
            placed + timedelta(days=thresholds.lapsed_days),
        }
    for active in _activity(history):
        # "engaged within N days" holds through day N exactly: prospect from the next instant on
        hours.add(active + timedelta(days=thresholds.engaged_days, microseconds=1))
    instants = events | {ceil_tick(t) for t in hours}
    return sorted(t for t in instants if t <= until)


def event_triggers(
    history: ShopperHistory, names: set[str], since: datetime, until: datetime
) -> list[Trigger]:
    """The store-event triggers in [since, until) that the history can replay, of the names asked for."""
    found = []
    if "order_paid" in names:
        found += [
            Trigger(
                "order_paid",
                o.placed_at,
                str(o.order_id),
                "orders/paid",
                {"order_id": o.order_id, "order_name": o.name, "total": str(o.total), "currency": o.currency},
            )
            for o in history.orders
            if o.paid and since <= o.placed_at < until
        ]
    if "checkout_started" in names:
        found += [
            Trigger(
                "checkout_started",
                c.updated_at,
                c.token,
                "checkouts/create",
                {"checkout_token": c.token, "total": str(c.total) if c.total is not None else None},
            )
            for c in history.checkouts
            if c.recoverable and since <= c.updated_at < until
            and not (c.completed_at and c.completed_at <= c.updated_at)
            and not (c.closed_at and c.closed_at <= c.updated_at)
        ]  # fmt: skip
    if "consent_granted" in names and history.consents and history.consent_at is not None:
        if since <= history.consent_at < until:
            found.append(
                Trigger(
                    "consent_granted", history.consent_at, "once", "customers_email_marketing_consent/update"
                )
            )
    return found


def stage_triggers(
    timeline: StageTimeline, names: set[str], since: datetime, until: datetime
) -> list[Trigger]:
    """The stage entries in [since, until) whose `stage:<name>` trigger is asked for."""
    return [
        Trigger(f"stage:{e.stage}", e.at, e.cycle, "tick" if e.stage in TIME_STAGES else "restage")
        for e in timeline.entries
        if f"stage:{e.stage}" in names and since <= e.at < until
    ]
