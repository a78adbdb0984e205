"""The tick's stage rules as one SQL CASE, built from the shop's thresholds (mirrors `core.stages.assess`;
tests hold the two to the same answers), and the set-based moves it drives (tick, backfill, the admin's
impact count).

With personal stages on and a fitted purchase model, the CASE reads each shopper's forecast (correlated
lookups in `shopper_predictions` by primary key) and the fit's cutoff and percentiles (literals).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Integer, String, and_, case, cast, func, insert, literal, or_, select, true, update
from sqlalchemy.orm import Session

from plugin.core.stages import Thresholds, loyal_by_spend, one_time_reason, prospect_reason
from plugin.store.models import PurchaseFit, Shop, Shopper, ShopperPrediction, Stage, StageTransition


def personal_fit(session: Session, shop: Shop) -> PurchaseFit | None:
    """The fit personal stages read: the shop's newest, when the setting is on and the fit succeeded."""
    if not getattr(shop, "personal_stages", False):
        return None
    fit = session.scalars(
        select(PurchaseFit)
        .where(PurchaseFit.shop_id == shop.id)
        .order_by(PurchaseFit.cutoff_day.desc(), PurchaseFit.id.desc())
        .limit(1)
    ).first()
    return fit if fit is not None and fit.reason is None else None


def _forecast(column):
    return select(column).where(ShopperPrediction.shopper_id == Shopper.id).scalar_subquery()


class _Personal:
    """The personal rules' SQL pieces for one fit (mirrors core.stages._personal)."""

    def __init__(self, fit: PurchaseFit, now: datetime, is_postgres: bool):
        thresholds = Thresholds()
        self.fit = fit
        self.alive = _forecast(ShopperPrediction.p_alive)
        self.gap = _forecast(ShopperPrediction.expected_gap_days)
        self.days = _whole_days(now, Shopper.last_order_at, is_postgres)
        self.applies = and_(
            self.alive.is_not(None),
            Shopper.last_order_at < literal(fit.cutoff_at, Shopper.last_order_at.type),
        )
        repeat, once = and_(self.applies, self.gap.is_not(None)), and_(self.applies, self.gap.is_(None))
        self.lapsed_repeat = and_(repeat, self.alive < thresholds.lapsed_p_alive)
        self.at_risk_repeat = and_(
            repeat, or_(self.alive < thresholds.at_risk_p_alive, self.days > 2 * self.gap)
        )
        self.lapsed_once = and_(once, self.days > fit.second_order_p95_days)
        self.at_risk_once = and_(once, self.days > fit.second_order_p80_days)
        self.is_postgres = is_postgres

    def repeat_reason(self):
        pg = self.is_postgres
        return (
            literal("orders about every ") + _span(_half_up(self.gap, pg), pg)
            + literal("; ") + _span(self.days, pg) + literal(" since the last; ")
            + _text(_half_up(self.alive * 100, pg), pg) + literal(" % likely still active")
        )  # fmt: skip

    def one_time_reason(self, share: int, limit: float):
        """core.stages.one_time_reason, word for word, with the days since the order in SQL."""
        tail = one_time_reason(0, share, limit).removeprefix("first order 0 days")
        return literal("first order ") + _span(self.days, self.is_postgres) + literal(tail)


