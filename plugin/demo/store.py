"""A realistic synthetic store: shoppers with consent, locales, checkouts that convert and that don't,
orders over 18 months, cancellations and refunds, emitted as the webhooks Shopify would send.

Deterministic for a seed, so the demo, the benchmark and the scale test replay the same store.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from plugin.demo import synthetic as s

LOCALES = ("en", "en", "it", "pl", "ru")
CONSENT = (("subscribed", 55), ("not_subscribed", 25), ("unsubscribed", 15), ("pending", 5))
FIRST_NAMES = ("Ann", "Marco", "Zofia", "Ivan", "Lena", "Piotr", "Giulia", "Olga", "Sam", "Chiara")
HISTORY = timedelta(days=548)  # 18 months


@dataclass(frozen=True)
class Event:
    """One webhook to send: its topic, body and Shopify's ids for it."""

    topic: str
    payload: dict
    webhook_id: str
    triggered_at: datetime


def shopper_stream(index: int, now: datetime, seed: int) -> list[Event]:
    """Every webhook one shopper causes, in the order Shopify would send them."""
    rng = random.Random(seed * 1_000_003 + index)
    customer_id = 6_000_000_000 + index
    email = f"shopper{index}@example.com"
    locale = rng.choice(LOCALES)
    currency = "EUR"
    joined = now - HISTORY * rng.random()
    events: list[Event] = []

    def emit(topic: str, payload: dict, at: datetime) -> None:
        events.append(Event(topic, payload, f"demo-{seed}-{index}-{len(events)}", at))

    first = rng.choice(FIRST_NAMES)
    emit(
        "customers/create",
        s.customer_payload(customer_id, email, joined, first=first, last=f"N{index}"),
        joined,
    )
    state = _weighted(rng, CONSENT)
    emit(
        "customers_email_marketing_consent/update",
        s.consent_payload(customer_id, email, state, joined),
        joined,
    )
    order_times = _order_times(rng, joined, now)
    for n, placed in enumerate(order_times):
        order_id = customer_id * 100 + n
        total = Decimal(rng.randrange(1500, 22000)) / 100
        token = f"co-{order_id}" if rng.random() < 0.3 else None
        if token:
            emit(
                "checkouts/create",
                s.checkout_payload(
                    token, customer_id, email, placed - timedelta(minutes=9), total, locale=locale
                ),
                placed - timedelta(minutes=9),
            )
        body = s.order_payload(
            order_id,
            customer_id,
            placed,
            total,
            email=email,
            locale=locale,
            currency=currency,
            checkout_token=token,
        )
        emit("orders/create", body, placed)
        emit("orders/paid", body, placed + timedelta(seconds=5))
        fate = rng.random()
        if fate < 0.05:
            cancelled = placed + timedelta(hours=3)
            emit(
                "orders/cancelled",
                s.order_payload(
                    order_id, customer_id, placed, total, email=email, locale=locale, cancelled_at=cancelled
                ),
                cancelled,
            )
        elif fate < 0.10:
            refunded_at = placed + timedelta(days=4)
            emit(
                "refunds/create",
                s.refund_payload(order_id, order_id, (total / 2).quantize(Decimal("0.01")), refunded_at),
                refunded_at,
            )
    _maybe_abandon(rng, emit, customer_id, email, locale, joined, now, order_times)
    return events


def _order_times(rng: random.Random, joined: datetime, now: datetime) -> list[datetime]:
    """Order times for one shopper: none, one, a few or many; some stop buying long before now."""
    kind = rng.random()
    count = (
        0 if kind < 0.2 else 1 if kind < 0.42 else rng.randint(2, 3) if kind < 0.62 else rng.randint(4, 22)
    )
    if count == 0:
        return []
    span = (now - joined).total_seconds()
    active_until = joined + timedelta(seconds=span * rng.choice((0.35, 0.7, 1.0, 1.0)))
    window = max((active_until - joined).total_seconds(), 3600)
    return sorted(joined + timedelta(seconds=window * rng.random()) for _ in range(count))


def _maybe_abandon(rng, emit, customer_id, email, locale, joined, now, order_times) -> None:
    """Checkouts that never convert: recent ones make a shopper `engaged`; some come with a cart."""
    if rng.random() > 0.25:
        return
    at = max(joined, now - timedelta(days=rng.choice((2, 10, 25, 60))))
    if order_times and at <= order_times[-1]:
        return
    cart = f"cart-{customer_id}"
    emit("carts/create", s.cart_payload(cart, at - timedelta(minutes=20)), at - timedelta(minutes=20))
    emit(
        "checkouts/create",
        s.checkout_payload(
            f"ab-{customer_id}", customer_id, email, at, Decimal("49.90"), cart_token=cart, locale=locale
        ),
        at,
    )


def _weighted(rng: random.Random, options) -> str:
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


def store_streams(shopper_count: int, now: datetime, seed: int) -> Iterator[list[Event]]:
    """One event list per shopper."""
    for index in range(shopper_count):
        yield shopper_stream(index, now, seed)
