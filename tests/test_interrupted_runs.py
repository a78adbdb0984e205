"""A run whose attempt was interrupted (its worker killed with `kill -9` mid-run) is taken back by the tick
once its lease is over, and its next attempt decides: an email whose send had begun is never sent again
(it ends failed as "outcome unknown"); one interrupted before the send goes out once; a run interrupted
too often ends failed. Nothing stays `running` for ever."""

from __future__ import annotations

import asyncio
import email
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import timedelta
from email import policy

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, update

from plugin.clock import iso
from plugin.pipeline.run_action import MAX_ATTEMPTS, RUN_LEASE, dispatch_due_runs
from plugin.pipeline.tick import run_tick
from plugin.store.models import ActionAttempt, ActionRun
from tests.conftest import NOW, SHOP, free_port
from tests.test_ingest_faults import queued_welcome
from tests.test_worker_claims import wait_for, worker_env


class StallingSMTP:
    """A mail server that takes a message and never answers: the sender is left waiting for the reply
    to its DATA, with the message already received (as when a worker dies mid-send)."""

    def __init__(self):
        self.messages, self.release = [], threading.Event()
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                sink.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
                while not sink.release.is_set():
                    await asyncio.sleep(0.05)
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=free_port())
        self.controller.start()
        self.url = f"smtp://127.0.0.1:{self.controller.port}"

    def stop(self) -> None:
        self.release.set()
        self.controller.stop()


class UnsteadySMTP:
    """A mail server that takes each message and then either drops the connection before answering it
    (`drop_after_data`), or accepts it and answers QUIT with an error."""

    def __init__(self, drop_after_data: bool):
        self.messages = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                sink.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
                if drop_after_data:
                    server.transport.close()
                return "250 OK"

            async def handle_QUIT(self, server, session, envelope):
                return "554 not now"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=free_port())
        self.controller.start()
        self.url = f"smtp://127.0.0.1:{self.controller.port}"


