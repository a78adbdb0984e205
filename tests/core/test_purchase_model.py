"""The BG/NBD: the fit recovers what it was simulated from, and every closed form agrees with a numerical
integral over the model's own mixing distributions (no hypergeometric function, no value of ours).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, special

from plugin.core.purchase_model import (
    BgNbdFit,
    _Likelihood,
    bg_nbd_log_likelihood,
    expected_gap,
    expected_repeat_transactions,
    expected_transactions,
    fit_bg_nbd,
    p_alive,
)
from plugin.core.purchase_simulation import simulate_repeats

# The paper's CDNOW estimates, in weeks: realistic values to check the formulas at.
PAPER = BgNbdFit(r=0.243, alpha=4.414, a=0.793, b=2.426, unit="weeks", log_likelihood=0.0, shoppers=0)
SHOPPERS = [(0, 0.0, 38.0), (2, 30.43, 38.86), (1, 1.0, 50.0), (5, 10.0, 38.0), (40, 37.0, 38.0)]


def over_prior(fit, h, lam_power=0.0, lam_rate=0.0, p_power=0.0, q_power=0.0):
    """Integrate h(λ, p) λ^lam_power e^(−λ lam_rate) p^p_power (1−p)^q_power over the BG/NBD's mixing
    distributions, λ ~ Gamma(r, α) and p ~ Beta(a, b), by nested adaptive quadrature (quadpack's
    algebraic weights take the integrable singularities at the ends; positive powers stay in the integrand).
    """
    shape, rate = fit.r + lam_power, fit.alpha + lam_rate
    top = (shape + 60 * math.sqrt(shape + 1) + 60) / rate
    mode = max(shape - 1, 0) / rate
    peak = (shape - 1) * math.log(mode) - rate * mode if shape > 1 else 0.0
    lam_weight, lam_rest = min(shape - 1, 0), max(shape - 1, 0)
    p_weight, p_rest = fit.a - 1 + p_power, fit.b - 1 + q_power

    def density(lam):
        return math.exp(lam_rest * math.log(lam) - rate * lam - peak) if lam > 0 else float(lam_rest == 0)

    def over_lambda(p):
        value, _ = integrate.quad(
            lambda lam: h(lam, p) * density(lam),
            0,
            top,
            weight="alg",
            wvar=(lam_weight, 0),
            epsabs=0,
            epsrel=1e-11,
            limit=500,
        )
        return value * (1 - p) ** max(p_rest, 0)

    value, _ = integrate.quad(
        over_lambda, 0, 1, weight="alg", wvar=(p_weight, min(p_rest, 0)), epsabs=0, epsrel=1e-10, limit=500
    )
    norm = fit.alpha**fit.r / math.gamma(fit.r) / special.beta(fit.a, fit.b)
    return value * norm * math.exp(peak)


def one(lam, p):
    return 1.0


def bought_in(t):
    """(1 − e^(−λpt)) / p: what a shopper alive with (λ, p) buys in the next t (FHL 2005, eq. 7)."""

    def h(lam, p):
        u = lam * p * t
        return lam * t * (-math.expm1(-u) / u if u > 0 else 1.0)

    return h


def numerical_terms(fit, x, t_x, T):
    """The two terms of the likelihood: 'still alive at T' and 'dropped out after the last purchase'."""
    alive = over_prior(fit, one, lam_power=x, lam_rate=T, q_power=x)
    gone = over_prior(fit, one, lam_power=x, lam_rate=t_x, p_power=1, q_power=x - 1) if x > 0 else 0.0
    return alive, gone


@pytest.mark.parametrize(("x", "t_x", "T"), SHOPPERS)
def test_log_likelihood_is_the_integral_over_the_mixing_distributions(x, t_x, T):
    # given
    alive, gone = numerical_terms(PAPER, x, t_x, T)
    # when
    ll = bg_nbd_log_likelihood([PAPER.r, PAPER.alpha, PAPER.a, PAPER.b], [x], [t_x], [T])[0]
    # then
    assert ll == pytest.approx(math.log(alive + gone), rel=1e-8)


@pytest.mark.parametrize(("x", "t_x", "T"), SHOPPERS)
def test_p_alive_is_the_posterior_share_of_alive(x, t_x, T):
    # given
    alive, gone = numerical_terms(PAPER, x, t_x, T)
    # when
    value = p_alive(PAPER, [x], [t_x], [T])[0]
    # then
    assert value == pytest.approx(alive / (alive + gone), rel=1e-8)


@pytest.mark.parametrize(("x", "t_x", "T"), SHOPPERS)
@pytest.mark.parametrize("t", [1.0, 39.0, 200.0])
def test_expected_transactions_is_the_posterior_mean_of_future_purchases(x, t_x, T, t):
    # given
    alive, gone = numerical_terms(PAPER, x, t_x, T)
    future = over_prior(PAPER, bought_in(t), lam_power=x, lam_rate=T, q_power=x)
    # when
    value = expected_transactions(PAPER, t, [x], [t_x], [T])[0]
    # then
    assert value == pytest.approx(future / (alive + gone), rel=1e-7)


@pytest.mark.parametrize("t", [0.5, 10.0, 39.0, 78.0, 500.0])
def test_expected_repeat_transactions_of_a_new_shopper(t):
    # given
    future = over_prior(PAPER, bought_in(t))
    # then
    assert expected_repeat_transactions(PAPER, t) == pytest.approx(future, rel=1e-7)


@pytest.mark.parametrize(("x", "T"), [(1, 38.0), (2, 38.86), (40, 38.0)])
def test_expected_gap_is_the_posterior_mean_of_one_over_lambda(x, T):
    # given
    mean_gap = over_prior(PAPER, one, lam_power=x - 1, lam_rate=T) / over_prior(
        PAPER, one, lam_power=x, lam_rate=T
    )
    # then
    assert expected_gap(PAPER, [x], [T])[0] == pytest.approx(mean_gap, rel=1e-7)


def test_one_time_buyers_have_no_gap_and_are_alive_by_the_model():
    assert np.isnan(expected_gap(PAPER, [0], [20.0])[0])
    assert p_alive(PAPER, [0], [0.0], [20.0])[0] == 1.0


def test_the_analytic_gradient_matches_finite_differences():
    # given
    rng = np.random.default_rng(11)
    T = rng.uniform(1, 52, size=2_000)
    x, t_x = simulate_repeats(rng, T, PAPER.r, PAPER.alpha, PAPER.a, PAPER.b)
    objective = _Likelihood(x.astype(float), t_x, T, np.ones(len(T)))
    theta = np.log([0.3, 5.0, 0.7, 2.0])
    # when
    _, analytic = objective(theta)
    numeric = optimize.approx_fprime(theta, lambda v: objective(v)[0], 1e-7)
    # then
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-7)


def test_fit_recovers_the_parameters_it_was_simulated_from():
    # given: 20,000 shoppers observed for 26 to 52 weeks after their first purchase
    rng = np.random.default_rng(2005)
    T = rng.uniform(26, 52, size=20_000)
    x, t_x = simulate_repeats(rng, T, PAPER.r, PAPER.alpha, PAPER.a, PAPER.b)
    # when
    fit = fit_bg_nbd(x, t_x, T, unit="weeks")
    # then
    assert (fit.r, fit.alpha) == pytest.approx((PAPER.r, PAPER.alpha), rel=0.10)
    assert (fit.a, fit.b) == pytest.approx((PAPER.a, PAPER.b), rel=0.20)
    assert fit.shoppers == 20_000
    assert fit.log_likelihood == pytest.approx(
        bg_nbd_log_likelihood([fit.r, fit.alpha, fit.a, fit.b], x, t_x, T).sum()
    )


def test_a_fit_in_days_is_the_fit_in_weeks_with_alpha_times_seven():
    # given
    rng = np.random.default_rng(5)
    T = rng.integers(30, 365, size=5_000).astype(float)
    x, t_x = simulate_repeats(rng, T, 0.5, 30.0, 0.7, 3.0)
    t_x = np.floor(t_x)
    # when
    days = fit_bg_nbd(x, t_x, T)
    weeks = fit_bg_nbd(x, t_x / 7, T / 7, unit="weeks")
    # then
    assert (days.unit, weeks.unit) == ("days", "weeks")
    assert (days.r, days.alpha / 7, days.a, days.b) == pytest.approx(
        (weeks.r, weeks.alpha, weeks.a, weeks.b), rel=1e-4
    )
    assert days.log_likelihood == pytest.approx(weeks.log_likelihood - x.sum() * math.log(7), rel=1e-8)


def test_weights_count_as_repeated_rows():
    # given
    rng = np.random.default_rng(8)
    T = rng.uniform(10, 52, size=3_000).round()
    x, t_x = simulate_repeats(rng, T, 0.4, 6.0, 0.9, 3.0)
    t_x = t_x.round()
    # when
    plain = fit_bg_nbd(np.repeat(x, 2), np.repeat(t_x, 2), np.repeat(T, 2), unit="weeks")
    weighted = fit_bg_nbd(x, t_x, T, unit="weeks", weights=np.full(len(x), 2.0))
    # then
    assert (weighted.r, weighted.alpha, weighted.a, weighted.b) == pytest.approx(
        (plain.r, plain.alpha, plain.a, plain.b), rel=1e-5
    )
    assert weighted.shoppers == plain.shoppers == 6_000


def test_forecasts_stay_finite_at_the_edges():
    # given: a very frequent buyer, a shopper first seen today, a long-silent one
    x, t_x, T = [300, 0, 3], [51.0, 0.0, 1.0], [52.0, 0.0, 500.0]
    # when
    alive = p_alive(PAPER, x, t_x, T)
    expected = expected_transactions(PAPER, 13.0, x, t_x, T)
    # then
    assert np.all(np.isfinite(expected)) and np.all(expected >= 0)
    assert np.all((alive >= 0) & (alive <= 1))


@pytest.mark.parametrize(
    ("x", "t_x", "T"),
    [([], [], []), ([1], [5.0], [4.0]), ([0], [2.0], [4.0]), ([-1], [0.0], [4.0])],
)
def test_summaries_no_history_produces_are_refused(x, t_x, T):
    with pytest.raises(ValueError, match="x"):
        fit_bg_nbd(x, t_x, T)


@pytest.mark.parametrize(
    ("x", "t_x", "T"), [(0, 0.0, 0.0), (1, 50.0, 100.0), (5, 250.0, 300.0), (30, 390.0, 400.0)]
)
def test_a_dropout_fitted_as_a_point_mass_still_forecasts(x, t_x, T):
    """A shop whose shoppers all drop out alike fits a, b at the optimiser's bound (a + b ~ 1e8: the Beta
    is a point mass), where hyp2f1 gives NaN. The forecast is then the limit of the exact one as a + b
    grows with a/(a+b) fixed (a demo store's fit stored NaN forecasts, and its fit job failed)."""
    # given: the same dropout probability (6 %), as a Beta still within hyp2f1's reach and as a point mass
    near = BgNbdFit(r=0.85, alpha=42.5, a=600.0, b=9400.0, unit="days", log_likelihood=0.0, shoppers=0)
    point = BgNbdFit(r=0.85, alpha=42.5, a=6e6, b=9.4e7, unit="days", log_likelihood=0.0, shoppers=0)
    # when
    exact = expected_transactions(near, 90.0, [x], [t_x], [T])[0]
    limit = expected_transactions(point, 90.0, [x], [t_x], [T])[0]
    # then
    assert np.isfinite(limit)
    assert limit == pytest.approx(exact, rel=1e-3)
