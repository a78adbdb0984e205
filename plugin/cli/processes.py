"""The long-running and maintenance commands: serve, worker, tick, demo, db upgrade."""

from __future__ import annotations

import json
import os
import sys

import click

from plugin import runtime
from plugin.cli.group import build_app, main, now_option, pin
from plugin.pipeline.tick import tick_app
from plugin.pipeline.worker import run_worker


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn worker processes")
@click.option(
    "--threads",
    default=8,
    show_default=True,
    type=int,
    help="threads per worker: concurrent webhooks share their database writes (web.ledger_writer)",
)
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the HTTP endpoints under gunicorn."""
    app = build_app()  # migrates, and starts the embedded Redis when REDIS_URL is unset
    runtime.hand_down(app)  # gunicorn's workers use this instance, database and Redis, wherever started
    os.execvp(
        sys.executable,
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--chdir",  # import the `plugin` this command runs, not one in the working directory
            runtime.PACKAGE_ROOT,
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--bind",
            f"{host}:{port}",
            "--access-logfile",
            "-",
            "plugin:create_app()",
        ],
    )


@main.command()
@click.option("--burst", is_flag=True, help="Drain the queues, then exit.")
@now_option
def worker(burst: bool, now: str | None) -> None:
    """Process queued webhooks and action runs."""
    pin(now)

    run_worker(build_app(), burst=burst)


@main.command()
@now_option
def tick(now: str | None) -> None:
    """Apply time-based stage moves as of now; re-queue deliveries and runs whose job was lost, and runs
    whose attempt was interrupted."""
    pin(now)

    report = tick_app(build_app())
    click.echo(json.dumps(report.as_dict(), indent=2))


@main.command()
@click.option("--shoppers", "shopper_count", default=600, show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--seed", default=7, show_default=True)
@click.option("--no-serve", is_flag=True, help="Exit after the report instead of serving on.")
def demo(shopper_count: int, port: int, seed: int, no_serve: bool) -> None:
    """Run a demo store end to end: signed webhooks → HTTP → worker → stages, then keep serving."""
    from plugin.demo.command import run_demo  # the demo and its fakes load only for this command

    run_demo(shopper_count=shopper_count, port=port, seed=seed, serve_after=not no_serve)


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations (every command does this on start; this does only that)."""
    build_app()
    click.echo("database is at the newest revision")
