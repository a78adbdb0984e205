"""The CDNOW benchmark end to end: the cohort's orders arrive as signed webhooks, are drained, and the
store's fit (39-week calibration, clock pinned) gives Fader, Hardie & Lee's published estimates.

The sample ships in the lifetimes 0.11.3 wheel (LIFECYCLE_CDNOW_WHEEL, see tests/core/test_cdnow.py):
under CI the test fails when it is missing, elsewhere it skips.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest
from sqlalchemy import func, select

from plugin import clock
from plugin.demo import synthetic as s
from plugin.store import predictions, shops
from plugin.store.models import Order, ShopperPrediction
from tests.conftest import NOW, SHOP
from tests.core.test_cdnow import SAMPLE, read_wheel
from tests.webhook_client import post_webhook


def cdnow_orders() -> list[tuple[int, datetime, Decimal]]:
    """(shopper, order time, amount) per purchase row of the sample: noon UTC of its day."""
    rows = np.loadtxt(io.StringIO(read_wheel(SAMPLE)), dtype=str)
    return [
        (int(shopper), datetime(int(d[:4]), int(d[4:6]), int(d[6:]), 12, tzinfo=UTC), Decimal(amount))
        for _, shopper, d, _, amount in rows
    ]


def test_cdnow_orders_as_webhooks_give_the_papers_estimates(client, db, worker, monkeypatch):
    # given: a shop in UTC without an Admin API token (so the orders plan no write-back to Shopify: this
    # test is about the model), and every purchase of the cohort posted as a signed orders/create
    purchases = cdnow_orders()
    with db.session() as session:
        shop = shops.upsert_shop(session, SHOP, None, NOW)
        shop.timezone = "UTC"
    for order_id, (shopper, at, amount) in enumerate(purchases, start=1):
        response = post_webhook(client, "orders/create", s.order_payload(order_id, shopper, at, amount))
        assert response.status_code == 200
    worker.work()
    with db.session() as session:
        assert session.scalar(select(func.count(Order.id))) == len(purchases) == 6919
    # when: fitted through the store as of the end of the paper's 39 weeks (1997-01-01 to 09-30)
    monkeypatch.setenv(clock.ENV_NAME, "1997-10-01T09:00:00+00:00")
    fit = predictions.fit_shop(db, shop.id, clock.now(), unit="weeks")
    # then: "Counting your customers the easy way" and "RFM and CLV" (2005)
    assert fit.reason is None
    assert fit.cutoff_day.isoformat() == "1997-09-30"
    assert (fit.shoppers, fit.repeat_buyers) == (2357, 946)
    assert (fit.r, fit.alpha, fit.a, fit.b) == pytest.approx((0.243, 4.414, 0.793, 2.426), rel=0.01)
    assert (fit.p, fit.q, fit.gamma) == pytest.approx((6.25, 3.74, 15.44), rel=0.01)
    assert fit.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(ShopperPrediction)) == 2357