def stage_case(shop: Shop, now: datetime, fit: PurchaseFit | None = None, is_postgres: bool = False):
    """The stage each shopper row should have as of `now`, as a SQL expression (mirrors stages.assess).

    `fit`: the shop's fitted purchase model when personal stages are on (`personal_fit`), else None.
    """
    active_since = now - timedelta(days=shop.engaged_days)
    no_orders = or_(Shopper.orders_count == 0, Shopper.last_order_at.is_(None))
    personal = _Personal(fit, now, is_postgres) if fit is not None else None
    fixed = true() if personal is None else ~personal.applies
    return case(
        (
            and_(
                no_orders, or_(Shopper.last_checkout_at >= active_since, Shopper.last_cart_at >= active_since)
            ),
            literal(Stage.ENGAGED.value),
        ),
        (no_orders, literal(Stage.PROSPECT.value)),
        *(
            ()
            if personal is None
            else (
                (personal.lapsed_repeat, literal(Stage.LAPSED.value)),
                (personal.at_risk_repeat, literal(Stage.AT_RISK.value)),
                (personal.lapsed_once, literal(Stage.LAPSED.value)),
                (personal.at_risk_once, literal(Stage.AT_RISK.value)),
            )
        ),
        (
            and_(fixed, Shopper.last_order_at <= now - timedelta(days=shop.lapsed_days)),
            literal(Stage.LAPSED.value),
        ),
        (
            and_(fixed, Shopper.last_order_at <= now - timedelta(days=shop.at_risk_days)),
            literal(Stage.AT_RISK.value),
        ),
        (
            or_(
                Shopper.orders_count >= shop.loyal_orders,
                and_(Shopper.orders_count >= shop.loyal_min_orders, Shopper.total_spent >= shop.loyal_spend),
            ),
            literal(Stage.LOYAL.value),
        ),
        (Shopper.orders_count >= 2, literal(Stage.REPEAT.value)),
        else_=literal(Stage.FIRST_TIME.value),
    )


def reason_case(shop: Shop, now: datetime, new_stage, is_postgres: bool, fit: PurchaseFit | None = None):
    """The reason `core.stages.assess` gives for `new_stage`, word for word, as a SQL expression."""
    thresholds = Thresholds.of(shop)
    days = _whole_days(now, Shopper.last_order_at, is_postgres)
    money = _text(Shopper.total_spent, is_postgres) + case(
        (Shopper.currency.is_(None), literal("")), else_=literal(" ") + Shopper.currency
    )
    orders = case(
        (Shopper.orders_count == 1, literal("1 order")),
        else_=_text(Shopper.orders_count, is_postgres) + literal(" orders"),
    )
    history = orders + literal(", ") + money + literal(" spent")
    recency = literal("last ") + _text(days, is_postgres) + literal(" days ago")
    activity = _later(Shopper.last_checkout_at, Shopper.last_cart_at, is_postgres)
    by_count = Shopper.orders_count >= thresholds.loyal_orders
    personal = _Personal(fit, now, is_postgres) if fit is not None else None
    timed = or_(new_stage == Stage.AT_RISK.value, new_stage == Stage.LAPSED.value)
    return case(
        *(
            ()
            if personal is None
            else (
                (and_(timed, personal.applies, personal.gap.is_not(None)), personal.repeat_reason()),
                (
                    and_(new_stage == Stage.LAPSED.value, personal.applies),
                    personal.one_time_reason(95, fit.second_order_p95_days),
                ),
                (
                    and_(new_stage == Stage.AT_RISK.value, personal.applies),
                    personal.one_time_reason(80, fit.second_order_p80_days),
                ),
            )
        ),
        (new_stage == Stage.PROSPECT.value, literal(prospect_reason(thresholds))),
        (
            new_stage == Stage.ENGAGED.value,
            literal("No order yet; checkout or cart activity ")
            + _text(_whole_days(now, activity, is_postgres), is_postgres)
            + literal(f" days ago (engaged within {thresholds.engaged_days})"),
        ),
        (
            new_stage == Stage.LAPSED.value,
            literal("No order for ") + _text(days, is_postgres)
            + literal(f" days (lapsed from {thresholds.lapsed_days}); ") + history,
        ),
        (
            new_stage == Stage.AT_RISK.value,
            literal("No order for ") + _text(days, is_postgres)
            + literal(f" days (at risk from {thresholds.at_risk_days}); ") + history,
        ),
        (
            and_(new_stage == Stage.LOYAL.value, by_count),
            history + literal(f" (loyal from {thresholds.loyal_orders} orders); ") + recency,
        ),
        (
            new_stage == Stage.LOYAL.value,
            history + literal(f" ({loyal_by_spend(thresholds)}); ") + recency,
        ),
        (new_stage == Stage.REPEAT.value, history + literal("; ") + recency),
        else_=literal("First order, ") + money + literal("; ") + recency,
    )  # fmt: skip


