"""`lifecycle demo`: the whole pipeline on a bare machine, driven from outside.

Embedded Redis and SQLite, the real HTTP endpoint under gunicorn, two RQ workers, and a synthetic store
posted to it as signed webhooks. Prints progress, then shoppers per stage with example reasons, then
keeps serving until interrupted.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import click
import requests
from rq import Worker
from sqlalchemy import func, select

from plugin import clock, create_app, runtime
from plugin.crypto import encrypt_token
from plugin.demo.fake_store import FakeStore, FakeStoreServer
from plugin.demo.store import Event, store_streams
from plugin.demo.synthetic import encode, iso, webhook_headers
from plugin.pipeline import queue
from plugin.shopify.tokens import development_session_token
from plugin.store import erasure as compliance
from plugin.store import shops
from plugin.store.db import Database
from plugin.store.models import ActionRun, Delivery, DeliveryStatus, Shop, Shopper, Stage
from plugin.store.shoppers import count_by_stage

DEMO_SHOP = "lifecycle-demo.myshopify.com"


def demo_environment() -> None:
    """Fill in the secrets a real install gets from its environment, with throwaway demo values."""
    for name, value in (
        ("LIFECYCLE_LOG_LEVEL", "WARNING"),  # progress and tables, not every request of every process
        ("SHOPIFY_API_KEY", "demo-api-key"),
        ("SHOPIFY_API_SECRET", "demo-" + secrets.token_hex(16)),
        ("LIFECYCLE_SECRET_KEY", "demo-" + secrets.token_hex(16)),
    ):
        os.environ.setdefault(name, value)


DEMO_TOKEN = "shpat_demo_token"


def run_demo(shopper_count: int, port: int, seed: int, serve_after: bool) -> None:
    """Start the app's processes on one instance, post the demo store to it, report, then serve on."""
    demo_environment()
    ensure_port_free(port)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the fake store's request log
    fake = FakeStoreServer(FakeStore(access_token=DEMO_TOKEN)).__enter__()
    os.environ.setdefault("SHOPIFY_ADMIN_ORIGIN", fake.origin)
    app = create_app()  # migrates (once, under a lock) before any child starts
    resolved = runtime.hand_down(app)
    db: Database = app.extensions["lifecycle.db"]
    click.echo(f"instance:   {resolved['LIFECYCLE_INSTANCE_PATH']}")
    click.echo(f"database:   {db.url}\nredis:      {resolved['REDIS_URL']}")
    click.echo(f"fake store: {fake.origin}/_fake/state (tags, metafields, discount codes written by the app)")
    click.echo(f"outbox:     {resolved['LIFECYCLE_OUTBOX']} (emails as .eml; set SMTP_URL to send them)")
    start_clean(db, app.config["OUTBOX"], app.config["SECRET_KEY"])
    children = start_processes(port)
    try:
        wait_until_up(port, children)
        streams = list(store_streams(shopper_count, clock.now(), seed))
        total = sum(len(stream) for stream in streams)
        click.echo(
            f"demo store: {shopper_count} shoppers, {total} webhooks → http://127.0.0.1:{port}/webhooks"
        )
        started = time.monotonic()
        watch = Progress(db, app.extensions["lifecycle.redis"], children, total)
        post_all(streams, port, os.environ["SHOPIFY_API_SECRET"], watch)
        watch.wait_until_processed()
        click.echo(f"all {total} webhooks posted and processed in {time.monotonic() - started:.1f} s\n")
        print_stage_table(db)
        print_action_table(db)

        token = development_session_token(app.config, DEMO_SHOP)
        click.echo(f"\nadmin: http://127.0.0.1:{port}/app/?shop={DEMO_SHOP}&host=ZGVtbw&id_token={token}")
        if serve_after:
            click.echo(f"\nserving on http://127.0.0.1:{port} (webhooks at /webhooks); Ctrl-C to stop")
            children[0].wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_processes(children)


def ensure_port_free(port: int) -> None:
    """Refuse to start when something already listens on the port (a demo still running, say)."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise click.ClickException(
                f"port {port} is already in use (another demo still running?); choose one with --port"
            )


def start_clean(db: Database, outbox: str, secret_key: str) -> None:
    """Erase a previous demo's shop from this instance (other shops stay), then register the demo shop."""
    with db.session() as session:
        previous = shops.get_shop(session, DEMO_SHOP)
        if previous is not None:
            shoppers = session.scalar(select(func.count(Shopper.id)).where(Shopper.shop_id == previous.id))
            compliance.redact_shop(session, previous, DEMO_SHOP, keep_delivery=0, outbox=outbox)
            click.echo(f"reusing this instance: erased the previous demo shop ({shoppers} shoppers) first")
    with db.session() as session:
        shops.upsert_shop(session, DEMO_SHOP, encrypt_token(DEMO_TOKEN, secret_key), clock.now())


def start_processes(port: int) -> list[subprocess.Popen]:
    """gunicorn (2 workers) and two RQ workers on this process's instance. The demo's gunicorn runs
    without threads: its load is one poster, and with threads its workers outlived Ctrl-C by more than
    20 s in CI (gunicorn's threaded worker waits up to its graceful timeout, 30 s)."""
    web = runtime.start_child(
        ["gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
         "plugin:create_app()"]
    )  # fmt: skip
    workers = [runtime.start_child(["plugin.cli", "worker"]) for _ in range(2)]
    return [web, *workers]


