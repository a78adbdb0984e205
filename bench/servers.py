"""Start what a benchmark measures against: an instance folder, the demo shop, the embedded (or given)
Redis, gunicorn on a port, and `lifecycle worker` processes, all on loopback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import requests
from rq import Worker

ROOT = Path(__file__).resolve().parent.parent


class Servers:
    """The processes of one benchmark run; `stop()` ends them all."""

    def __init__(
        self,
        shop: str,
        secret: str,
        database_url: str | None,
        port: int,
        app: str,
        web_workers: int = 2,
        threads: int = 1,
    ):
        self.port = port
        self.web_workers, self.threads = web_workers, threads
        self.env = dict(
            os.environ,
            SHOPIFY_API_KEY="bench",
            SHOPIFY_API_SECRET=secret,
            LIFECYCLE_SECRET_KEY="bench",
            LIFECYCLE_INSTANCE_PATH=tempfile.mkdtemp(prefix="lifecycle-bench-"),
            PYTHONPATH=str(ROOT),
        )
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.processes: list[subprocess.Popen] = []
        self.env["REDIS_URL"] = self.env.get("REDIS_URL") or self._hold_embedded_redis(shop)
        self._start_web(app)

    def _hold_embedded_redis(self, shop: str) -> str:
        # One process migrates, registers the shop and keeps the embedded Redis alive for the others.
        setup = (
            "from plugin import create_app, runtime, clock\nfrom plugin.store import shops\nimport os, time\n"
            "app = create_app(); runtime.hand_down(app); db = app.extensions['lifecycle.db']\n"
            f"with db.session() as s: shops.upsert_shop(s, {shop!r}, None, clock.now())\n"
            "print(os.environ['REDIS_URL'], flush=True); time.sleep(10**6)"
        )
        holder = subprocess.Popen(
            [sys.executable, "-c", setup], env=self.env, stdout=subprocess.PIPE, text=True
        )
        self.processes.append(holder)
        return holder.stdout.readline().strip()

    def _start_web(self, app: str) -> None:
        command = [sys.executable, "-m", "gunicorn", "--workers", str(self.web_workers)]
        command += ["--threads", str(self.threads), "--bind", f"127.0.0.1:{self.port}"]
        command += ["--log-level", "warning", app]
        self.web = subprocess.Popen(command, env=self.env, cwd=ROOT)
        self.processes.append(self.web)
        for _ in range(150):
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def web_cpu(self) -> list[float]:
        """CPU seconds used so far by each gunicorn worker process (Linux /proc), in pid order."""
        pid = self.web.pid
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            pids = sorted(int(child) for child in children.read().split())
        ticks = os.sysconf("SC_CLK_TCK")
        used = []
        for child in pids:
            with open(f"/proc/{child}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            used.append((int(fields[11]) + int(fields[12])) / ticks)  # utime + stime
        return used

    def start_workers(self, count: int, burst: bool, ready: bool = False) -> list[subprocess.Popen]:
        """`lifecycle worker` processes, as the Procfile runs them. With `ready`, returns once all of
        them listen on their queues (registered with RQ): their start-up (imports, the app, the
        migration check; about two CPU seconds each) is then over, as a deployed worker's is when webhooks
        arrive."""
        command = [sys.executable, "-m", "plugin.cli", "worker"] + (["--burst"] if burst else [])
        workers = [subprocess.Popen(command, env=self.env, cwd=ROOT) for _ in range(count)]
        self.processes.extend(workers)
        if ready:  # each of these processes registered with RQ (a stale registration does not count)
            connection = redis.Redis.from_url(self.env["REDIS_URL"])
            launched = {worker.pid for worker in workers}
            for _ in range(600):
                if any(worker.poll() is not None for worker in workers):
                    raise RuntimeError("a worker exited during its start-up")
                if launched <= {worker.pid for worker in Worker.all(connection=connection)}:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("workers did not start")
            connection.close()
        return workers

    def stop_workers(self, workers: list[subprocess.Popen]) -> None:
        """End these workers (RQ's warm shutdown: a job under way is finished first)."""
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
            self.processes.remove(worker)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            process.wait(timeout=30)
