"""Backtest a rule: replay a shop's stored history through the rule and the shop's other enabled rules,
with the real planning (`core.rules.plan_runs`) and sending policy (`core.policy.decide`), and count what
would have happened. Nothing is sent or written: plain data in, a `BacktestResult` out.

At production's cadence, event-driven. In production a run without delay is enqueued the moment its
trigger is handled and goes at once; a delayed run, and one deferred by the cap or quiet hours, stays a
`scheduled` row that the tick releases at the first tick at or after it is due (every TICK, 300 s, as
LIFECYCLE_TICK_SECONDS defaults), highest priority first (as `store.runs.due_runs` orders them). A
replay tick by tick would plan the triggers (each at its own event time), dispatch the no-delay runs at
their trigger's instant and the others at the ticks, each through `decide`. Between two triggers and two
due runs nothing changes, so this replay visits only those instants: the triggers in time order, and a
heap of runs (at their due time when they have no delay, else at the first tick at or after it). The
runs due at one instant come off the heap by priority, so the answer is the tick loop's, without the
empty ticks.

The triggers of the whole history after the warm-up are replayed until the last run the backtest counts
has settled, so the cap those runs meet is as full as it would have been. Other rules' runs drawn into
their hold-out group are never sent (production stores them `held_out`); the draw uses the shop's id, as
production's does. The work is bounded (`MAX_STEPS`): beyond it `BacktestTooLarge` asks for a shorter
period.

Consent is taken as it is now (the store holds no consent history from before the install): a shopper
who consents now may be mailed throughout, one who does not is left out throughout.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from plugin.core.backtest_notes import notes
from plugin.core.backtest_period import shop_zone
from plugin.core.backtest_timeline import (
    NOT_REPLAYABLE,
    TICK,
    ShopperHistory,
    StageTimeline,
    ceil_tick,
    event_triggers,
    facts_at,
    last_stage_change,
    stage_timeline,
    stage_triggers,
)
from plugin.core.policy import CONSENT_WAIT, PolicySnapshot, decide, frequency_cap, may_mail
from plugin.core.rules import PlannedRun, Profile, Trigger, plan_runs
from plugin.core.stages import Thresholds

CAP_WINDOW = timedelta(days=7)  # the longest window of the frequency cap
MAX_STEPS = 2_000_000  # triggers planned plus runs dispatched: about a minute of replay at most


class BacktestTooLarge(ValueError):
    """The replay would take more than MAX_STEPS steps: the merchant should ask for a shorter period."""


@dataclass(frozen=True)
class ShopPolicy:
    """The shop's settings the replay reads: stage thresholds, the frequency cap, quiet hours."""

    thresholds: Thresholds = Thresholds()
    cap_per_day: int = 1
    cap_per_week: int = 3
    quiet_start_hour: int = 21
    quiet_end_hour: int = 8
    timezone: str = "UTC"
    installed_at: datetime | None = None
    shop_id: int = 0  # in the runs' idempotency keys, so in the hold-out draw
    tick: timedelta = TICK


@dataclass(frozen=True)
class BacktestResult:
    """What the rule would have done with the triggers of [start, end) (the JSON the CLI and the admin give).

    `messages_triggered`: runs the rule planned (trigger and conditions held). Each then was `allowed`
    (sent, perhaps later than due), `capped` (held back by the frequency cap and never sent: the shopper
    had moved on when the cap let it go, or it was still held when the history ends), left out (no
    consent now, no address, unsubscribed, deleted), or no longer applied when due; the notes give the
    last two. `messages_quiet_hours_delayed`: runs quiet hours pushed to the morning at least once.
    `shoppers_reached`: shoppers sent at least one. The baseline reads them as the rule lift does
    (`store.rule_lift`): `shoppers_measured`, those with a message whose attribution window (from its
    due time, `attribution_days` long) has closed by now; `ordered_within_window`, those of them with a
    kept order placed in such a window.
    """

    rule: str
    start: datetime
    end: datetime
    shoppers_reached: int
    messages_triggered: int
    messages_allowed: int
    messages_capped: int
    messages_quiet_hours_delayed: int
    ordered_within_window: int
    shoppers_measured: int
    attribution_days: int
    first_at: datetime | None
    last_at: datetime | None
    by_week: list[tuple[date, int]]
    notes: list[str]

    def as_dict(self) -> dict:
        measured = self.shoppers_measured
        return {
            "rule": self.rule,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "shoppers_reached": self.shoppers_reached,
            "messages_triggered": self.messages_triggered,
            "messages_allowed": self.messages_allowed,
            "messages_capped": self.messages_capped,
            "messages_quiet_hours_delayed": self.messages_quiet_hours_delayed,
            "ordered_within_window": self.ordered_within_window,
            "shoppers_measured": measured,
            "baseline_conversion": self.ordered_within_window / measured if measured else None,
            "attribution_days": self.attribution_days,
            "first_at": self.first_at.isoformat() if self.first_at else None,
            "last_at": self.last_at.isoformat() if self.last_at else None,
            "by_week": [{"week_start": w.isoformat(), "messages": n} for w, n in self.by_week],
            "notes": list(self.notes),
        }


