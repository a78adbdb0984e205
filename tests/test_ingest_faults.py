"""Faults during ingest: Redis emptied while webhooks arrive (queued drains, flags and run jobs all
lost), with duplicate deliveries, still ends with every order counted once and no email sent twice."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal

from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import func, select, update

from plugin.demo import synthetic as s
from plugin.pipeline import queue
from plugin.pipeline.run_action import dispatch_due_runs
from plugin.pipeline.tick import run_tick
from plugin.store import runs
from plugin.store.models import ActionAttempt, ActionRun, Delivery, DeliveryStatus, Order, Shopper
from tests.conftest import NOW
from tests.webhook_client import post_webhook

DAY = timedelta(days=1)
SHOPPERS = 12


def _history() -> list[tuple[str, dict, str]]:
    """(topic, payload, webhook id): each shopper signs up, consents, and pays two orders, today."""
    deliveries = []
    for n in range(SHOPPERS):
        customer_id, email = 100 + n, f"shopper{n}@example.com"
        signed_up = NOW - timedelta(hours=6) + n * timedelta(minutes=5)
        deliveries.append(("customers/create", s.customer_payload(customer_id, email, signed_up), f"c-{n}"))
        deliveries.append(
            (
                "customers_email_marketing_consent/update",
                s.consent_payload(customer_id, email, "subscribed", signed_up + timedelta(minutes=5)),
                f"m-{n}",
            )
        )
        for k in range(2):
            placed = signed_up + (k + 1) * timedelta(hours=1)
            order = s.order_payload(5000 + 10 * n + k, customer_id, placed, Decimal("25.00"), email=email)
            deliveries.append(("orders/paid", order, f"o-{n}-{k}"))
    return deliveries


def test_redis_emptied_mid_ingest_loses_nothing_and_repeats_nothing(
    client, db, shop, worker, redis_connection, smtp, monkeypatch
):
    history = _history()
    half = len(history) // 2
    for topic, payload, webhook_id in history[:half]:
        assert post_webhook(client, topic, payload, webhook_id=webhook_id).status_code == 200
    worker.work()  # some of it processed, runs planned and queued
    for topic, payload, webhook_id in history[half - 6 : half + 6]:  # duplicates straddling the fault
        assert post_webhook(client, topic, payload, webhook_id=webhook_id).status_code == 200
    redis_connection.flushdb()  # Redis loses every queued drain, flag and run job
    for topic, payload, webhook_id in history[half + 6 :]:
        assert post_webhook(client, topic, payload, webhook_id=webhook_id).status_code == 200
    redis_connection.flushdb()  # …and again, after the acks
    # The tick finds what waits and queues it again; the workers drain it; then delayed plays come due.
    for later in (timedelta(minutes=10), timedelta(minutes=20), DAY, 2 * DAY, 3 * DAY):
        monkeypatch.setenv("LIFECYCLE_NOW", (NOW + later).isoformat())  # one clock for tick and workers
        run_tick(db, redis_connection, NOW + later, 300)
        worker.work()

    with db.session() as session:
        statuses = Counter(session.scalars(select(Delivery.status)))
        assert statuses == {DeliveryStatus.PROCESSED: len(history)}
        assert session.scalar(select(func.count()).select_from(Order)) == 2 * SHOPPERS
        assert sorted(session.scalars(select(Shopper.orders_count))) == [2] * SHOPPERS
        sent = session.scalar(
            select(func.count())
            .select_from(ActionRun)
            .where(ActionRun.action == "send_email", ActionRun.status == "succeeded")
        )
        keys = list(session.scalars(select(ActionRun.idempotency_key)))
    assert len(keys) == len(set(keys))
    assert sent > 0
    assert len(smtp.messages) == sent  # one email per sent run: none sent twice
    per_shopper = Counter((m["To"], m["Subject"]) for m in smtp.messages)
    welcomes = [key for key in per_shopper if "welcome" in key[1].lower()]
    assert all(per_shopper[key] == 1 for key in welcomes)


def queued_welcome(app, client, db, redis_connection, customer_id: int, email: str) -> int:
    """A customer who consents: their deliveries are applied (the webhooks queue only), so the welcome
    is planned and queued to a worker, its job waiting in Redis. Returns the run's id."""
    signed_up = NOW - timedelta(hours=1)
    for topic, payload in (
        ("customers/create", s.customer_payload(customer_id, email, signed_up)),
        (
            "customers_email_marketing_consent/update",
            s.consent_payload(customer_id, email, "subscribed", signed_up + timedelta(minutes=1)),
        ),
    ):
        assert post_webhook(client, topic, payload).status_code == 200
    webhooks_only = [queue.get_queue(redis_connection, queue.WEBHOOKS)]
    with app.app_context():
        SimpleWorker(webhooks_only, connection=redis_connection, serializer=JSONSerializer).work(
            burst=True, logging_level="WARNING"
        )
    with db.session() as session:
        run = session.scalar(select(ActionRun).where(ActionRun.play == "welcome"))
        assert run.status == "queued"
        return run.id


