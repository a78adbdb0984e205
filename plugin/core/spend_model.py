"""The Gamma-Gamma spend model (Fader, Hardie & Lee, "RFM and CLV: Using iso-value curves", 2005).

Each transaction's value is Gamma(p, ν) with a shopper's own ν ~ Gamma(q, γ), independent of how often the
shopper buys. The data per shopper is the number x of repeat transactions with a positive net and their
mean value m; the fit is maximum likelihood over log-parameters with an analytic gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy  # its submodules load on first use: `lifecycle` commands and workers start without them
from numpy.typing import ArrayLike, NDArray

from plugin.core.purchase_model import FitError


@dataclass(frozen=True)
class GammaGammaFit:
    """Fitted Gamma-Gamma parameters (γ in the shop's currency) and the fit's log-likelihood."""

    p: float
    q: float
    gamma: float
    log_likelihood: float
    shoppers: int


def gamma_gamma_log_likelihood(params: ArrayLike, x: ArrayLike, m: ArrayLike) -> NDArray:
    """Return each shopper's log-likelihood of mean spend m over x transactions under (p, q, gamma)."""
    p, q, gamma = (float(v) for v in params)
    x, m = np.asarray(x, dtype=np.float64), np.asarray(m, dtype=np.float64)
    return (
        scipy.special.gammaln(p * x + q)
        - scipy.special.gammaln(p * x)
        - scipy.special.gammaln(q)
        + q * np.log(gamma)
        + p * x * np.log(x)
        + (p * x - 1) * np.log(m)
        - (p * x + q) * np.log(gamma + x * m)
    )


def _objective(theta: NDArray, x: NDArray, m: NDArray, log_xm: NDArray) -> tuple[float, NDArray]:
    """Return the negative mean log-likelihood at log-parameters theta and its gradient."""
    p, q, gamma = np.exp(theta)
    px = p * x
    log_g = np.log(gamma + x * m)
    value = (
        scipy.special.gammaln(px + q)
        - scipy.special.gammaln(px)
        - scipy.special.gammaln(q)
        + q * np.log(gamma)
    )
    value += px * log_xm - np.log(m) - (px + q) * log_g
    psi_sum = scipy.special.digamma(px + q)
    d_p = x * (psi_sum - scipy.special.digamma(px) + log_xm - log_g)
    d_q = psi_sum - scipy.special.digamma(q) + np.log(gamma) - log_g
    d_gamma = q / gamma - (px + q) / (gamma + x * m)
    grad = np.array([d_p.sum() * p, d_q.sum() * q, d_gamma.sum() * gamma])
    return -float(value.sum()) / len(x), -grad / len(x)


def fit_gamma_gamma(x: ArrayLike, m: ArrayLike) -> GammaGammaFit:
    """Fit the Gamma-Gamma by maximum likelihood to transaction counts x ≥ 1 and mean spends m > 0.

    Raises:
        ValueError: when a count is below 1 or a mean spend is not positive.
        FitError: when the likelihood has no finite maximum the optimiser can find.
    """
    x, m = np.asarray(x, dtype=np.float64), np.asarray(m, dtype=np.float64)
    if len(x) == 0 or np.any(x < 1) or np.any(~(m > 0)):
        raise ValueError("the spend fit needs shoppers with x >= 1 and a positive mean spend")
    log_xm = np.log(x * m)
    # Moments: within a shopper CV² = 1/p; with q = 2 the shop's mean spend p γ / (q − 1) gives γ.
    p0 = 1 / max(float(np.var(m) / np.mean(m) ** 2), 1e-3) if len(m) > 1 else 1.0
    start = np.log([p0, 2.0, float(np.mean(m)) / p0])
    result = scipy.optimize.minimize(
        _objective,
        start,
        args=(x, m, log_xm),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-20.0, 20.0)] * 3,
        options={"ftol": 1e-13, "gtol": 1e-8},
    )
    if not np.isfinite(result.fun):
        raise FitError(f"Gamma-Gamma fit failed: {result.message}")
    p, q, gamma = np.exp(result.x)
    return GammaGammaFit(
        p=float(p),
        q=float(q),
        gamma=float(gamma),
        log_likelihood=float(-result.fun * len(x)),
        shoppers=len(x),
    )


def expected_spend(fit: GammaGammaFit, x: ArrayLike, m: ArrayLike) -> NDArray:
    """Return E[spend per transaction | x, m] = p (γ + x m) / (p x + q − 1); x = 0 gives the shop's mean.

    NaN where p x + q ≤ 1 (the mean does not exist); m is ignored where x = 0 (it may be NaN there).
    """
    x, m = np.asarray(x, dtype=np.float64), np.asarray(m, dtype=np.float64)
    total = np.where(x > 0, x * np.where(x > 0, m, 0.0), 0.0)
    shape = fit.p * x + fit.q - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(shape > 0, fit.p * (fit.gamma + total) / shape, np.nan)
