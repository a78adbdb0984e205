"""Robustness of the job edge: the scheduler outlives a failed tick, a refused backfill ends `failed` (and a
command retries it), reconciliation stops on a cursor that does not advance and caps its pages."""

from __future__ import annotations

import logging

import redis as redis_lib

from plugin.pipeline import queue
from plugin.pipeline.scheduler import run_forever
from tests.conftest import free_port


def test_the_scheduler_logs_a_failed_tick_and_runs_the_next(app, shop, redis_connection, caplog):
    working = app.extensions["lifecycle.redis"]
    # the first tick meets a Redis that refuses connections (queueing the shop's reconciliation raises)
    app.extensions["lifecycle.redis"] = redis_lib.Redis(port=free_port(), socket_connect_timeout=1)
    sleeps = []

    def between_ticks(seconds: float) -> None:
        sleeps.append(seconds)
        app.extensions["lifecycle.redis"] = working  # Redis is back for the next tick

    with caplog.at_level(logging.INFO, logger="plugin.pipeline.scheduler"):
        succeeded = run_forever(60.0, app=app, ticks=2, sleep=between_ticks)

    assert succeeded == 1 and len(sleeps) == 1
    assert "tick failed" in caplog.text and "ConnectionError" in caplog.text
    assert "tick done" in caplog.text
    waiting = queue.get_queue(redis_connection, queue.MAINTENANCE).get_job_ids()
    assert waiting == [f"reconcile-{shop.id}"]  # the second tick did its work
