"""Lift of a play over its hold-out group: the difference of two conversion rates and its 95 % interval.

The interval is Newcombe's method 10 (Newcombe 1998, "Interval estimation for the difference between
independent proportions"): the Wilson score interval of each rate, combined. It stays inside [-1, 1] and
behaves with small counts and rates near 0 or 1, where the textbook Wald interval does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile

# Below these, an interval would be too wide to say anything and a rate too jumpy to show: the admin says
# "not enough data yet" instead. 30 per arm is the usual floor for a normal-based interval, and with fewer
# than 5 conversions in all the lift is one or two orders either way.
MIN_SHOPPERS_PER_ARM = 30
MIN_CONVERSIONS = 5


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Return the Wilson score interval (no continuity correction) of a proportion successes / n."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    z2 = z * z
    centre = (successes + z2 / 2) / (n + z2)
    half = z * math.sqrt(successes * (n - successes) / n + z2 / 4) / (n + z2)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(x1: int, n1: int, x2: int, n2: int, z: float = Z_95) -> tuple[float, float]:
    """Return Newcombe's hybrid score interval (method 10) for the difference x1/n1 − x2/n2."""
    p1, p2 = x1 / n1, x2 / n2
    low1, high1 = wilson_interval(x1, n1, z)
    low2, high2 = wilson_interval(x2, n2, z)
    difference = p1 - p2
    low = difference - math.sqrt((p1 - low1) ** 2 + (high2 - p2) ** 2)
    high = difference + math.sqrt((high1 - p1) ** 2 + (p2 - low2) ** 2)
    return low, high


@dataclass(frozen=True)
class ArmCounts:
    """One arm of a play: shoppers assigned to it, how many converted, and their revenue."""

    n: int
    conversions: int
    revenue: float

    def __post_init__(self) -> None:
        """Refuse counts that cannot be."""
        if self.n < 0 or not 0 <= self.conversions <= self.n:
            raise ValueError(f"need 0 <= conversions <= n, got {self.conversions} of {self.n}")


@dataclass(frozen=True)
class Lift:
    """Absolute lift in conversion rate (sent minus held out) with its 95 % interval, and the revenue it made.

    `incremental_revenue` is what the sent arm earned beyond what it would have at the held-out arm's
    revenue per shopper: revenue_sent − n_sent × revenue_held_out / n_held_out.
    """

    absolute_lift: float
    low: float
    high: float
    sent_rate: float
    held_out_rate: float
    incremental_revenue: float


@dataclass(frozen=True)
class NotEnoughData:
    """Why a lift is not shown yet."""

    reason: str


def measure_lift(sent: ArmCounts, held_out: ArmCounts) -> Lift | NotEnoughData:
    """Compare the arm that was sent the play with the held-out arm, or say why it is too early to."""
    if min(sent.n, held_out.n) < MIN_SHOPPERS_PER_ARM:
        return NotEnoughData(
            f"not enough data yet: {sent.n} sent and {held_out.n} held out, "
            f"at least {MIN_SHOPPERS_PER_ARM} in each are needed"
        )
    conversions = sent.conversions + held_out.conversions
    if conversions < MIN_CONVERSIONS:
        return NotEnoughData(
            f"not enough data yet: {conversions} conversions, at least {MIN_CONVERSIONS} are needed"
        )
    low, high = newcombe_interval(sent.conversions, sent.n, held_out.conversions, held_out.n)
    sent_rate, held_out_rate = sent.conversions / sent.n, held_out.conversions / held_out.n
    return Lift(
        absolute_lift=sent_rate - held_out_rate,
        low=low,
        high=high,
        sent_rate=sent_rate,
        held_out_rate=held_out_rate,
        incremental_revenue=float(sent.revenue) - sent.n * float(held_out.revenue) / held_out.n,
    )
