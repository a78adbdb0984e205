"""The BG/NBD purchase model (Fader, Hardie & Lee, "Counting your customers the easy way", 2005).

While alive, a shopper buys at a Poisson rate λ ~ Gamma(r, α); after each repeat purchase they drop out
with probability p ~ Beta(a, b). The fit is maximum likelihood over log-parameters with an analytic
gradient; the likelihood is computed in the log domain and its terms are factored over the distinct values
of x, t_x and T (a shop's summaries in days hold a few hundred of each), so a large shop costs little more
than a small one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy  # its submodules load on first use: `lifecycle` commands and workers start without them
from numpy.typing import ArrayLike, NDArray

UNITS = {"days": 1.0, "weeks": 7.0}


class FitError(Exception):
    """The optimiser found no finite maximum of the likelihood."""


@dataclass(frozen=True)
class BgNbdFit:
    """Fitted BG/NBD parameters; `alpha` is in `unit`, the log-likelihood is of the data in that unit."""

    r: float
    alpha: float
    a: float
    b: float
    unit: str
    log_likelihood: float
    shoppers: int

    @property
    def unit_days(self) -> float:
        """Return the length of the fit's time unit in days."""
        return UNITS[self.unit]


def unit_length(unit: str) -> float:
    """Return the length in days of a time unit ("days" or "weeks")."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {sorted(UNITS)}, not {unit!r}")
    return UNITS[unit]


def bg_nbd_log_likelihood(params: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> NDArray:
    """Return each shopper's log-likelihood under (r, alpha, a, b), times in alpha's unit."""
    r, alpha, a, b = (float(v) for v in params)
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    head = scipy.special.gammaln(r + x) - scipy.special.gammaln(r) + r * np.log(alpha)
    head += scipy.special.betaln(a, b + x) - scipy.special.betaln(a, b)
    stay = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore"):
        leave = np.log(a) - np.log(np.maximum(b + x - 1, 0)) - (r + x) * np.log(alpha + t_x)
    return head + np.logaddexp(stay, np.where(x > 0, leave, -np.inf))


class _Likelihood:
    """The negative mean log-likelihood over log-parameters, with its gradient, factored by distinct value."""

    def __init__(self, x: NDArray, t_x: NDArray, T: NDArray, weights: NDArray) -> None:
        self.xs, self.ix = np.unique(x, return_inverse=True)
        self.ts, self.it = np.unique(t_x, return_inverse=True)
        self.Ts, self.iT = np.unique(T, return_inverse=True)
        self.x = x
        self.repeat = x > 0
        self.w = weights
        self.total = float(weights.sum())
        self.wx = np.bincount(self.ix, weights=weights, minlength=len(self.xs))

    def __call__(self, theta: NDArray) -> tuple[float, NDArray]:
        """Return the objective and its gradient at log-parameters theta."""
        r, alpha, a, b = np.exp(theta)
        head, d_head = self._head(r, alpha, a, b)
        tail, d_tail = self._tail(r, alpha, a, b)
        value = float(self.wx @ head + self.w @ tail)
        grad = d_head @ self.wx + d_tail @ self.w
        return -value / self.total, -grad * np.array([r, alpha, a, b]) / self.total

    def _head(self, r: float, alpha: float, a: float, b: float) -> tuple[NDArray, NDArray]:
        """Return the terms that depend on x alone, per distinct x, and their derivatives."""
        xs, psi = self.xs, scipy.special.digamma
        head = scipy.special.gammaln(r + xs) - scipy.special.gammaln(r) + r * np.log(alpha)
        head += scipy.special.betaln(a, b + xs) - scipy.special.betaln(a, b)
        d_head = np.array(
            [
                psi(r + xs) - psi(r) + np.log(alpha),
                np.full_like(xs, r / alpha),
                psi(a + b) - psi(a + b + xs),
                psi(b + xs) - psi(a + b + xs) - psi(b) + psi(a + b),
            ]
        )
        return head, d_head

    def _tail(self, r: float, alpha: float, a: float, b: float) -> tuple[NDArray, NDArray]:
        """Return log(A3 + A4) per row ("still alive at T" or "gone after the last purchase"), derivatives."""
        x = self.x
        log_aT, log_at = np.log(alpha + self.Ts)[self.iT], np.log(alpha + self.ts)[self.it]
        inv_bx = np.zeros_like(self.xs)
        inv_bx[self.xs > 0] = 1 / (b + self.xs[self.xs > 0] - 1)
        stay = -(r + x) * log_aT
        with np.errstate(divide="ignore"):
            leave = np.where(self.repeat, np.log(a) + np.log(inv_bx)[self.ix] - (r + x) * log_at, -np.inf)
        tail = np.logaddexp(stay, leave)
        gone = np.exp(leave - tail)  # the posterior weight of "dropped out after the last purchase"
        alive = 1 - gone
        inv_aT, inv_at = (1 / (alpha + self.Ts))[self.iT], (1 / (alpha + self.ts))[self.it]
        d_tail = np.array(
            [
                -(alive * log_aT + gone * log_at),
                -(r + x) * (alive * inv_aT + gone * inv_at),
                gone / a,
                -gone * inv_bx[self.ix],
            ]
        )
        return tail, d_tail


def _distinct_rows(*columns: NDArray) -> tuple[NDArray, NDArray]:
    """Return the index of each distinct row's first occurrence and every row's distinct-row number.

    One integer key from the columns' codes, compacted after each column: a 1-d unique is much faster
    than np.unique(axis=0).
    """
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for column in columns:
        values, code = np.unique(column, return_inverse=True)
        _, key = np.unique(key * len(values) + code.ravel(), return_inverse=True)
    _, first, inverse = np.unique(key.ravel(), return_index=True, return_inverse=True)
    return first, inverse.ravel()


def _aggregate(x: NDArray, t_x: NDArray, T: NDArray, weights: NDArray) -> tuple[NDArray, ...]:
    """Merge identical (x, t_x, T) rows, summing their weights."""
    first, inverse = _distinct_rows(x, t_x, T)
    return x[first], t_x[first], T[first], np.bincount(inverse, weights=weights, minlength=len(first))


def _check_summaries(x: NDArray, t_x: NDArray, T: NDArray) -> None:
    """Refuse summaries that no purchase history produces."""
    if len(x) == 0 or not len(x) == len(t_x) == len(T):
        raise ValueError("the purchase fit needs one (x, t_x, T) per shopper, and at least one shopper")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > T) or np.any((x == 0) & (t_x != 0)):
        raise ValueError("summaries need x >= 0, 0 <= t_x <= T, and t_x = 0 where x = 0")


def fit_bg_nbd(
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike, *, unit: str = "days", weights: ArrayLike | None = None
) -> BgNbdFit:
    """Fit the BG/NBD by maximum likelihood to repeat counts x, recency t_x and age T, given in `unit`.

    Raises:
        ValueError: on an empty shop or summaries that cannot be (t_x outside [0, T], x < 0).
        FitError: when the likelihood has no finite maximum the optimiser can find.
    """
    unit_length(unit)
    x, t_x, T = (np.asarray(v, dtype=np.float64).ravel() for v in (x, t_x, T))
    _check_summaries(x, t_x, T)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    x, t_x, T, w = _aggregate(x, t_x, T, w)
    objective = _Likelihood(x, t_x, T, w)
    rate = max(float(w @ x) / max(float(w @ T), 1e-9), 1e-6)
    start = np.log([1.0, 1.0 / rate, 1.0, 1.0])
    bounds = [(-20.0, 20.0)] * 4
    result = scipy.optimize.minimize(
        objective, start, jac=True, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-13, "gtol": 1e-8}
    )
    if not np.isfinite(result.fun):
        raise FitError(f"BG/NBD fit failed: {result.message}")
    r, alpha, a, b = np.exp(result.x)
    return BgNbdFit(
        r=float(r),
        alpha=float(alpha),
        a=float(a),
        b=float(b),
        unit=unit,
        log_likelihood=float(-result.fun * objective.total),
        shoppers=int(round(objective.total)),
    )


def p_alive(fit: BgNbdFit, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> NDArray:
    """Return P(alive | x, t_x, T) for each shopper, times in the fit's unit (1 for x = 0, by the model)."""
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    with np.errstate(divide="ignore"):
        odds = (
            np.log(fit.a)
            - np.log(np.maximum(fit.b + x - 1, 0))
            + (fit.r + x) * (np.log(fit.alpha + T) - np.log(fit.alpha + t_x))
        )
    return np.where(x > 0, scipy.special.expit(-odds), 1.0)


