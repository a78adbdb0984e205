"""The Gamma-Gamma spend model: recovery from simulated spends, closed forms against quadrature over ν."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from plugin.core.spend_model import GammaGammaFit, expected_spend, fit_gamma_gamma, gamma_gamma_log_likelihood

# The paper's CDNOW estimates ("RFM and CLV", 2005): realistic values to check the formulas at.
PAPER = GammaGammaFit(p=6.25, q=3.74, gamma=15.44, log_likelihood=0.0, shoppers=0)
SHOPPERS = [(1, 35.0), (2, 22.35), (5, 11.77), (30, 60.0)]


def over_nu(fit, h, x, m):
    """Integrate h(ν) × density of mean spend m over x transactions given ν, over ν ~ Gamma(q, γ)."""
    prior = stats.gamma(fit.q, scale=1 / fit.gamma)

    def integrand(nu):
        return h(nu) * stats.gamma.pdf(m, fit.p * x, scale=1 / (x * nu)) * prior.pdf(nu)

    value, _ = integrate.quad(integrand, 0, np.inf, epsabs=0, epsrel=1e-11, limit=500)
    return value


@pytest.mark.parametrize(("x", "m"), SHOPPERS)
def test_log_likelihood_is_the_integral_over_nu(x, m):
    # given
    likelihood = over_nu(PAPER, lambda nu: 1.0, x, m)
    # then
    assert gamma_gamma_log_likelihood([PAPER.p, PAPER.q, PAPER.gamma], [x], [m])[0] == pytest.approx(
        math.log(likelihood), rel=1e-8
    )


@pytest.mark.parametrize(("x", "m"), SHOPPERS)
def test_expected_spend_is_the_posterior_mean_of_p_over_nu(x, m):
    # given
    mean = over_nu(PAPER, lambda nu: PAPER.p / nu, x, m) / over_nu(PAPER, lambda nu: 1.0, x, m)
    # then
    assert expected_spend(PAPER, [x], [m])[0] == pytest.approx(mean, rel=1e-8)


def test_a_shopper_without_a_paid_repeat_gets_the_population_mean():
    # given: E[p / ν] over ν ~ Gamma(q, γ)
    population, _ = integrate.quad(
        lambda nu: PAPER.p / nu * stats.gamma.pdf(nu, PAPER.q, scale=1 / PAPER.gamma), 0, np.inf, epsrel=1e-11
    )
    # then
    assert expected_spend(PAPER, [0], [np.nan])[0] == pytest.approx(population, rel=1e-8)


def test_no_mean_spend_when_q_is_at_most_one():
    fit = GammaGammaFit(p=2.0, q=0.8, gamma=10.0, log_likelihood=0.0, shoppers=0)
    assert np.isnan(expected_spend(fit, [0], [np.nan])[0])


def test_fit_recovers_the_parameters_it_was_simulated_from():
    # given: 20,000 repeat buyers, each with their own ν, spending Gamma(p, ν) per transaction
    rng = np.random.default_rng(1998)
    x = 1 + rng.poisson(2.0, size=20_000)
    nu = rng.gamma(PAPER.q, 1 / PAPER.gamma, size=len(x))
    m = rng.gamma(PAPER.p * x, 1 / (x * nu))  # the mean of x Gamma(p, ν) draws
    # when
    fit = fit_gamma_gamma(x, m)
    # then
    assert (fit.p, fit.q, fit.gamma) == pytest.approx((PAPER.p, PAPER.q, PAPER.gamma), rel=0.10)
    assert fit.shoppers == 20_000
    assert fit.log_likelihood == pytest.approx(
        gamma_gamma_log_likelihood([fit.p, fit.q, fit.gamma], x, m).sum()
    )


def test_the_fit_refuses_one_time_buyers_and_unpaid_means():
    with pytest.raises(ValueError, match="x >= 1"):
        fit_gamma_gamma([0, 2], [10.0, 5.0])
    with pytest.raises(ValueError, match="positive mean spend"):
        fit_gamma_gamma([1, 2], [0.0, 5.0])
