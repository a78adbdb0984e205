"""`lifecycle demo`: the whole pipeline on a bare machine, driven from outside.

Embedded Redis and SQLite, the real HTTP endpoint under gunicorn, two RQ workers, and a synthetic store
posted to it as signed webhooks. Prints progress, then shoppers per stage with example reasons, then
keeps serving until interrupted.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import click
import requests
from sqlalchemy import func, select

from plugin import clock, create_app, storage
from plugin.crypto import encrypt_token
from plugin.demo_store import Event, store_streams
from plugin.fake_store import FakeStore, FakeStoreServer
from plugin.models import ActionRun, Delivery, DeliveryStatus, Shop, Shopper, Stage
from plugin.synthetic import encode, iso, webhook_headers

DEMO_SHOP = "lifecycle-demo.myshopify.com"


def demo_environment() -> None:
    """Fill in the secrets a real install gets from its environment, with throwaway demo values."""
    for name, value in (
        ("SHOPIFY_API_KEY", "demo-api-key"),
        ("SHOPIFY_API_SECRET", "demo-" + secrets.token_hex(16)),
        ("LIFECYCLE_SECRET_KEY", "demo-" + secrets.token_hex(16)),
    ):
        os.environ.setdefault(name, value)


DEMO_TOKEN = "shpat_demo_token"


def run_demo(shopper_count: int, port: int, seed: int, serve_after: bool) -> None:
    demo_environment()
    fake = FakeStoreServer(FakeStore(access_token=DEMO_TOKEN)).__enter__()
    os.environ.setdefault("SHOPIFY_ADMIN_ORIGIN", fake.origin)
    app = create_app()
    from plugin.cli import share_embedded_redis

    share_embedded_redis(app)
    os.environ.setdefault("LIFECYCLE_OUTBOX", os.path.join(app.instance_path, "outbox"))
    db: storage.Database = app.extensions["lifecycle.db"]
    with db.session() as session:
        token = encrypt_token(DEMO_TOKEN, app.config["SECRET_KEY"])
        storage.upsert_shop(session, DEMO_SHOP, token, clock.now())
    click.echo(f"database:   {db.url}\nredis:      {os.environ.get('REDIS_URL')}")
    click.echo(f"fake store: {fake.origin}/_fake/state (tags, metafields, discount codes written by the app)")
    click.echo(f"outbox:     {os.environ['LIFECYCLE_OUTBOX']} (emails as .eml; set SMTP_URL to send them)")
    children = start_processes(port)
    try:
        wait_until_up(port)
        streams = list(store_streams(shopper_count, clock.now(), seed))
        total = sum(len(stream) for stream in streams)
        click.echo(
            f"demo store: {shopper_count} shoppers, {total} webhooks → http://127.0.0.1:{port}/webhooks"
        )
        started = time.monotonic()
        post_all(streams, port, os.environ["SHOPIFY_API_SECRET"], db, total)
        wait_until_drained(db, total)
        click.echo(f"all {total} webhooks posted and processed in {time.monotonic() - started:.1f} s\n")
        print_stage_table(db)
        print_action_table(db)
        from plugin.oauth import development_session_token

        token = development_session_token(app.config, DEMO_SHOP)
        click.echo(f"\nadmin: http://127.0.0.1:{port}/app/?shop={DEMO_SHOP}&host=ZGVtbw&id_token={token}")
        if serve_after:
            click.echo(f"\nserving on http://127.0.0.1:{port} (webhooks at /webhooks); Ctrl-C to stop")
            children[0].wait()
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(timeout=20)


def start_processes(port: int) -> list[subprocess.Popen]:
    """gunicorn (2 workers) and two RQ workers, as the Procfile runs them."""
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "plugin:create_app()",
        ]
    )
    workers = [subprocess.Popen([sys.executable, "-m", "plugin.cli", "worker"]) for _ in range(2)]
    return [web, *workers]


def wait_until_up(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return
        except requests.RequestException:
            time.sleep(0.2)
    raise click.ClickException(f"the web process did not come up on port {port}")


def post_all(streams: list[list[Event]], port: int, secret: str, db, total: int) -> None:
    """Post each shopper's webhooks in order; shoppers in parallel, as a busy store would."""
    url = f"http://127.0.0.1:{port}/webhooks"
    posted = [0]

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
                        break
                    time.sleep(0.5)
                posted[0] += 1

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(post_stream, stream) for stream in streams]
        while not all(f.done() for f in futures):
            time.sleep(1)
            click.echo(f"  posted {posted[0]}/{total}, processed {count_done(db)}", err=True)
        for future in futures:
            future.result()


def count_done(db) -> int:
    with db.session() as session:
        return session.scalar(
            select(func.count(Delivery.id)).where(Delivery.status != DeliveryStatus.RECEIVED)
        )


def wait_until_drained(db, total: int, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with db.session() as session:
            waiting = session.scalar(
                select(func.count(Delivery.id)).where(Delivery.status == DeliveryStatus.RECEIVED)
            )
        if not waiting:
            return
        click.echo(f"  processing: {waiting} waiting", err=True)
        time.sleep(1)
    raise click.ClickException("the workers did not drain the queue in time")


def print_stage_table(db) -> None:
    """Shoppers per stage, each with one example reason."""
    with db.session() as session:
        shop = session.scalar(select(Shop).where(Shop.domain == DEMO_SHOP))
        counts = dict(
            session.execute(
                select(Shopper.stage, func.count(Shopper.id))
                .where(Shopper.shop_id == shop.id)
                .group_by(Shopper.stage)
            ).all()
        )
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
