"""A shop's stored history as the backtest replays it (`core.backtest`), loaded set-based: one SELECT per
table (shoppers, orders, refunds, checkouts, carts, suppressions), grouped by shopper in memory. Reads
only, in a short read-only session (`Database.read_session`: on SQLite no write lock, so webhooks and
workers write on while it loads); the replay then runs with no session open.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from plugin.core.backtest import BacktestResult, ShopPolicy, backtest
from plugin.core.backtest_period import period
from plugin.core.backtest_timeline import PAID_STATUSES, CheckoutFact, OrderFact, ShopperHistory
from plugin.core.facts import CONSENTING_STATES
from plugin.core.stages import Thresholds
from plugin.store.db import Database
from plugin.store.models import Cart, Checkout, Order, Refund, Shop, Shopper, Suppression
from plugin.store.rule_lift import ATTRIBUTION
from plugin.store.shops import shop_rules
from plugin.store.suppressions import email_hash

UNSAVED_RULE_ID = -1


class UnknownRuleError(LookupError):
    """The shop has no rule with this key (and no unsaved rule was given)."""


def backtest_rule(
    db: Database,
    shop_id: int,
    key: str,
    now: datetime,
    from_day: str | None = None,
    to_day: str | None = None,
    rule: dict | None = None,
) -> BacktestResult:
    """Backtest the shop's rule `key` (or `rule`, an unsaved one validated by RuleSchema) over the days
    `from_day`..`to_day` (YYYY-MM-DD, `core.backtest_period.period`): load in a read-only session, close
    it, replay.

    Raises:
        PeriodError: the dates are not a period the backtest replays.
        UnknownRuleError: no stored rule has the key and no `rule` was given.
        BacktestTooLarge: the replay would take too long (a shorter period may not).
    """
    with db.read_session() as session:
        shop = session.get(Shop, shop_id)
        start, end = period(from_day, to_day, now, shop.timezone)
        rules = shop_rules_with(session, shop, key, rule)
        histories, policy = load_histories(session, shop.id), shop_policy(shop)
    return backtest(histories, rules, key, start, end, now, policy, ATTRIBUTION)


def shop_rules_with(session: Session, shop: Shop, key: str, rule: dict | None) -> list[tuple[int, dict]]:
    """The shop's rules, with `rule` (unsaved) in place of the stored rule `key` when given.

    Raises:
        UnknownRuleError: no stored rule has the key and no `rule` was given.
    """
    rules = [(rule_id, definition) for rule_id, definition in shop_rules(session, shop.id)]
    stored = next((rule_id for rule_id, definition in rules if definition["key"] == key), None)
    if rule is not None:
        rules = [(i, d) for i, d in rules if d["key"] != key] + [
            (stored if stored is not None else UNSAVED_RULE_ID, dict(rule, key=key))
        ]
    elif stored is None:
        raise UnknownRuleError(f"no rule {key}")
    return rules


def shop_policy(shop: Shop) -> ShopPolicy:
    """The shop's stage thresholds, frequency cap, quiet hours and install time, as the replay reads them."""
    return ShopPolicy(
        thresholds=Thresholds.of(shop),
        cap_per_day=shop.cap_per_day,
        cap_per_week=shop.cap_per_week,
        quiet_start_hour=shop.quiet_start_hour,
        quiet_end_hour=shop.quiet_end_hour,
        timezone=shop.timezone or "UTC",
        installed_at=shop.installed_at,
        shop_id=shop.id,
    )


def load_histories(session: Session, shop_id: int) -> list[ShopperHistory]:
    """Every shopper of the shop with their orders (and refunds), checkouts and carts: six SELECTs."""
    orders, checkouts, carts = (
        _orders(session, shop_id),
        _checkouts(session, shop_id),
        _carts(session, shop_id),
    )
    suppressed = set(session.scalars(select(Suppression.email_hash).where(Suppression.shop_id == shop_id)))
    rows = session.execute(
        select(
            Shopper.id,
            Shopper.customer_id,
            Shopper.email,
            Shopper.consent_state,
            Shopper.consent_updated_at,
            Shopper.deleted_at,
            Shopper.locale,
            Shopper.tag_events,
            Shopper.timezone,
            Shopper.currency,
        )
        .where(Shopper.shop_id == shop_id)
        .order_by(Shopper.id)
    )
    return [
        ShopperHistory(
            shopper_id=row.id,
            email=row.email,
            consents=row.consent_state in CONSENTING_STATES and row.deleted_at is None,
            consent_at=row.consent_updated_at,
            deleted=row.deleted_at is not None,
            suppressed=bool(row.email) and email_hash(row.email) in suppressed,
            locale=row.locale,
            tags=tuple(sorted(tag for tag, event in (row.tag_events or {}).items() if event.get("on"))),
            timezone=row.timezone,
            currency=row.currency,
            orders=tuple(orders.get(row.customer_id, ())),
            checkouts=tuple(checkouts.get(row.customer_id, ())),
            cart_activity=tuple(carts.get(row.customer_id, ())),
        )
        for row in rows
    ]


def _orders(session: Session, shop_id: int) -> dict[int, list[OrderFact]]:
    refunds: dict[int, list] = defaultdict(list)
    for order_id, created_at, amount in session.execute(
        select(Refund.order_id, Refund.created_at, Refund.amount).where(Refund.shop_id == shop_id)
    ):
        refunds[order_id].append((created_at, Decimal(amount)))
    found: dict[int, list[OrderFact]] = defaultdict(list)
    for row in session.execute(
        select(
            Order.order_id,
            Order.customer_id,
            Order.placed_at,
            Order.cancelled_at,
            Order.total_price,
            Order.financial_status,
            Order.name,
            Order.currency,
        )
        .where(Order.shop_id == shop_id, Order.customer_id.is_not(None))
        .order_by(Order.placed_at)
    ):
        found[row.customer_id].append(
            OrderFact(
                order_id=row.order_id,
                placed_at=row.placed_at,
                total=Decimal(row.total_price or 0),
                cancelled_at=row.cancelled_at,
                refunds=tuple(refunds.get(row.order_id, ())),
                paid=row.financial_status in PAID_STATUSES,
                name=row.name,
                currency=row.currency,
            )
        )
    return found


def _checkouts(session: Session, shop_id: int) -> dict[int, list[CheckoutFact]]:
    found: dict[int, list[CheckoutFact]] = defaultdict(list)
    for row in session.execute(
        select(
            Checkout.token,
            Checkout.customer_id,
            Checkout.source_updated_at,
            Checkout.completed_at,
            Checkout.closed_at,
            Checkout.abandoned_checkout_url.is_not(None).label("recoverable"),
            Checkout.total_price,
            Checkout.currency,
        ).where(
            Checkout.shop_id == shop_id,
            Checkout.customer_id.is_not(None),
            Checkout.source_updated_at.is_not(None),
        )
    ):
        found[row.customer_id].append(
            CheckoutFact(
                token=row.token,
                updated_at=row.source_updated_at,
                completed_at=row.completed_at,
                closed_at=row.closed_at,
                recoverable=bool(row.recoverable),
                total=row.total_price,
                currency=row.currency,
            )
        )
    return found


def _carts(session: Session, shop_id: int) -> dict[int, list[datetime]]:
    found: dict[int, list[datetime]] = defaultdict(list)
    for customer_id, updated_at in session.execute(
        select(Cart.customer_id, Cart.source_updated_at).where(
            Cart.shop_id == shop_id, Cart.customer_id.is_not(None), Cart.source_updated_at.is_not(None)
        )
    ):
        found[customer_id].append(updated_at)
    return found