def _expected_if_alive(fit: BgNbdFit, t: NDArray, x: NDArray, T: NDArray) -> NDArray:
    """Return E[transactions in (T, T + t] | alive at T, x]: the bracket of FHL 2005, eq. (10).

    Euler's transformation turns ((α+T)/(α+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z) into
    (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z), whose parameters stay small for large x, where scipy's
    hyp2f1 is accurate.
    """
    r, alpha, a, b = fit.r, fit.alpha, fit.a, fit.b
    z = t / (alpha + T + t)
    # Where the Beta of the dropout probability nears a point mass at p = a/(a+b) (the likelihood's maximum
    # at the boundary: every shopper drops out alike), hyp2f1 overflows to NaN. There
    # 2F1(r+x, b+x; a+b+x−1; z) → (1 − qz)^−(r+x), q = (b+x)/(a+b+x−1), the confluent limit: within 3e-4
    # (relative) of the exact bracket at a+b = 1e4, 3e-5 at 1e5, and used wherever the exact one fails.
    q = (b + x) / (a + b + x - 1)
    limit = (a + b + x - 1) / (a - 1) * (1 - ((1 - z) / (1 - q * z)) ** (r + x))
    if a + b >= POINT_MASS_DROPOUT:
        return limit
    with np.errstate(invalid="ignore", over="ignore"):
        hyper = scipy.special.hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
        exact = (a + b + x - 1) / (a - 1) * (1 - (1 - z) ** (a - 1) * hyper)
    return np.where(np.isfinite(exact), exact, limit)


