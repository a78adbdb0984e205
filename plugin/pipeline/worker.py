"""`lifecycle worker`: an RQ worker over every Lifecycle queue, inside the app context.

A SimpleWorker runs jobs in its own process (no fork per job): our jobs are short database work, and a
fork per webhook would cost more than the work itself. Crash safety comes from the Delivery ledger and the
tick's re-queue, not from process isolation.
"""

from __future__ import annotations

import logging

from flask import Flask
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from plugin.pipeline import queue


def run_worker(app: Flask, burst: bool = False) -> None:
    """Work the webhooks, actions and maintenance queues until stopped (or drained, with burst)."""
    connection = app.extensions["lifecycle.redis"]
    queues = [queue.get_queue(connection, name) for name in queue.QUEUE_NAMES]
    with app.app_context():
        SimpleWorker(queues, connection=connection, serializer=JSONSerializer).work(
            burst=burst, logging_level=logging.getLevelName(logging.WARNING), with_scheduler=not burst
        )


if __name__ == "__main__":
    from plugin import create_app

    run_worker(create_app())