@dataclass(eq=False)
class SimulatedRun:
    """A planned run as the replay follows it; it has the fields `core.policy.decide` reads of a run."""

    planned: PlannedRun
    shopper: ShopperHistory
    counted: bool  # the backtested rule's, triggered in the period
    play_stage: str | None
    capped: bool = False  # deferred by the frequency cap at least once
    quiet: bool = False  # deferred by quiet hours at least once
    # sent | excluded (consent, address) | skipped (no longer applies) | superseded | held_out
    outcome: str | None = None
    sent_at: datetime | None = None
    due_at: datetime | None = None  # as the ledger keeps it: the planned time, then each deferral's

    @property
    def shopper_id(self) -> int:
        return self.shopper.shopper_id

    @property
    def action(self) -> str:
        return self.planned.action

    @property
    def play(self) -> str:
        return self.planned.play

    @property
    def trigger(self) -> str:
        return self.planned.trigger

    @property
    def marketing(self) -> bool:
        return self.planned.marketing

    @property
    def context(self) -> dict:
        return self.planned.context

    @property
    def recipient_email(self) -> str | None:
        return self.planned.recipient_email

    @property
    def priority(self) -> int:
        return self.planned.priority

    @property
    def cycle(self) -> str:
        return self.planned.cycle


def backtest(
    histories: list[ShopperHistory],
    rules: list[tuple[int, dict]],
    key: str,
    start: datetime,
    end: datetime,
    now: datetime,
    policy: ShopPolicy,
    attribution: timedelta,
    consent_wait: timedelta = CONSENT_WAIT,
    max_steps: int = MAX_STEPS,
) -> BacktestResult:
    """Replay `rules` (the backtested one, `key`, and the shop's other enabled rules) over the histories.

    The rule `key` is replayed as if enabled; triggers of the other rules from a cap window (and their
    longest delay) before `start` are replayed too, so the cap starts the period as full as it would be.

    Raises:
        BacktestTooLarge: the replay would take more than `max_steps` steps.
    """
    replay = Replay(histories, rules, key, start, end, now, policy, consent_wait, max_steps)
    replay.run()
    return summarise(replay, attribution)