POINT_MASS_DROPOUT = 1e5  # a + b from which only the point-mass limit is used


def expected_transactions(fit: BgNbdFit, t: float, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> NDArray:
    """Return each shopper's expected number of transactions in the next t (FHL 2005, eq. 10), fit's unit."""
    x, T = np.asarray(x, dtype=np.float64), np.asarray(T, dtype=np.float64)
    # hyp2f1 is the costly part and depends on (x, T) only: evaluate it once per distinct pair.
    first, inverse = _distinct_rows(x.ravel(), T.ravel())
    if_alive = _expected_if_alive(fit, np.float64(t), x.ravel()[first], T.ravel()[first])[inverse]
    return p_alive(fit, x, t_x, T) * if_alive.reshape(x.shape)


def expected_repeat_transactions(fit: BgNbdFit, t: ArrayLike) -> NDArray:
    """Return E[X(t)], a new shopper's expected repeat transactions within t of the first (eq. 9)."""
    t = np.asarray(t, dtype=np.float64)
    return _expected_if_alive(fit, t, np.zeros_like(t), np.zeros_like(t))


def expected_gap(fit: BgNbdFit, x: ArrayLike, T: ArrayLike) -> NDArray:
    """Return the posterior mean of 1/λ, (α + T) / (r + x − 1), in the fit's unit (NaN: x = 0, r + x ≤ 1)."""
    x, T = np.asarray(x, dtype=np.float64), np.asarray(T, dtype=np.float64)
    shape = fit.r + x - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((x > 0) & (shape > 0), (fit.alpha + T) / shape, np.nan)
