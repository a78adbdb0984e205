"""What a handler works with: the delivery's transaction, the shop, the one clock, and what to do after
commit."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from plugin.core.policy import CONSENT_WAIT
from plugin.core.rules import Profile, Trigger
from plugin.core.stages import Thresholds, assess
from plugin.store import runs, shopper_book, shoppers
from plugin.store.db import Database
from plugin.store.models import Shop, Shopper, StageTransition
from plugin.store.shoppers import facts_of


@dataclass
class HandlerContext:
    """What a handler needs: the session of this delivery's transaction, the shop, and the one clock."""

    db: Database
    session: Session
    shop: Shop | None
    topic: str
    now: datetime
    triggered_at: datetime | None = None
    delivery_id: int | None = None
    shop_domain: str | None = None  # the verified header's, even when the shop is not installed
    planned_runs: list[int] = field(default_factory=list)  # queued after commit when due now
    jobs: list[tuple[str, int]] = field(default_factory=list)  # (queue.MAINTENANCE_JOBS name, shop id)
    consent_wait: timedelta = CONSENT_WAIT  # LIFECYCLE_CONSENT_WAIT_HOURS
    # The batch stored this delivery's facts (its order, refunds, checkout completion) by table before
    # the handlers ran (`store.bulk_orders`); the handler does the shopper's part only.
    facts_stored: bool = False

    def trigger(
        self,
        shopper: Shopper,
        name: str,
        at: datetime | None,
        cycle: str,
        profile: Profile | None = None,
        **context,
    ) -> None:
        """Plan the rules this event triggers for the shopper (at: when it happened in the store), with
        the shopper's order facts as of that time (`profile`: those facts, when the caller has read them
        after a flush, as of min(at, now))."""

        event = Trigger(
            name=name,
            at=at or self.triggered_at or self.now,
            cycle=cycle,
            source=self.topic,
            context={k: v for k, v in context.items() if v is not None},
        )
        if profile is None:
            self.flush_for(shopper)
            profile = shoppers.profile_as_of(self.session, shopper, min(event.at, self.now))
        self.planned_runs += runs.plan(
            self.db, self.session, self.shop, profile, event, self.now, consent_wait=self.consent_wait
        )

    def flush_for(self, shopper: Shopper) -> None:
        """Write what is pending so the SQL that reads the shopper's facts sees it; nothing to write when
        the batch's book holds the shopper (`store.shopper_book`: answered from memory, written with the
        batch)."""
        if shopper_book.holding(self.session, shopper) is None:
            self.session.flush()


def restage(ctx: HandlerContext, shopper: Shopper) -> None:
    """Reclassify the shopper as of ctx.now; record a transition when the stage changes.

    With the stage unchanged, the entry it counts from may still have moved (an order arriving late):
    `runs.replan_stage_entry` plans the entry's plays again where it did."""
    book = shopper_book.holding(ctx.session, shopper)
    prediction = runs.personal_prediction(ctx.session, ctx.shop, shopper)
    assessment = assess(facts_of(shopper), ctx.now, Thresholds.of(ctx.shop), prediction=prediction)
    shopper.stage_reason = assessment.reason
    if shopper.stage == assessment.stage and shopper.stage_changed_at is not None:
        ctx.flush_for(shopper)
        ctx.planned_runs += runs.replan_stage_entry(
            ctx.db, ctx.session, ctx.shop, shopper, ctx.topic, ctx.now, ctx.consent_wait, prediction
        )
        return
    transition = dict(
        shop_id=ctx.shop.id,
        shopper_id=shopper.id,
        from_stage=shopper.stage if shopper.stage_changed_at is not None else None,
        to_stage=assessment.stage,
        at=ctx.now,
        reason=assessment.reason,
        cause=ctx.topic,
    )
    if book is not None:
        book.new_transitions.append(transition)  # inserted with the batch's others by `book.write`
    else:
        ctx.session.add(StageTransition(**transition))
    shopper.stage = assessment.stage
    shopper.stage_changed_at = ctx.now

    ctx.flush_for(shopper)
    ctx.planned_runs += runs.plan_stage_entry(
        ctx.db,
        ctx.session,
        ctx.shop,
        shopper,
        ctx.now,
        ctx.topic,
        ctx.now,
        consent_wait=ctx.consent_wait,
        prediction=prediction,
    )