class Replay:
    """The state of one replay: shoppers' stage timelines, the triggers, the heap of runs, sends so far."""

    def __init__(
        self, histories, rules, key, start, end, now, policy: ShopPolicy, consent_wait, max_steps=MAX_STEPS
    ):
        self.key, self.start, self.end, self.now = key, start, min(end, now), now
        self.policy, self.consent_wait = policy, consent_wait
        self.rules = [
            (rule_id, dict(rule, enabled=True) if rule["key"] == key else rule)
            for rule_id, rule in rules
            if rule["key"] == key or (rule["enabled"] and rule["action"] == "send_email")
        ]
        self.target_was_enabled = any(rule["key"] == key and rule["enabled"] for _, rule in rules)
        self.histories = {h.shopper_id: h for h in histories}
        self.timelines: dict[int, StageTimeline] = {}  # built on first need (`timeline`)
        longest = max((rule["delay_minutes"] for _, rule in self.rules), default=0)
        self.warm_up = start - CAP_WINDOW - timedelta(minutes=longest)
        self.steps, self.max_steps = 0, max_steps
        self.heap: list = []
        self.order = itertools.count()
        self.runs: list[SimulatedRun] = []
        self.keys: set[str] = set()
        self.sends: dict[int, list[datetime]] = defaultdict(list)  # marketing emails sent, by shopper
        self.pending_stage_runs: dict[int, list[SimulatedRun]] = defaultdict(list)
        self.open_counted = 0

    def timeline(self, shopper_id: int) -> StageTimeline:
        """The shopper's stage entries from the warm-up to now (built once, when first needed)."""
        found = self.timelines.get(shopper_id)
        if found is None:
            history = self.histories[shopper_id]
            found = stage_timeline(history, self.now, self.policy.thresholds, since=self.warm_up)
            self.timelines[shopper_id] = found
        return found

    def triggers(self) -> list[tuple[ShopperHistory, Trigger]]:
        """Every replayable trigger from the warm-up to now, in time order (same-instant ones by shopper)."""
        names = {rule["trigger"] for _, rule in self.rules} - set(NOT_REPLAYABLE)
        staged = any(name.startswith("stage:") for name in names)
        found = []
        for shopper_id, history in self.histories.items():
            triggers = event_triggers(history, names, self.warm_up, self.now)
            changes = last_stage_change(history, self.policy.thresholds) if staged else None
            if changes is not None and changes >= self.warm_up:  # else no stage entry to replay
                triggers += stage_triggers(self.timeline(shopper_id), names, self.warm_up, self.now)
            found += [(history, trigger) for trigger in triggers]
        found.sort(key=lambda pair: pair[1].at)  # stable
        return found

    def run(self) -> None:
        """Take the triggers and the due runs in time order (triggers first at one instant, then runs by
        priority), until now, or past the period once every run it counts has settled."""
        triggers = self.triggers()
        next_trigger = 0
        while next_trigger < len(triggers) or self.heap:
            trigger_first = next_trigger < len(triggers) and (
                not self.heap or triggers[next_trigger][1].at <= self.heap[0][0]
            )
            if trigger_first:
                history, trigger = triggers[next_trigger]
                at, next_trigger, run = trigger.at, next_trigger + 1, None
            else:
                at, *_, run = heapq.heappop(self.heap)
            if at > self.now or (at >= self.end and not self.open_counted):
                break
            self.steps += 1
            if self.steps > self.max_steps:
                raise BacktestTooLarge(
                    f"the backtest would replay more than {self.max_steps:,} triggers and sends: choose a "
                    "shorter period (from, to)"
                )
            if run is None:
                self.plan(history, trigger)
            else:
                self.dispatch(run, at)

    def plan(self, history: ShopperHistory, trigger: Trigger) -> None:
        """Plan the rules of one trigger, as the handlers and the tick do, with the facts of its time."""
        timeline = self.timeline(history.shopper_id)
        is_stage = trigger.name.startswith("stage:")
        if is_stage:
            self.supersede(history.shopper_id, trigger.cycle)
        facts = facts_at(history, trigger.at, inclusive=is_stage)
        profile = Profile(
            shopper_id=history.shopper_id,
            orders_count=facts.orders_count,
            total_spent=facts.total_spent,
            stage=timeline.stage_at(trigger.at),
            accepts_marketing=history.consents,
            locale=history.locale,
            last_order_at=facts.last_order_at,
            tags=history.tags,
            email=history.email,
            consent_at=None,  # consent as it is now, throughout the period
        )
        for planned in plan_runs(
            self.policy.shop_id, self.rules, profile, trigger, trigger.at, self.consent_wait
        ):
            if planned.error is not None or planned.idempotency_key in self.keys:
                continue
            self.keys.add(planned.idempotency_key)
            counted = planned.play == self.key and self.start <= trigger.at < self.end
            run = SimulatedRun(
                planned, history, counted, trigger.name.removeprefix("stage:") if is_stage else None
            )
            self.runs.append(run)
            if planned.gate is not None and planned.gate.status != "scheduled":
                run.outcome = "excluded"  # no consent now: it would wait in vain
                continue
            if planned.held_out and planned.play != self.key:
                run.outcome = "held_out"  # stored held out, never sent (the backtested rule's: see notes)
                continue
            self.open_counted += counted
            if is_stage:
                self.pending_stage_runs[history.shopper_id].append(run)
            self.push(run, planned.due_at, at_once=planned.due_at <= trigger.at)

    def push(self, run: SimulatedRun, due: datetime, at_once: bool = False) -> None:
        """Due at `due`: a run without delay goes then (enqueued by its handler), any other at the first
        tick at or after it (released by the tick)."""
        run.due_at = due
        when = due if at_once else ceil_tick(due, self.policy.tick)
        heapq.heappush(self.heap, (when, -run.priority, next(self.order), run))

    def supersede(self, shopper_id: int, cycle: str) -> None:
        """A new stage entry cancels the shopper's pending stage plays of other entries, as the store does."""
        for run in self.pending_stage_runs.pop(shopper_id, []):
            if run.outcome is None and run.cycle != cycle:
                self.settle(run, "superseded")
            elif run.outcome is None:
                self.pending_stage_runs[shopper_id].append(run)

    def settle(self, run: SimulatedRun, outcome: str, at: datetime | None = None) -> None:
        run.outcome = outcome
        self.open_counted -= run.counted
        if outcome == "sent":
            run.sent_at = at
            if run.marketing and run.action == "send_email":
                self.sends[run.shopper.shopper_id].append(at)

    def dispatch(self, run: SimulatedRun, at: datetime) -> None:
        """The run is due: `decide` sends it, skips it, or defers it (pushed back for later)."""
        if run.outcome is not None:
            return
        snapshot = self.snapshot(run, at)
        decision = decide(snapshot, run, at)
        if decision.skip is not None:
            excluded = snapshot.shopper_deleted or may_mail(snapshot, run) is not None
            self.settle(run, "excluded" if excluded else "skipped")
        elif decision.defer_until is not None:
            if frequency_cap(snapshot, run, at) is not None:  # the cap is told before quiet hours
                run.capped = True
            else:
                run.quiet = True
            self.push(run, decision.defer_until)
        else:
            self.settle(run, "sent", at)

    def snapshot(self, run: SimulatedRun, at: datetime) -> PolicySnapshot:
        """What `decide` reads as of `at`, from the history and the replay's own sends."""
        history, context, policy = run.shopper, run.context or {}, self.policy
        return PolicySnapshot(
            shopper_exists=True,
            shopper_deleted=history.deleted,
            shopper_stage=self.timeline(history.shopper_id).stage_at(at),
            shopper_email=history.email,
            shopper_consents=history.consents,
            shopper_timezone=history.timezone,
            last_order_at=facts_at(history, at).last_order_at,
            suppressed=history.suppressed and run.marketing,
            recent_sends=self.recent_sends(history.shopper_id, at),
            higher_priority_due=0,  # runs due at one instant come off the heap highest priority first
            cap_per_day=policy.cap_per_day,
            cap_per_week=policy.cap_per_week,
            quiet_start_hour=policy.quiet_start_hour,
            quiet_end_hour=policy.quiet_end_hour,
            shop_timezone=policy.timezone,
            **_subject_at(history, context, at),
        )

    def recent_sends(self, shopper_id: int, at: datetime) -> tuple[datetime, ...]:
        """The shopper's marketing sends in the cap's longest window before `at` (kept in time order)."""
        sends = self.sends.get(shopper_id, ())
        return tuple(sends[bisect.bisect_right(sends, at - CAP_WINDOW) :])