def test_a_run_whose_job_redis_lost_is_queued_again_by_the_tick_and_acts_once(
    app, client, db, shop, worker, redis_connection, smtp, monkeypatch
):
    # given: a consented shopper's welcome is planned and queued to a worker; then Redis loses its job
    # before any worker takes it (emptied, evicted, failed over)
    email = "lost.job@example.com"
    queued_welcome(app, client, db, redis_connection, 901, email)
    redis_connection.flushdb()
    # when: ticks come and workers drain, before and after the stuck delay
    requeued = []
    for later in (timedelta(minutes=1), timedelta(minutes=10), timedelta(minutes=20)):
        monkeypatch.setenv("LIFECYCLE_NOW", (NOW + later).isoformat())
        requeued.append(run_tick(db, redis_connection, NOW + later, 300).requeued_runs)
        worker.work()
    # then: the tick queued it again once it was overdue by the stuck delay, once; the welcome went out once
    assert requeued == [0, 1, 0]
    welcomes = [m for m in smtp.messages if m["To"] == email and "welcome" in m["Subject"].lower()]
    assert len(welcomes) == 1
    with db.session() as session:
        statuses = session.scalars(select(ActionRun.status).where(ActionRun.play == "welcome")).all()
    assert statuses == ["succeeded"]


def welcome_after_attempts(app, client, db, redis_connection, customer_id: int, email: str, attempts, due_at):
    """A consented shopper's welcome that has had `attempts` attempts and waits, scheduled to `due_at`, with
    no job in Redis. Returns the run's id."""
    run_id = queued_welcome(app, client, db, redis_connection, customer_id, email)
    redis_connection.flushdb()
    with db.session() as session:
        session.execute(
            update(ActionRun)
            .where(ActionRun.id == run_id)
            .values(status="scheduled", attempts=attempts, due_at=due_at)
        )
    return run_id


def test_a_retried_run_whose_job_waits_is_not_queued_twice_and_one_redis_lost_is(
    app, client, db, shop, worker, redis_connection, smtp, monkeypatch
):
    # given: a consented shopper's welcome whose first attempt was retried; the tick queued its next
    # attempt (a job of its own, `run-N-1`), which waits in Redis
    email = "retried.job@example.com"
    run_id = welcome_after_attempts(app, client, db, redis_connection, 903, email, 1, NOW)
    monkeypatch.setenv("LIFECYCLE_NOW", (NOW + timedelta(minutes=1)).isoformat())
    with app.app_context():
        assert dispatch_due_runs(db, NOW + timedelta(minutes=1)) == 1
    assert queue.get_queue(redis_connection, queue.RUNS).job_ids == [f"run-{run_id}-1"]
    # when: ticks come past the stuck delay, the second after Redis lost the job
    later = NOW + timedelta(minutes=20)
    monkeypatch.setenv("LIFECYCLE_NOW", later.isoformat())
    waiting = run_tick(db, redis_connection, later, 300).requeued_runs
    redis_connection.flushdb()
    lost = run_tick(db, redis_connection, later, 300).requeued_runs
    worker.work()
    # then: the waiting job was left alone, the lost one queued again, and the welcome went out once
    assert (waiting, lost) == (0, 1)
    assert len(smtp.to(email)) == 1


