"""The purchase model's job: the tick queues one fit per shop and day, the worker runs it, and it can be
queued on demand; the fit is as of the one clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from plugin import clock
from plugin.pipeline import queue
from plugin.pipeline.tick import tick_app
from plugin.store.models import PurchaseFit
from tests.test_predictions import END_DAY, simulated, store_orders


def at(day: int, hour: int) -> datetime:
    return datetime(1970, 1, 1, hour, tzinfo=UTC) + timedelta(days=day)


def fits(db) -> list[tuple[str, str | None]]:
    with db.session() as session:
        return [
            (f.cutoff_day.isoformat(), f.reason)
            for f in session.scalars(select(PurchaseFit).order_by(PurchaseFit.id))
        ]


def test_the_tick_fits_each_shop_once_a_day(app, db, shop, worker, monkeypatch):
    # given: a shop with a year of orders, the clock the day after its last order
    store_orders(db, shop.id, simulated(1500))
    monkeypatch.setenv(clock.ENV_NAME, at(END_DAY + 1, 6).isoformat())
    # when: the tick runs and the worker drains the queue
    report = tick_app(app)
    worker.work()
    # then: one fit, as of the end of yesterday
    assert report.maintenance["model_fits"] == 1
    assert fits(db) == [("2025-11-08", None)]
    # when: the tick runs again later that day, then the next day
    monkeypatch.setenv(clock.ENV_NAME, at(END_DAY + 1, 23).isoformat())
    assert tick_app(app).maintenance["model_fits"] == 0
    monkeypatch.setenv(clock.ENV_NAME, at(END_DAY + 2, 0).isoformat())
    assert tick_app(app).maintenance["model_fits"] == 1
    worker.work()
    # then: one fit per day
    assert fits(db) == [("2025-11-08", None), ("2025-11-09", None)]


def test_a_fit_can_be_queued_on_demand_and_a_thin_shop_says_why(app, db, shop, worker, redis_connection):
    # given: a shop with no orders; when a fit is asked for (twice before the worker runs)
    assert queue.MAINTENANCE_JOBS["fit"](redis_connection, shop.id) is True
    assert queue.enqueue_fit(redis_connection, shop.id) is False  # the same job already waits
    worker.work()
    # then: stored with its reason, as of the pinned clock's yesterday (conftest's NOW)
    assert fits(db) == [("2026-10-31", "0 days of order history, the model needs at least 90")]
