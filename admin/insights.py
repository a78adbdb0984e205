"""What the admin shows, computed from the ledgers: shoppers per stage, weekly flows between stages,
messages per play and outcome, revenue attributed per play, a rule's audience, a shopper's timeline."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from plugin.core.rules import Profile, condition_holds
from plugin.store.models import ActionRun, Order, RunStatus, Shopper, Stage, StageTransition
from plugin.store.shoppers import count_by_stage, current_shoppers, profile_of

ATTRIBUTION_WINDOW = timedelta(days=7)
FLOW_WEEKS = 8


def overview(session: Session, shop_id: int, now: datetime) -> dict:
    stages = count_by_stage(session, shop_id)
    return {
        "stages": [{"stage": s.value, "shoppers": stages.get(s.value, 0)} for s in Stage],
        "flows": weekly_flows(session, shop_id, now),
        "messages": messages_per_play(session, shop_id),
        "revenue": revenue_per_play(session, shop_id),
    }


def weekly_flows(session: Session, shop_id: int, now: datetime) -> list[dict]:
    """Moves between stages per week (most recent FLOW_WEEKS weeks), busiest first within a week."""
    since = now - timedelta(weeks=FLOW_WEEKS)
    day = func.date(StageTransition.at)
    rows = session.execute(  # aggregated per day in SQL (same on SQLite and PostgreSQL), folded per week here
        select(day, StageTransition.from_stage, StageTransition.to_stage, func.count(StageTransition.id))
        .where(StageTransition.shop_id == shop_id, StageTransition.at >= since)
        .group_by(day, StageTransition.from_stage, StageTransition.to_stage)
    )
    weeks: dict[str, Counter] = defaultdict(Counter)
    for on, old, new, count in rows:
        on = date.fromisoformat(on) if isinstance(on, str) else on
        monday = (on - timedelta(days=on.weekday())).isoformat()
        weeks[monday][f"{old or 'new'}→{new}"] += count
    return [
        {"week": week, "moves": [{"move": m, "count": n} for m, n in weeks[week].most_common()]}
        for week in sorted(weeks)
    ]


def messages_per_play(session: Session, shop_id: int) -> list[dict]:
    """Per play: how many were sent, skipped, held out, deferred (waiting again), failed, pending."""
    rows = session.execute(
        select(
            ActionRun.play, ActionRun.status, ActionRun.deferred_reason.is_not(None), func.count(ActionRun.id)
        )
        .where(ActionRun.shop_id == shop_id, ActionRun.play.not_in(("stage_sync", "consent_sync")))
        .group_by(ActionRun.play, ActionRun.status, ActionRun.deferred_reason.is_not(None))
    )
    plays: dict[str, Counter] = defaultdict(Counter)
    for play, status, deferred, count in rows:
        if status == RunStatus.SUCCEEDED:
            plays[play]["sent"] += count
        elif status in (RunStatus.SCHEDULED, RunStatus.QUEUED, RunStatus.RUNNING):
            plays[play]["deferred" if deferred else "pending"] += count
        else:
            plays[play][str(status)] += count
    return [{"play": play, **counts} for play, counts in sorted(plays.items())]


def revenue_per_play(session: Session, shop_id: int) -> list[dict]:
    """Orders within ATTRIBUTION_WINDOW of a sent message to the same shopper, or using its code; each
    order counts once, for the latest message before it."""
    sent = session.execute(
        select(ActionRun.play, ActionRun.sent_at, ActionRun.discount_code, Shopper.customer_id)
        .join(Shopper, Shopper.id == ActionRun.shopper_id)
        .where(
            ActionRun.shop_id == shop_id,
            ActionRun.status == RunStatus.SUCCEEDED,
            ActionRun.sent_at.is_not(None),
        )
    ).all()
    if not sent:
        return []
    by_customer = defaultdict(list)
    codes = {}
    for play, at, code, customer in sent:
        by_customer[customer].append((at, play))
        if code:
            codes[code.upper()] = play
    orders = session.execute(
        select(
            Order.order_id,
            Order.customer_id,
            Order.placed_at,
            Order.total_price,
            Order.refunded,
            Order.discount_codes,
        ).where(
            Order.shop_id == shop_id,
            Order.cancelled_at.is_(None),
            or_(Order.customer_id.in_(list(by_customer)), Order.discount_codes.is_not(None)),
        )
    )
    revenue: dict[str, list] = defaultdict(lambda: [0, Decimal(0)])
    for _, customer, placed, total, refunded, used in orders:
        play = next((codes[c.upper()] for c in used or () if c.upper() in codes), None)
        if play is None:
            before = [
                (at, p) for at, p in by_customer.get(customer, ()) if at <= placed <= at + ATTRIBUTION_WINDOW
            ]
            play = max(before)[1] if before else None
        if play is not None:
            revenue[play][0] += 1
            revenue[play][1] += max(total - (refunded or 0), Decimal(0))
    return [{"play": p, "orders": n, "revenue": str(v)} for p, (n, v) in sorted(revenue.items())]


def audience(session: Session, shop_id: int, rule: dict, now: datetime, examples: int = 5) -> dict:
    """Shoppers the rule would reach now: in the stage it fires on (if a stage rule), matching its
    conditions, and, for marketing, with consent and an address."""
    stage = rule["trigger"].split(":", 1)[1] if rule["trigger"].startswith("stage:") else None
    query = select(Shopper).where(current_shoppers(shop_id))
    if stage:
        query = query.where(Shopper.stage == stage)
    count, sample = 0, []
    for shopper in session.scalars(query.execution_options(yield_per=1000)):
        profile: Profile = profile_of(shopper)
        if rule.get("marketing", True) and not (profile.accepts_marketing and profile.email):
            continue
        if all(condition_holds(c, profile, now) for c in rule.get("conditions") or []):
            count += 1
            if len(sample) < examples:
                sample.append({"id": shopper.id, "email": shopper.email, "stage": shopper.stage})
    return {"count": count, "examples": sample}


def timeline(session: Session, shopper: Shopper) -> list[dict]:
    """Orders, stage moves (with reasons) and messages (with status, why) of one shopper, newest first."""
    events = [
        {
            "at": o.placed_at,
            "kind": "order",
            "text": f"Order {o.name or o.order_id}: {o.total_price} {o.currency or ''}",
            "detail": "cancelled"
            if o.cancelled_at
            else (f"codes {', '.join(o.discount_codes)}" if o.discount_codes else ""),
        }
        for o in session.scalars(
            select(Order).where(Order.shop_id == shopper.shop_id, Order.customer_id == shopper.customer_id)
        )
    ]
    events += [
        {"at": t.at, "kind": "stage", "text": f"{t.from_stage or 'new'} → {t.to_stage}", "detail": t.reason}
        for t in session.scalars(select(StageTransition).where(StageTransition.shopper_id == shopper.id))
    ]
    for run in session.scalars(select(ActionRun).where(ActionRun.shopper_id == shopper.id)):
        why = run.skip_reason or run.deferred_reason or ""
        code = f"code {run.discount_code}" if run.discount_code else ""
        events.append(
            {
                "at": run.sent_at or run.finished_at or run.due_at,
                "kind": "message",
                "text": f"{run.play}: {run.status}",
                "detail": "; ".join(x for x in (why, code) if x),
                "run_id": run.id,
            }
        )
    events.sort(key=lambda e: e["at"], reverse=True)
    return [dict(e, at=e["at"].isoformat()) for e in events]