def test_a_run_a_batch_queues_after_earlier_attempts_gets_that_attempts_job(
    app, client, db, shop, worker, redis_connection, smtp, monkeypatch
):
    # given: a welcome that has had two attempts and waits, scheduled, due now (as a batch finds a run it
    # releases on consent, or revives)
    email = "released.again@example.com"
    run_id = welcome_after_attempts(app, client, db, redis_connection, 904, email, 2, NOW)
    # when: a batch marks it queued, and its runs are queued after commit as a batch's are
    with db.session() as session:
        queued, _ = runs.queue_due_planned(db, session, [run_id], NOW)
    for queued_id, attempts in queued:
        queue.enqueue_action_run(redis_connection, queued_id, attempts)
    # then: its job is the third attempt's, which the tick's check for lost jobs finds waiting
    assert queue.get_queue(redis_connection, queue.RUNS).job_ids == [f"run-{run_id}-2"]
    later = NOW + timedelta(minutes=20)
    monkeypatch.setenv("LIFECYCLE_NOW", later.isoformat())
    assert run_tick(db, redis_connection, later, 300).requeued_runs == 0
    worker.work()
    assert len(smtp.to(email)) == 1


def test_a_second_job_of_a_run_set_to_retry_leaves_it_for_its_time(
    app, client, db, shop, worker, redis_connection, smtp
):
    # given: a welcome whose first attempt set it to retry in a minute, while a second job of it waits
    # in Redis (two enqueuers raced, or a MULTI was sent again after a timeout)
    email = "second.job@example.com"
    run_id = welcome_after_attempts(
        app, client, db, redis_connection, 905, email, 1, NOW + timedelta(minutes=1)
    )
    assert queue.enqueue_action_run(redis_connection, run_id, 1)
    # when: a worker takes the second job
    worker.work()
    # then: the run waits for its time, untouched: no attempt, no email
    with db.session() as session:
        run = session.get(ActionRun, run_id)
        assert (run.status, run.attempts, run.due_at) == ("scheduled", 1, NOW + timedelta(minutes=1))
        assert session.scalar(select(func.count()).select_from(ActionAttempt)) == 0
    assert smtp.to(email) == []


def take_next_job(redis_connection) -> tuple[Job, Queue]:
    """A worker takes the next job off the queues it serves, as RQ's worker does (a pop over all three)."""
    queues = [queue.get_queue(redis_connection, name) for name in queue.QUEUE_NAMES]
    return Queue.dequeue_any(queues, None, connection=redis_connection, serializer=JSONSerializer)


def fail_next_job(redis_connection, reason: str) -> str:
    """A worker takes the next job, and it raises before `run_action` marks the run running (the database
    unreachable as it began): RQ's worker records the failure as for any job that raises (its failed
    registry, the job's result with the traceback). Returns the job's id."""
    job, job_queue = take_next_job(redis_connection)
    rq_worker = SimpleWorker([job_queue], connection=redis_connection, serializer=JSONSerializer)
    rq_worker.handle_job_failure(job, job_queue, exc_string=reason)
    return job.id


def test_a_run_whose_job_a_dying_worker_took_is_queued_again_by_the_tick_and_sent_once(
    app, client, db, shop, worker, redis_connection, smtp, monkeypatch
):
    # given: a consented shopper's welcome is queued, and the worker that took its job off the queue died
    # before starting it: RQ keeps the job `queued`, on no list, and nothing was done
    email = "dropped.job@example.com"
    run_id = queued_welcome(app, client, db, redis_connection, 902, email)
    job, _ = take_next_job(redis_connection)
    assert (job.id, job.get_status()) == (f"run-{run_id}", "queued")
    # when: the tick comes past the stuck delay, and workers drain; three times
    reports = []
    for later in (timedelta(minutes=10), timedelta(minutes=15), timedelta(minutes=20)):
        monkeypatch.setenv("LIFECYCLE_NOW", (NOW + later).isoformat())
        reports.append(run_tick(db, redis_connection, NOW + later, 300))
        worker.work()
    # then: the first check only suspects the job (it could be between its pop and its start); the
    # second queues it again under its id, and it is sent once; nothing ended failed
    assert [(r.requeued_runs, r.revived_runs, r.failed_runs) for r in reports] == [
        (0, 0, 0),
        (1, 0, 0),
        (0, 0, 0),
    ]
    with db.session() as session:
        run = session.get(ActionRun, run_id)
        assert (run.status, run.attempts) == ("succeeded", 1)
    assert len(smtp.to(email)) == 1


