"""The CDNOW benchmark: Fader, Hardie & Lee's published estimates from the raw transactions.

The data is the 1/10 CDNOW sample (2,357 shoppers who first bought in Q1 1997) shipped in the `lifetimes`
0.11.3 wheel, never committed here. CI fetches it with

    pip download lifetimes==0.11.3 --no-deps -d DIR

and names the wheel in LIFECYCLE_CDNOW_WHEEL. Calibration is the paper's 39 weeks, 1997-01-01 to
1997-09-30 inclusive; the model sees day occasions, fitted in weeks (days / 7), as the paper.
"""

from __future__ import annotations

import functools
import io
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from plugin.core.purchase_forecast import fit_shop_model
from plugin.core.purchase_history import summarise_orders
from plugin.core.purchase_model import expected_transactions

SAMPLE = "lifetimes/datasets/CDNOW_sample.txt"
SUMMARY = "lifetimes/datasets/cdnow_customers_summary_with_transactions.csv"
CUTOFF = int(np.datetime64("1997-09-30", "D").astype(np.int64))


def read_wheel(member: str) -> str:
    """Read one file out of the lifetimes wheel; fail under CI, skip elsewhere, when it is not there."""
    path = os.environ.get("LIFECYCLE_CDNOW_WHEEL", "")
    if not path or not Path(path).is_file():
        message = (
            "the CDNOW sample is not here: pip download lifetimes==0.11.3 --no-deps -d DIR, "
            "then LIFECYCLE_CDNOW_WHEEL=DIR/Lifetimes-0.11.3-py3-none-any.whl"
        )
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message)
        pytest.skip(message)
    with zipfile.ZipFile(path) as wheel:
        return wheel.read(member).decode()


@functools.cache
def cdnow_summaries():
    """The sample's per-shopper summaries as of the end of calibration; shoppers are the sample's second id."""
    rows = np.loadtxt(io.StringIO(read_wheel(SAMPLE)), dtype=str)
    dates = np.array([f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in rows[:, 2]], dtype="datetime64[D]")
    shopper, amount = rows[:, 1].astype(np.int64), rows[:, 4].astype(np.float64)
    return summarise_orders(shopper, dates.astype(np.int64), amount, np.ones(len(rows), dtype=bool), CUTOFF)


def test_day_occasions_reproduce_the_papers_summary_of_the_sample():
    # given: Hardie's own summary of the same sample (x, t_x and T in weeks, mean repeat spend)
    reference = np.loadtxt(io.StringIO(read_wheel(SUMMARY)), delimiter=",", skiprows=1)
    # when
    summaries = cdnow_summaries()
    # then
    assert summaries.shopper.tolist() == reference[:, 0].astype(int).tolist()
    assert summaries.x.tolist() == reference[:, 1].astype(int).tolist()
    np.testing.assert_allclose(summaries.t_x / 7, reference[:, 2], atol=0.0051)
    np.testing.assert_allclose(summaries.T / 7, reference[:, 3], atol=0.0051)
    np.testing.assert_allclose(np.nan_to_num(summaries.spend_mean), reference[:, 4], atol=0.0051)
    assert (summaries.x.sum(), np.count_nonzero(summaries.x)) == (2457, 946)


def test_bg_nbd_fit_matches_the_paper():
    # when
    fit = fit_shop_model(cdnow_summaries(), unit="weeks").purchases
    # then: "Counting your customers the easy way" (2005), section 4
    assert (fit.r, fit.alpha, fit.a, fit.b) == pytest.approx((0.243, 4.414, 0.793, 2.426), rel=0.01)
    assert fit.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    assert (fit.unit, fit.shoppers) == ("weeks", 2357)


def test_gamma_gamma_fit_matches_the_paper():
    # when
    fit = fit_shop_model(cdnow_summaries(), unit="weeks").spend
    # then: "RFM and CLV: Using iso-value curves for customer base analysis" (2005)
    assert (fit.p, fit.q, fit.gamma) == pytest.approx((6.25, 3.74, 15.44), rel=0.01)
    assert fit.shoppers == 946


def test_the_papers_worked_example_of_a_conditional_expectation():
    # given: the paper's customer with x = 2, t_x = 30.43, T = 38.86 weeks
    fit = fit_shop_model(cdnow_summaries(), unit="weeks").purchases
    # when
    expected = expected_transactions(fit, 39.0, [2], [30.43], [38.86])[0]
    # then: 1.226 transactions in the next 39 weeks
    assert math.isclose(expected, 1.226, abs_tol=5e-4)
