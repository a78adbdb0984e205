"""The `lifecycle` click group and what its commands share: building the app, the `--now` option, the
shop named by `--shop`, and printing rows as a table or as JSON."""

from __future__ import annotations

import json

import click

from plugin import clock, create_app
from plugin.config import ConfigError
from plugin.store import shops


def build_app():
    try:
        return create_app()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def shop_or_exit(session, domain: str):
    """The shop `--shop` names, or the command ends saying there is none."""
    shop = shops.get_shop(session, domain)
    if shop is None:
        raise click.ClickException(f"no such shop: {domain}")
    return shop


def now_option(function):
    return click.option(
        "--now", "now", default=None, help="Pin the clock (ISO 8601) for this process, as LIFECYCLE_NOW does."
    )(function)


def pin(now: str | None) -> None:
    try:
        clock.pin(now)
    except clock.ClockError as error:
        raise click.BadParameter(str(error), param_hint="--now") from None


def emit(rows: list[dict], as_json: bool, columns: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    click.echo("  ".join(f"{c:<18}" for c in columns))
    for row in rows:
        click.echo("  ".join(f"{str(row.get(c, '')):<18.18}" for c in columns))


@click.group()
def main() -> None:
    """Lifecycle: Shopify webhooks in, customer-lifecycle stages out."""