def stop_processes(children: list[subprocess.Popen]) -> None:
    """Ask every child to stop, then wait for it (killing one that does not stop in 20 s)."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def wait_until_up(port: int, children: list[subprocess.Popen], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if children[0].poll() is not None:
            raise click.ClickException(f"the web process exited with code {children[0].returncode}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return
        except requests.RequestException:
            time.sleep(0.2)
    raise click.ClickException(f"the web process did not come up on port {port}")


def post_all(streams: list[list[Event]], port: int, secret: str, watch: Progress) -> None:
    """Post each shopper's webhooks in order; shoppers in parallel, as a busy store would."""
    url = f"http://127.0.0.1:{port}/webhooks"

    def post_stream(stream: list[Event]) -> None:
        with requests.Session() as http:
            for event in stream:
                body = encode(event.payload)
                headers = webhook_headers(
                    event.topic,
                    DEMO_SHOP,
                    event.webhook_id,
                    body,
                    secret,
                    triggered_at=iso(event.triggered_at),
                )
                for _attempt in range(5):  # as Shopify does, retry what was not acknowledged
                    if http.post(url, data=body, headers=headers, timeout=30).status_code == 200:
                        watch.acknowledged += 1
                        break
                    time.sleep(0.5)

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(post_stream, stream) for stream in streams]
        while not all(f.done() for f in futures):
            time.sleep(1)
            watch.report()
        for future in futures:
            future.result()


class Progress:
    """What the demo can truthfully say: deliveries acknowledged by HTTP, and processed in the database
    the server writes; when processing stalls, why (a child gone, no worker, another database, a failure)."""

    STALL_SECONDS = 20.0

    def __init__(self, db: Database, redis, children: list[subprocess.Popen], total: int):
        self.db, self.redis, self.children, self.total = db, redis, children, total
        self.acknowledged = 0
        self._last_done, self._last_change = -1, time.monotonic()

    def counts(self) -> dict[str, int]:
        """Deliveries of the demo shop per status, in the database the server writes."""
        with self.db.session() as session:
            rows = session.execute(
                select(Delivery.status, func.count(Delivery.id))
                .where(Delivery.shop_domain == DEMO_SHOP)
                .group_by(Delivery.status)
            ).all()
        return dict(rows)

    def report(self) -> dict[str, int]:
        """Print one progress line; raise with the reason when processing has stalled."""
        counts = self.counts()
        stored = sum(counts.values())
        done = stored - counts.get(DeliveryStatus.RECEIVED, 0)
        click.echo(f"  acknowledged {self.acknowledged}/{self.total}, processed {done}", err=True)
        if done != self._last_done:
            self._last_done, self._last_change = done, time.monotonic()
        waiting = max(stored, self.acknowledged) > done
        gone = any(child.poll() is not None for child in self.children)
        if waiting and (gone or time.monotonic() - self._last_change > self.STALL_SECONDS):
            raise click.ClickException(f"processing stalled at {done}/{stored}: {self.diagnose(stored)}")
        return counts

    def diagnose(self, stored: int) -> str:
        """The likeliest reason nothing is processed."""
        names = ("web server", "worker 1", "worker 2")
        for name, child in zip(names, self.children, strict=False):
            if child.poll() is not None:
                return f"the {name} exited with code {child.returncode}"
        if stored < self.acknowledged:
            return (
                f"the server acknowledged {self.acknowledged} webhooks but this database ({self.db.url}) "
                f"holds {stored}: the server writes to another database"
            )
        if not Worker.all(connection=self.redis):
            return "no worker is registered with Redis"
        failed = queue.get_queue(self.redis, queue.WEBHOOKS).failed_job_registry
        if failed.count:
            job = failed.get_job_ids()[-1]
            return f"a worker job failed ({job}): `rq info` / the worker's log says why"
        return "workers are up but nothing moves: see the workers' logs"

    def wait_until_processed(self, seconds: float = 900) -> None:
        """Wait until every acknowledged delivery is processed (or stalled, or out of time)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            counts = self.report()
            if sum(counts.values()) >= self.acknowledged and not counts.get(DeliveryStatus.RECEIVED):
                unprocessed = {s: n for s, n in counts.items() if s != DeliveryStatus.PROCESSED}
                if unprocessed:
                    click.echo(f"  not processed: {unprocessed} (`lifecycle deliveries` says why)", err=True)
                return
            time.sleep(1)
        raise click.ClickException("the workers did not drain the queue in time")


def print_stage_table(db) -> None:
    """Shoppers per stage, each with one example reason."""
    with db.session() as session:
        shop = session.scalar(select(Shop).where(Shop.domain == DEMO_SHOP))
        counts = count_by_stage(session, shop.id)
        click.echo(f"{'stage':<11} {'shoppers':>8}  example reason")
        for stage in Stage:
            example = session.scalar(
                select(Shopper.stage_reason)
                .where(Shopper.shop_id == shop.id, Shopper.stage == stage)
                .limit(1)
            )
            click.echo(f"{stage.value:<11} {counts.get(stage.value, 0):>8}  {example or '-'}")
        click.echo(f"{'total':<11} {sum(counts.values()):>8}")


def print_action_table(db, seconds: float = 60) -> None:
    """Runs per play and status, once the workers have run everything due now."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with db.session() as session:
            pending = session.scalar(
                select(func.count(ActionRun.id)).where(ActionRun.status.in_(("queued", "running")))
            )
        if not pending:
            break
        time.sleep(1)
    with db.session() as session:
        rows = session.execute(
            select(ActionRun.play, ActionRun.status, func.count(ActionRun.id))
            .group_by(ActionRun.play, ActionRun.status)
            .order_by(ActionRun.play, ActionRun.status)
        ).all()
    click.echo(f"\n{'play':<20} {'status':<10} {'runs':>6}")
    for play, status, count in rows:
        click.echo(f"{play:<20} {status:<10} {count:>6}")
    click.echo("(history older than two days triggers no play; `lifecycle tick` sends what becomes due)")
