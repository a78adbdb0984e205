"""A shop's orders as the purchase model sees them: one summary per shopper, as of a cutoff day.

The definitions are Fader, Hardie & Lee's ("Counting your customers the easy way", 2005): a purchase
occasion is a day (in the shop's time zone) with at least one kept order, several orders on one day count
once with their nets summed, and the first occasion is not a repeat. `x` is the number of repeat occasions,
`t_x` the days from the first occasion to the last, `T` the days from the first occasion to the cutoff.
These reproduce the paper's CDNOW summary (2,357 shoppers, 2,457 repeat occasions) exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

MIN_REPEAT_BUYERS = 100
MIN_HISTORY_DAYS = 90


@dataclass(frozen=True)
class ShopperSummaries:
    """Per-shopper purchase summaries as of `cutoff_day`, one entry per shopper, sorted by shopper.

    `spend_count` and `spend_mean` describe the repeat occasions with a positive net only (the Gamma-Gamma
    input); `spend_mean` is NaN where there is none.
    """

    shopper: NDArray
    x: NDArray[np.int64]
    t_x: NDArray[np.int64]
    T: NDArray[np.int64]
    first_day: NDArray[np.int64]
    last_day: NDArray[np.int64]
    spend_count: NDArray[np.int64]
    spend_mean: NDArray[np.float64]
    cutoff_day: int

    def __len__(self) -> int:
        """Return the number of shoppers."""
        return len(self.shopper)


@dataclass(frozen=True)
class Occasions:
    """Purchase occasions (shopper, day, net), sorted by shopper then day; `shopper` indexes `shoppers`."""

    shoppers: NDArray
    shopper: NDArray[np.int64]
    day: NDArray[np.int64]
    net: NDArray[np.float64]


def find_occasions(
    shopper: ArrayLike, day: ArrayLike, net: ArrayLike, kept: ArrayLike, *, last_day: int | None = None
) -> Occasions:
    """Collapse kept orders (on or before `last_day`, if given) into one occasion per shopper and day."""
    day = np.asarray(day, dtype=np.int64)
    keep = np.asarray(kept, dtype=bool)
    if last_day is not None:
        keep = keep & (day <= last_day)
    shoppers, code = np.unique(np.asarray(shopper)[keep], return_inverse=True)
    day = day[keep]
    if len(day) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Occasions(shoppers, empty, empty, np.zeros(0))
    low = day.min()
    span = np.int64(day.max() - low + 1)
    keys, occasion = np.unique(code.astype(np.int64) * span + (day - low), return_inverse=True)
    nets = np.bincount(occasion, weights=np.asarray(net, dtype=np.float64)[keep], minlength=len(keys))
    return Occasions(shoppers, keys // span, keys % span + low, nets)


def summarise_orders(
    shopper: ArrayLike, day: ArrayLike, net: ArrayLike, kept: ArrayLike, cutoff_day: int
) -> ShopperSummaries:
    """Summarise per-order rows (shopper id, integer day, net amount, kept?) as of `cutoff_day`.

    Shoppers with no kept order on or before the cutoff have no first occasion and are left out.
    """
    return summarise_occasions(find_occasions(shopper, day, net, kept, last_day=cutoff_day), cutoff_day)


def summarise_occasions(occasions: Occasions, cutoff_day: int) -> ShopperSummaries:
    """Turn occasions (all on or before `cutoff_day`) into per-shopper summaries."""
    count = np.bincount(occasions.shopper, minlength=len(occasions.shoppers))
    start = np.cumsum(count) - count
    first = occasions.day[start]
    last = occasions.day[start + count - 1]
    repeat = np.ones(len(occasions.day), dtype=bool)
    repeat[start] = False
    spent = repeat & (occasions.net > 0)
    spend_count = np.bincount(occasions.shopper[spent], minlength=len(count))
    spend_sum = np.bincount(occasions.shopper[spent], weights=occasions.net[spent], minlength=len(count))
    with np.errstate(invalid="ignore", divide="ignore"):
        spend_mean = np.where(spend_count > 0, spend_sum / spend_count, np.nan)
    return ShopperSummaries(
        shopper=occasions.shoppers,
        x=count - 1,
        t_x=last - first,
        T=cutoff_day - first,
        first_day=first,
        last_day=last,
        spend_count=spend_count,
        spend_mean=spend_mean,
        cutoff_day=int(cutoff_day),
    )


def reason_not_to_fit(summaries: ShopperSummaries) -> str | None:
    """Say why a shop's history is too thin to fit the models on, or None when it is enough."""
    history = summaries.cutoff_day - int(summaries.first_day.min()) if len(summaries) else 0
    if history < MIN_HISTORY_DAYS:
        return f"{history} days of order history, the model needs at least {MIN_HISTORY_DAYS}"
    repeat_buyers = int(np.count_nonzero(summaries.x))
    if repeat_buyers < MIN_REPEAT_BUYERS:
        return f"{repeat_buyers} repeat buyers, the model needs at least {MIN_REPEAT_BUYERS}"
    spenders = int(np.count_nonzero(summaries.spend_count))
    if spenders < MIN_REPEAT_BUYERS:
        return (
            f"{spenders} repeat buyers with a paid repeat order, the spend model needs at least "
            f"{MIN_REPEAT_BUYERS}"
        )
    return None
