"""Group commit for the webhook endpoint: concurrent requests of one process share one INSERT and one
wake-up signal, and each is answered only once its own row is committed.

A request hands its delivery to `LedgerWriter.record` and waits. If no write is in flight it becomes the
leader: it waits until as many requests are waiting as joined the last group (at most
`GROUP_WAIT_SECONDS`, see `_gather`), takes every delivery waiting at that moment (its own included),
stores them with one statement on the process's held database connection
(`store.deliveries.LedgerConnection`), raises the drain's wake-up signal once on its held Redis
connection (`pipeline.queue.DrainSignal`), and hands each waiting request its own result (or the batch's
exception, which the endpoint turns into a 503: nothing is acknowledged that is not stored). Deliveries
arriving while a write is in flight wait for it to end, and one of them leads the next write. A lone
request (a sync worker, a quiet store) writes at once, alone: after a group of one, nothing waits for a
batch to fill.

This is what threads buy the endpoint (gunicorn `--threads`): each statement and each Redis round trip
serves every request that arrived meanwhile, instead of one.
"""

from __future__ import annotations

import _thread
import threading

import redis

from plugin import clock
from plugin.pipeline import queue
from plugin.store import deliveries
from plugin.store.db import Database
from plugin.store.deliveries import RecordedDelivery, WebhookHeaders
from plugin.store.models import DeliveryStatus

# How long a leader waits, at most, for its group to reach the size of the last one. Each group costs the
# same whatever its size: a commit (PostgreSQL's WAL flush), a Redis round trip, and their CPU in this
# process, PostgreSQL and Redis (about 0.25 ms together, bench/README.md "Session 10").
GROUP_WAIT_SECONDS = 0.002


class LedgerUnavailable(Exception):
    """The delivery could not be stored or queued (its cause says why): answer 503, Shopify retries."""

    def __init__(self, cause: BaseException):
        super().__init__(f"{type(cause).__name__}")
        self.database = not isinstance(cause, redis.RedisError)  # Redis is only asked after the commit


class _Waiting:
    """One request waiting for its delivery to be written: woken by releasing `ready`, a bare lock it
    holds from the start (the cheapest way to park a thread: one futex wait and one wake, no Python-level
    condition around it, no second lock to take back on waking, as `threading.Event` has)."""

    __slots__ = ("headers", "body", "ready", "lead", "result", "error")

    def __init__(self, headers: WebhookHeaders, body: bytes):
        self.headers = headers
        self.body = body
        self.ready = _thread.allocate_lock()
        self.ready.acquire()
        self.lead = False  # set when this request is to write the next batch
        self.result: RecordedDelivery | None = None
        self.error: BaseException | None = None

    def wake(self) -> None:
        self.ready.release()


class LedgerWriter:
    """One per app (per process): the webhook endpoint's way to the delivery ledger."""

    def __init__(self, extensions: dict):
        self.extensions = extensions  # the app's: its database and Redis, read at each write
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._writing = False
        self._last_group = 1  # how many requests the last write carried
        self._filling: _thread.LockType | None = None  # released when a gathering group is full
        self._ledger: deliveries.LedgerConnection | None = None  # held connections, for the app's
        self._signal: queue.DrainSignal | None = None  # current database and Redis (see _connections)

    def record(self, headers: WebhookHeaders, body: bytes) -> RecordedDelivery:
        """Store the delivery and make sure a drain will process it; return its ledger row.

        Raises LedgerUnavailable (the database's or Redis's error as its cause) when this request's batch
        could not be stored or queued: the caller answers 503 and Shopify retries.
        """
        mine = _Waiting(headers, body)
        with self._lock:
            self._waiting.append(mine)
            if self._filling is not None and len(self._waiting) >= self._last_group:
                self._filling.release()  # the leader's group is full: it writes now
                self._filling = None
            if not self._writing:
                self._writing = mine.lead = True
        if not mine.lead:
            mine.ready.acquire()  # with our result, or told to lead the next write
        if mine.lead:
            batch = None
            try:
                self._gather()
                with self._lock:
                    self._filling = None
                    batch, self._waiting = self._waiting, []
                    self._last_group = len(batch)
                self._write(batch, mine)  # each member gets its result or the batch's error
            finally:  # whatever happened, the next batch gets a leader or the writer goes idle
                with self._lock:
                    self._filling = None
                    if batch is None:  # stopped before taking its group: the group is the next leader's
                        self._waiting.remove(mine)
                    if self._waiting:  # arrived during our write: the first of them writes them
                        self._waiting[0].lead = True
                        self._waiting[0].wake()
                    else:
                        self._writing = False
        if mine.error is not None:  # a fresh exception per request; the batch's own is its cause
            raise LedgerUnavailable(mine.error) from mine.error
        return mine.result

    def _gather(self) -> None:
        """Wait until as many requests wait as the last write carried, or `GROUP_WAIT_SECONDS` have
        passed.

        Under load the endpoint's requests come and go together: the clients of one group send their next
        webhooks when they get their answers, so the next group would otherwise be cut as soon as its first
        request arrives, and each group would carry two requests where four are on their way. Waiting for
        the last group's size halves the number of commits and Redis round trips; after a group of one (a
        quiet store, a sync worker) nothing waits, and a group that falls short (fewer webhooks arriving)
        sets the next one's size lower.

        The leader sleeps on a lock of its own that only the request completing the group releases: the
        requests joining before it cost the leader no wake-up (each thread switch costs more CPU here
        than the rest of a request's bookkeeping).
        """
        with self._lock:
            if len(self._waiting) >= self._last_group:
                return
            full = self._filling = _thread.allocate_lock()
            full.acquire()
        full.acquire(timeout=GROUP_WAIT_SECONDS)

    def _connections(self) -> tuple[deliveries.LedgerConnection, queue.DrainSignal]:
        """The held database and Redis connections, opened again if the app's database or Redis changed."""
        db: Database = self.extensions["lifecycle.db"]
        if self._ledger is None or self._ledger.db is not db:
            if self._ledger is not None:
                self._ledger.close()
            self._ledger = deliveries.LedgerConnection(db)
        client = self.extensions["lifecycle.redis"]
        if self._signal is None or self._signal.client is not client:
            if self._signal is not None:
                self._signal.close()
            self._signal = queue.DrainSignal(client)
        return self._ledger, self._signal

    def _write(self, batch: list[_Waiting], leader: _Waiting) -> None:
        """Store and signal one batch; every member gets its result or the batch's error (the others are
        woken; the leader, running this, is not parked)."""
        try:
            ledger, signal = self._connections()
            stored = ledger.record([(item.headers, item.body) for item in batch], clock.now())
            if any(r.created or r.status == DeliveryStatus.RECEIVED for r in stored):
                signal.raise_flag()
        except BaseException as error:  # handed to every request of the batch, each answers 503
            for item in batch:
                item.error = error
            _answer(batch, leader)
            if not isinstance(error, Exception):
                raise  # an interrupt: the batch is answered, the leader's thread stops
            return
        for item, result in zip(batch, stored, strict=True):
            item.result = result
        _answer(batch, leader)


def _answer(batch: list[_Waiting], leader: _Waiting) -> None:
    """Wake every member of a written batch (each holds its result or error) but its leader, which is
    running, not parked."""
    for item in batch:
        item.lead = False
        if item is not leader:
            item.wake()