class SilentSMTP:
    """A mail server that accepts connections and never greets them: the sender waits for the greeting,
    and nothing it has could have been delivered."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"smtp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed by stop()
                return
            self.connections.append(connection)

    def stop(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


class EnvelopeDroppingSMTP:
    """A mail server that drops the first connection once the recipient is given (before DATA: nothing
    delivered) and takes every later message."""

    def __init__(self):
        self.messages, self.dropped = [], 0
        sink = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                if not sink.dropped:
                    sink.dropped += 1
                    server.transport.close()
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                sink.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=free_port())
        self.controller.start()
        self.url = f"smtp://127.0.0.1:{self.controller.port}"


@pytest.fixture
def stalling_smtp():
    server = StallingSMTP()
    yield server
    server.stop()


def ticks(app, db, redis_connection, worker, monkeypatch, after: list[timedelta]) -> list[tuple[int, int]]:
    """A tick (with its dispatch of due runs), then a drain by a worker, at each time after NOW: (runs
    resumed, runs failed) per tick."""
    seen = []
    for later in after:
        monkeypatch.setenv("LIFECYCLE_NOW", (NOW + later).isoformat())
        report = run_tick(db, redis_connection, NOW + later, 300)
        with app.app_context():
            dispatch_due_runs(db, NOW + later)
        seen.append((report.resumed_runs, report.failed_runs))
        worker.work()
    return seen


def outcomes(db, run_id: int) -> list[str]:
    with db.session() as session:
        return list(
            session.scalars(
                select(ActionAttempt.outcome).where(ActionAttempt.run_id == run_id).order_by(ActionAttempt.id)
            )
        )


def worker_held_mid_send(app, database_url: str, stalling_smtp: StallingSMTP) -> subprocess.Popen:
    """A `lifecycle worker --burst` process (its own process group) that has taken the queued welcome and
    sent it to the stalling mail server, and now waits for its answer."""
    process = subprocess.Popen(
        [sys.executable, "-m", "plugin.cli", "worker", "--burst"],
        env=dict(worker_env(app, database_url), SMTP_URL=stalling_smtp.url),
        start_new_session=True,
    )
    if not wait_for(lambda: len(stalling_smtp.messages) == 1, 60):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError("the worker never sent the welcome")
    return process


def test_a_worker_killed_while_sending_never_sends_the_email_twice(
    app, client, db, shop, worker, redis_connection, smtp, stalling_smtp, database_url, monkeypatch
):
    # given: a consented shopper's welcome, queued; a `lifecycle worker` takes it and sends it to a mail
    # server that receives the message and never answers
    address = "killed.mid.send@example.com"
    run_id = queued_welcome(app, client, db, redis_connection, 911, address)
    process = worker_held_mid_send(app, database_url, stalling_smtp)
    # when: the worker is killed with kill -9 while it waits for the mail server's answer
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    with db.session() as session:
        run = session.get(ActionRun, run_id)
        assert run.status == "running" and run.context.get("sending_at")
    # and ticks come before the run's lease is over, after it, and later, each followed by a drain
    seen = ticks(
        app,
        db,
        redis_connection,
        worker,
        monkeypatch,
        [RUN_LEASE - timedelta(minutes=1), RUN_LEASE, 2 * RUN_LEASE],
    )
    # then: the tick took the run back once its lease was over, once; its next attempt ended it failed as
    # "outcome unknown" instead of mailing again: the shopper got the one welcome the dead worker sent
    assert seen == [(0, 0), (1, 0), (0, 0)]
    with db.session() as session:
        run = session.get(ActionRun, run_id)
        assert run.status == "failed"
        assert run.skip_reason.startswith("outcome unknown")
    assert outcomes(db, run_id) == ["interrupted", "failed"]
    assert len(stalling_smtp.messages) == 1 and smtp.to(address) == []


def test_a_worker_killed_before_the_mail_server_greeted_it_leaves_a_run_that_is_sent_once(
    app, client, db, shop, worker, redis_connection, smtp, database_url, monkeypatch
):
    # given: a consented shopper's welcome, queued; a `lifecycle worker` takes it and connects to a mail
    # server that never greets it
    address = "killed.before.greeting@example.com"
    run_id = queued_welcome(app, client, db, redis_connection, 917, address)
    silent = SilentSMTP()
    process = subprocess.Popen(
        [sys.executable, "-m", "plugin.cli", "worker", "--burst"],
        env=dict(worker_env(app, database_url), SMTP_URL=silent.url),
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: len(silent.connections) == 1, 60), "the worker never called the mail server"
    finally:  # when: the worker is killed with kill -9 while it waits for the greeting
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        silent.stop()
    with db.session() as session:
        run = session.get(ActionRun, run_id)
        assert run.status == "running" and "sending_at" not in run.context
    # and ticks come during the run's lease and after it, each followed by a drain
    seen = ticks(
        app, db, redis_connection, worker, monkeypatch, [timedelta(minutes=5), RUN_LEASE, 2 * RUN_LEASE]
    )
    # then: no message could have left before the envelope, so the next attempt sent the welcome, once
    assert seen == [(0, 0), (1, 0), (0, 0)]
    with db.session() as session:
        run = session.get(ActionRun, run_id)
        assert (run.status, run.attempts) == ("succeeded", 2)
    assert outcomes(db, run_id) == ["interrupted", "succeeded"]
    assert len(smtp.to(address)) == 1


def test_a_connection_dropped_before_data_is_retried_and_sent_once(
    app, client, db, shop, worker, redis_connection, monkeypatch
):
    # given: a queued welcome, and a mail server that drops the first connection after the recipient,
    # before the message could be given
    server = EnvelopeDroppingSMTP()
    try:
        app.config["SMTP_URL"] = server.url
        run_id = queued_welcome(app, client, db, redis_connection, 918, "dropped.envelope@example.com")
        # when: a worker carries it out, and the tick and a worker come again later
        worker.work()
        with db.session() as session:
            first = session.get(ActionRun, run_id)
        ticks(app, db, redis_connection, worker, monkeypatch, [timedelta(minutes=10)])
    finally:
        server.controller.stop()
    # then: the first attempt was a retry (nothing was delivered), not "outcome unknown"; the next sent it
    assert (first.status, "sending_at" in first.context) == ("scheduled", False)
    assert first.deferred_reason.startswith("retry after")
    assert server.dropped == 1 and len(server.messages) == 1
    with db.session() as session:
        run = session.get(ActionRun, run_id)
        assert run.status == "succeeded" and run.sent_at is not None
    assert outcomes(db, run_id) == ["retry", "succeeded"]


def test_a_running_run_shows_its_lease_and_not_why_it_once_waited(
    app, client, db, shop, redis_connection, stalling_smtp, database_url
):
    # given: a welcome deferred once (its reason recorded), queued again and taken by a worker that now
    # waits for the mail server's answer
    run_id = queued_welcome(app, client, db, redis_connection, 915, "running.now@example.com")
    with db.session() as session:
        session.execute(
            update(ActionRun).where(ActionRun.id == run_id).values(deferred_reason="quiet hours until 08:00")
        )
    process = worker_held_mid_send(app, database_url, stalling_smtp)
    try:
        # when: the merchant's ledger lists the shop's running runs
        listed = subprocess.run(
            [sys.executable, "-m", "plugin.cli", "actions", "--shop", SHOP, "--status", "running", "--json"],
            env=worker_env(app, database_url),
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # then: the run shows when its lease ends (when the tick would take it back), and no stale reason
    [row] = json.loads(listed.stdout)
    assert row["id"] == run_id
    assert (row["lease_until"], row["deferred_reason"]) == (iso(NOW + RUN_LEASE), None)


def test_a_run_interrupted_before_its_send_began_is_sent_once(
    app, client, db, shop, worker, redis_connection, smtp, monkeypatch
):
    # given: a welcome whose attempt was interrupted before the send began, as a worker killed while it
    # read the shop's plan leaves it: running, one attempt, its lease running to NOW + RUN_LEASE
    address = "killed.before.send@example.com"
    run_id = queued_welcome(app, client, db, redis_connection, 912, address)
    redis_connection.flushdb()  # and the dead attempt's job with it
    with db.session() as session:
        session.execute(
            update(ActionRun)
            .where(ActionRun.id == run_id)
            .values(status="running", attempts=1, lease_until=NOW + RUN_LEASE)
        )
    # when: ticks come during the lease and after it
    seen = ticks(
        app, db, redis_connection, worker, monkeypatch, [timedelta(minutes=5), RUN_LEASE, 2 * RUN_LEASE]
    )
    # then: it was taken back once, and the welcome went out once
    assert seen == [(0, 0), (1, 0), (0, 0)]
    with db.session() as session:
        run = session.get(ActionRun, run_id)
        assert (run.status, run.attempts, run.lease_until) == ("succeeded", 2, None)
        assert run.due_at <= NOW  # due as it was planned
    assert outcomes(db, run_id) == ["interrupted", "succeeded"]
    assert len(smtp.to(address)) == 1


def test_a_run_interrupted_on_its_last_attempt_ends_failed_with_the_reason(
    app, client, db, shop, worker, redis_connection, smtp, monkeypatch
):
    # given: a welcome interrupted on its last allowed attempt, while its send had begun
    address = "killed.too.often@example.com"
    run_id = queued_welcome(app, client, db, redis_connection, 913, address)
    with db.session() as session:
        run = session.get(ActionRun, run_id)
        run.status, run.attempts, run.lease_until = "running", MAX_ATTEMPTS, NOW + RUN_LEASE
        run.context = dict(run.context, sending_at=NOW.isoformat())
    # when: the tick comes after its lease
    seen = ticks(app, db, redis_connection, worker, monkeypatch, [RUN_LEASE, 2 * RUN_LEASE])
    # then: it ended failed, with why, and nothing was sent
    assert seen == [(0, 1), (0, 0)]
    with db.session() as session:
        run = session.get(ActionRun, run_id)
        assert run.status == "failed"
        assert run.skip_reason == (
            f"gave up after {MAX_ATTEMPTS} attempts; the last was interrupted; "
            "outcome unknown: its email's send had begun"
        )
        assert run.lease_until is None
    assert outcomes(db, run_id) == ["interrupted"]
    assert smtp.to(address) == []


def test_an_attempt_that_outlives_its_lease_writes_nothing_over_the_next(
    app, client, db, shop, worker, redis_connection, smtp, stalling_smtp, database_url, monkeypatch
):
    # given: a `lifecycle worker` sending a welcome to a mail server that holds its answer
    address = "outlived.lease@example.com"
    run_id = queued_welcome(app, client, db, redis_connection, 914, address)
    process = worker_held_mid_send(app, database_url, stalling_smtp)
    try:
        # when: a tick during its lease leaves it alone; one after it takes the run back while the
        # worker still waits (a process paused past its lease); then the mail server answers
        before = run_tick(db, redis_connection, NOW + RUN_LEASE - timedelta(minutes=1), 300)
        after = run_tick(db, redis_connection, NOW + RUN_LEASE, 300)
        stalling_smtp.release.set()
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    # and a worker drains, with no other tick (the old attempt's job, ending, left the next attempt's
    # job in place: each attempt's job has an id of its own)
    monkeypatch.setenv("LIFECYCLE_NOW", (NOW + RUN_LEASE).isoformat())
    worker.work()
    # then: the old attempt wrote nothing once the run was taken back; the next attempt found the send
    # begun and ended the run failed as "outcome unknown": one welcome, one record of each attempt
    assert (before.resumed_runs, after.resumed_runs) == (0, 1)
    with db.session() as session:
        run = session.get(ActionRun, run_id)
        assert run.status == "failed" and run.skip_reason.startswith("outcome unknown")
        assert run.sent_at is None and run.lease_until is None
    assert outcomes(db, run_id) == ["interrupted", "failed"]
    assert len(stalling_smtp.messages) == 1 and smtp.to(address) == []


def test_an_unexpected_error_mid_attempt_is_retried_with_the_error_not_left_running(
    app, client, db, shop, worker, redis_connection, smtp, monkeypatch
):
    # given: a queued run that raises something no action expects once it is running (here: an action
    # this code does not have, as after a downgrade)
    run_id = queued_welcome(app, client, db, redis_connection, 915, "unexpected@example.com")
    with db.session() as session:
        session.execute(update(ActionRun).where(ActionRun.id == run_id).values(action="no_such_action"))
    # when: a worker carries it out
    worker.work()
    # then: it is scheduled again with the error, its attempt recorded, and not left running
    with db.session() as session:
        run = session.get(ActionRun, run_id)
        assert (run.status, run.attempts, run.lease_until) == ("scheduled", 1, None)
        assert run.deferred_reason == "retry after KeyError: 'no_such_action'"
        assert run.due_at == NOW + timedelta(seconds=60)
    assert outcomes(db, run_id) == ["retry"]


@pytest.mark.parametrize("drop_after_data", [True, False], ids=["dropped before the answer", "QUIT refused"])
def test_a_send_whose_answer_never_came_is_not_sent_again(
    app, client, db, shop, worker, redis_connection, monkeypatch, drop_after_data
):
    # given: a queued welcome, and a mail server that takes the message, then drops the connection before
    # answering it (the message may be delivered), or accepts it and refuses QUIT (it is delivered)
    server = UnsteadySMTP(drop_after_data)
    try:
        app.config["SMTP_URL"] = server.url
        run_id = queued_welcome(app, client, db, redis_connection, 916, "unsteady@example.com")
        # when: workers carry it out, and the tick and workers come again later
        worker.work()
        ticks(app, db, redis_connection, worker, monkeypatch, [timedelta(minutes=10), timedelta(hours=3)])
    finally:
        server.controller.stop()
    # then: the server got it once; a dropped answer ends the run failed as "outcome unknown", never
    # retried; a refused goodbye is a send that succeeded
    assert len(server.messages) == 1
    with db.session() as session:
        run = session.get(ActionRun, run_id)
        if drop_after_data:
            assert run.status == "failed"
            assert run.skip_reason.startswith("outcome unknown: the connection failed while sending")
            assert run.sent_at is None
        else:
            assert run.status == "succeeded" and run.sent_at is not None