def _whole_days(now: datetime, column, is_postgres: bool):
    """Whole days from `column` to `now`, never below 0 (Python's `max(delta.days, 0)`)."""
    instant = literal(now, Shopper.last_order_at.type)
    if is_postgres:
        return func.greatest(func.floor(func.extract("epoch", instant - column) / 86400), 0)
    # Whole seconds on both sides (julianday's floating point could land a hair below a whole day).
    seconds = func.strftime("%s", instant) - func.strftime("%s", column)
    return func.max(cast(seconds, Integer) // 86400, 0)


def _half_up(value, is_postgres: bool):
    """floor(value + 0.5) as an integer, for value >= 0 (core.stages.half_up)."""
    if is_postgres:
        return cast(func.floor(value + 0.5), Integer)
    return cast(value + 0.5, Integer)  # SQLite's CAST truncates: the floor of a non-negative number


def _span(days, is_postgres: bool):
    """core.stages.span: whole days as days under two weeks, weeks under nine, then months."""
    whole = cast(days, Integer)
    return case(
        (whole == 1, literal("1 day")),
        (whole < 14, _text(whole, is_postgres) + literal(" days")),
        (whole < 63, _text((whole + 3) // 7, is_postgres) + literal(" weeks")),
        else_=_text((whole + 15) // 30, is_postgres) + literal(" months"),
    )


def _text(value, is_postgres: bool):
    """A number as `assess` prints it: integers as they are, money with two decimals."""
    if value is Shopper.total_spent:
        return cast(value, String) if is_postgres else func.printf("%.2f", value)
    return cast(cast(value, Integer), String)


def _later(first, second, is_postgres: bool):
    """The later of two nullable instants (NULL only when both are)."""
    if is_postgres:
        return func.greatest(first, second)
    return func.max(func.coalesce(first, second), func.coalesce(second, first))


def move_stages(
    session: Session,
    shop: Shop,
    now: datetime,
    is_postgres: bool,
    cause: str = "tick",
) -> dict[str, int]:
    """Apply every due move of one shop in three statements; return counts per move.

    The tick's moves (cause "tick") plan stage plays afterwards; the backfill's (cause "backfill") do not.
    """
    fit = personal_fit(session, shop)
    new_stage = stage_case(shop, now, fit, is_postgres)
    why = reason_case(shop, now, new_stage, is_postgres, fit)
    due = and_(Shopper.shop_id == shop.id, Shopper.deleted_at.is_(None), new_stage != Shopper.stage)
    if is_postgres:  # hold the rows against a worker restaging one of them meanwhile
        session.execute(select(Shopper.id).where(due).with_for_update())
    counts = {
        f"{old}→{new}": n
        for old, new, n in session.execute(
            select(Shopper.stage, new_stage, func.count(Shopper.id))
            .where(due)
            .group_by(Shopper.stage, new_stage)
        )
    }
    if not counts:
        return {}
    session.execute(
        insert(StageTransition).from_select(
            ["shop_id", "shopper_id", "from_stage", "to_stage", "at", "reason", "cause"],
            select(
                literal(shop.id),
                Shopper.id,
                Shopper.stage,
                new_stage,
                literal(now, StageTransition.at.type),
                why,
                literal(cause),
            ).where(due),
        )
    )
    session.execute(
        update(Shopper)
        .where(due)
        .values(stage=new_stage, stage_reason=why, stage_changed_at=now)
        .execution_options(synchronize_session=False)
    )
    return counts