def _subject_at(history: ShopperHistory, context: dict, at: datetime) -> dict:
    """The state at `at` of the checkout or order the run is about."""
    facts: dict = {}
    if "checkout_token" in context:
        checkout = history.checkouts_by_token.get(context["checkout_token"])
        if checkout is not None:
            facts["checkout_completed"] = checkout.completed_at is not None and checkout.completed_at <= at
            facts["checkout_closed"] = checkout.closed_at is not None and checkout.closed_at <= at
    if "order_id" in context:
        order = history.orders_by_id.get(context["order_id"])
        if order is not None:
            facts["order_cancelled"] = order.cancelled_at is not None and order.cancelled_at <= at
            facts["order_refunded"] = bool(order.total and order.refunded_by(at) >= order.total)
    return facts


def summarise(replay: Replay, attribution: timedelta) -> BacktestResult:
    """Count the backtested rule's runs of the period: reached, allowed, held back, and the baseline."""
    counted = [run for run in replay.runs if run.counted]
    sent = [run for run in counted if run.outcome == "sent"]
    closed: dict[int, list[datetime]] = defaultdict(list)  # due times of windows closed by now
    for run in sent:
        if run.due_at + attribution <= replay.now:
            closed[run.shopper_id].append(run.due_at)
    ordered = sum(
        1
        for shopper_id, dues in closed.items()
        if _ordered_within(replay.histories[shopper_id], dues, attribution, replay.now)
    )
    times = sorted(run.sent_at for run in sent)
    return BacktestResult(
        rule=replay.key,
        start=replay.start,
        end=replay.end,
        shoppers_reached=len({run.shopper_id for run in sent}),
        messages_triggered=len(counted),
        messages_allowed=len(sent),
        messages_capped=sum(1 for run in counted if run.capped and run.outcome != "sent"),
        messages_quiet_hours_delayed=sum(1 for run in counted if run.quiet),
        ordered_within_window=ordered,
        shoppers_measured=len(closed),
        attribution_days=attribution.days,
        first_at=times[0] if times else None,
        last_at=times[-1] if times else None,
        by_week=_by_week(times, replay.policy.timezone),
        notes=notes(replay, counted, attribution),
    )


def _ordered_within(
    history: ShopperHistory, dues: list[datetime], attribution: timedelta, now: datetime
) -> bool:
    """A kept order placed by `now` in [due, due + attribution) of any of the shopper's messages (the
    window `store.rule_lift` counts)."""
    kept = sorted(o.placed_at for o in history.orders if o.cancelled_at is None and o.placed_at <= now)
    for due in dues:
        first = bisect.bisect_left(kept, due)
        if first < len(kept) and kept[first] < due + attribution:
            return True
    return False


def _by_week(times: list[datetime], timezone: str) -> list[tuple[date, int]]:
    """Messages per week, weeks from Monday in the shop's timezone."""
    zone = shop_zone(timezone)
    weeks: Counter = Counter()
    for at in times:
        day = at.astimezone(zone).date()
        weeks[day - timedelta(days=day.weekday())] += 1
    return sorted(weeks.items())