def test_a_run_whose_job_failed_before_acting_is_queued_again_by_the_tick_and_sent_once(
    app, client, db, shop, worker, redis_connection, smtp, monkeypatch
):
    # given: a consented shopper's welcome is queued, and its job raised before the run was marked running
    email = "failed.once@example.com"
    run_id = queued_welcome(app, client, db, redis_connection, 904, email)
    assert fail_next_job(redis_connection, "Traceback …\nOperationalError: server closed") == f"run-{run_id}"
    # when: the tick comes past the stuck delay, and workers drain
    monkeypatch.setenv("LIFECYCLE_NOW", (NOW + timedelta(minutes=10)).isoformat())
    report = run_tick(db, redis_connection, NOW + timedelta(minutes=10), 300)
    worker.work()
    # then: a new job sent it once; the failed one stays in RQ's failed registry, as RQ keeps it
    assert (report.revived_runs, report.failed_runs) == (1, 0)
    with db.session() as session:
        assert session.get(ActionRun, run_id).status == "succeeded"
    assert len(smtp.to(email)) == 1
    runs_queue = queue.get_queue(redis_connection, queue.RUNS)
    assert FailedJobRegistry(queue=runs_queue).get_job_ids() == [f"run-{run_id}"]


def test_a_run_whose_job_keeps_failing_before_acting_ends_failed_with_the_last_reason_and_sends_nothing(
    app, client, db, shop, worker, redis_connection, smtp, monkeypatch
):
    # given: a consented shopper's welcome is queued, and every job of it raises before acting
    email = "failing.job@example.com"
    run_id = queued_welcome(app, client, db, redis_connection, 903, email)
    # when: the tick comes past the stuck delay after each failure, and once more
    failed_jobs, reports = [], []
    for n in range(queue.JOB_REVIVALS + 2):
        if n <= queue.JOB_REVIVALS:
            reason = f"Traceback …\nOperationalError: connection refused ({n})"
            failed_jobs.append(fail_next_job(redis_connection, reason))
        later = NOW + (n + 1) * timedelta(minutes=10)
        monkeypatch.setenv("LIFECYCLE_NOW", later.isoformat())
        reports.append(run_tick(db, redis_connection, later, 300))
    worker.work()
    # then: each revival had a job id of its own; after JOB_REVIVALS of them the run ended failed, once,
    # with the last job's reason; nothing was sent, and no job is left waiting
    assert failed_jobs == [f"run-{run_id}", f"run-{run_id}-r1", f"run-{run_id}-r2"]
    assert [(r.revived_runs, r.failed_runs) for r in reports] == [(1, 0), (1, 0), (0, 1), (0, 0)]
    with db.session() as session:
        run = session.get(ActionRun, run_id)
        assert (run.status, run.attempts) == ("failed", 0)
        assert run.skip_reason == (
            "3 jobs of its worker ended before carrying it out "
            "(the last: OperationalError: connection refused (2)); nothing was done"
        )
    assert smtp.to(email) == []
    assert queue.get_queue(redis_connection, queue.RUNS).count == 0


def test_a_revived_run_deferred_by_quiet_hours_goes_out_in_the_morning(
    app, client, db, shop, worker, redis_connection, smtp, monkeypatch
):
    # given: a welcome whose first job failed before acting; the tick revived it, and the revived job,
    # taken at night, deferred it to the morning (RQ keeps the failed first job for 30 days)
    email = "revived.at.night@example.com"
    run_id = queued_welcome(app, client, db, redis_connection, 906, email)
    fail_next_job(redis_connection, "Traceback …\nOperationalError: server closed")
    assert run_tick(db, redis_connection, NOW + timedelta(minutes=10), 300).revived_runs == 1
    night = NOW.replace(hour=22)
    monkeypatch.setenv("LIFECYCLE_NOW", night.isoformat())
    worker.work()
    morning = (night + timedelta(days=1)).replace(hour=8, minute=1)
    with db.session() as session:
        assert session.get(ActionRun, run_id).status == "scheduled"
    # when: the morning's dispatch queues it, and workers drain
    monkeypatch.setenv("LIFECYCLE_NOW", morning.isoformat())
    with app.app_context():
        assert dispatch_due_runs(db, morning) == 1
    worker.work()
    # then: it is sent, once, at once (not left without a job for the tick's next check)
    with db.session() as session:
        assert session.get(ActionRun, run_id).status == "succeeded"
    assert len(smtp.to(email)) == 1
