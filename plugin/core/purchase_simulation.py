"""Synthetic shops drawn from known BG/NBD and Gamma-Gamma parameters: what the fits must recover.

Used by the tests and the benchmark; pure numpy, driven by a caller's Generator so a seed fixes the shop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class TrueParameters:
    """The parameters a synthetic shop is drawn from (alpha in days, gamma in currency)."""

    r: float
    alpha: float
    a: float
    b: float
    p: float
    q: float
    gamma: float


@dataclass(frozen=True)
class SimulatedOrders:
    """Per-order rows as a shop would hold them: shopper id, day number, net amount, kept or not."""

    shopper: NDArray[np.int64]
    day: NDArray[np.int64]
    net: NDArray[np.float64]
    kept: NDArray[np.bool_]

    def __len__(self) -> int:
        """Return the number of order rows."""
        return len(self.day)


def simulate_repeats(
    rng: np.random.Generator, T: NDArray, r: float, alpha: float, a: float, b: float
) -> tuple[NDArray, NDArray]:
    """Draw (x, t_x) in continuous time for shoppers observed for T after their first purchase.

    While alive, purchases arrive at rate λ, so the count by T is Poisson(λT) with uniform arrival times;
    dropping out after each repeat with probability p caps it at a Geometric(p) count. The x-th of N
    uniform arrival times is T · Beta(x, N − x + 1).
    """
    lam = rng.gamma(r, 1 / alpha, size=len(T))
    drop = rng.beta(a, b, size=len(T))
    arrivals = rng.poisson(lam * T)
    x = np.minimum(arrivals, rng.geometric(drop))
    t_x = np.zeros(len(T))
    some = x > 0
    t_x[some] = T[some] * rng.beta(x[some], arrivals[some] - x[some] + 1)
    return x, t_x


def simulate_orders(
    rng: np.random.Generator,
    truth: TrueParameters,
    *,
    shoppers: int,
    first_day: int,
    acquisition_days: int,
    end_day: int,
    split_share: float = 0.0,
    cancelled_share: float = 0.0,
) -> SimulatedOrders:
    """Draw a shop's orders up to `end_day`, first purchases spread over `acquisition_days`.

    A `split_share` of kept orders is split in two orders on the same day (the model sees one occasion),
    and a `cancelled_share` of extra orders is added with kept=False (the model must not see them).
    """
    start = first_day + rng.uniform(0, acquisition_days, size=shoppers)
    lam = rng.gamma(truth.r, 1 / truth.alpha, size=shoppers)
    drop = rng.beta(truth.a, truth.b, size=shoppers)
    arrivals = rng.poisson(lam * np.maximum(end_day + 1 - start, 0))
    repeats = np.minimum(arrivals, rng.geometric(drop))
    owner = np.repeat(np.arange(shoppers), arrivals)
    when = start[owner] + rng.uniform(0, 1, size=len(owner)) * (end_day + 1 - start[owner])
    order = np.lexsort((when, owner))
    owner, when = owner[order], when[order]
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(arrivals) - arrivals, arrivals)
    kept_repeat = rank < repeats[owner]
    shopper = np.concatenate([np.arange(shoppers), owner[kept_repeat]])
    time = np.concatenate([start, when[kept_repeat]])
    scale = rng.gamma(truth.q, 1 / truth.gamma, size=shoppers)
    net = rng.gamma(truth.p, 1 / scale[shopper])
    orders = SimulatedOrders(shopper, np.floor(time).astype(np.int64), net, np.ones(len(time), dtype=bool))
    return _shuffle(rng, _add_cancelled(rng, _split(rng, orders, split_share), cancelled_share))


def _split(rng: np.random.Generator, orders: SimulatedOrders, share: float) -> SimulatedOrders:
    """Split a share of orders into two on the same day, the net shared between them."""
    pick = np.flatnonzero(rng.uniform(size=len(orders)) < share)
    part = rng.uniform(0.2, 0.8, size=len(pick))
    net = orders.net.copy()
    net[pick] *= part
    return SimulatedOrders(
        np.concatenate([orders.shopper, orders.shopper[pick]]),
        np.concatenate([orders.day, orders.day[pick]]),
        np.concatenate([net, orders.net[pick] * (1 - part)]),
        np.concatenate([orders.kept, orders.kept[pick]]),
    )


def _add_cancelled(rng: np.random.Generator, orders: SimulatedOrders, share: float) -> SimulatedOrders:
    """Add cancelled orders (kept=False) for a share of shoppers' orders, a few days after them."""
    pick = np.flatnonzero(rng.uniform(size=len(orders)) < share)
    return SimulatedOrders(
        np.concatenate([orders.shopper, orders.shopper[pick]]),
        np.concatenate([orders.day, orders.day[pick] + rng.integers(1, 5, size=len(pick))]),
        np.concatenate([orders.net, orders.net[pick]]),
        np.concatenate([orders.kept, np.zeros(len(pick), dtype=bool)]),
    )


def _shuffle(rng: np.random.Generator, orders: SimulatedOrders) -> SimulatedOrders:
    """Put the rows in a random order: the preparation must not rely on any."""
    order = rng.permutation(len(orders))
    return SimulatedOrders(orders.shopper[order], orders.day[order], orders.net[order], orders.kept[order])
