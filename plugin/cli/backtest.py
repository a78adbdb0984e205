"""`lifecycle backtest`: replay the stored history through a rule, reading the database only."""

from __future__ import annotations

import json

import click

from plugin import clock, instance_path
from plugin.cli.group import main, shop_or_exit
from plugin.config import ConfigError, load_config
from plugin.core.backtest import BacktestTooLarge
from plugin.core.backtest_period import PeriodError
from plugin.store.backtest_history import UnknownRuleError, backtest_rule
from plugin.store.db import Database, database_url


def read_only_database() -> Database:
    """The database alone, for a command that only reads (`backtest`): no migration run, no Redis
    connected or embedded Redis started, as `create_app` would (a database behind the code's migrations
    fails the read with the missing column's error instead of being migrated by a read)."""
    try:
        config = load_config()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    return Database(database_url(config["DATABASE_URL"], instance_path()))


@main.command()
@click.option("--shop", "shop_domain", required=True)
@click.option("--rule", "key", required=True, help="The rule's key (it need not be on).")
@click.option("--from", "start", default=None, help="First day, YYYY-MM-DD (default: 90 days before --to).")
@click.option("--to", "end", default=None, help="Last day, YYYY-MM-DD, included (default: now).")
@click.option("--json", "as_json", is_flag=True)
def backtest(shop_domain: str, key: str, start: str | None, end: str | None, as_json: bool) -> None:
    """Replay the stored history through a rule: whom it would have reached, what the cap let through,
    and how many of them ordered anyway. Sends and writes nothing."""
    db = read_only_database()
    with db.read_session() as session:
        shop_id = shop_or_exit(session, shop_domain).id
    try:
        result = backtest_rule(db, shop_id, key, clock.now(), start, end).as_dict()
    except PeriodError as error:
        raise click.BadParameter(str(error), param_hint="--from/--to") from None
    except BacktestTooLarge as error:
        raise click.ClickException(str(error)) from None
    except UnknownRuleError as error:
        raise click.ClickException(str(error)) from None
    finally:
        db.engine.dispose()
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo("\n".join(backtest_lines(result)))


def backtest_lines(result: dict) -> list[str]:
    """A backtest's figures as a merchant reads them."""
    rate = result["baseline_conversion"]
    lines = [
        f"{result['rule']}: {result['from']} to {result['to']}",
        f"  shoppers reached       {result['shoppers_reached']}",
        f"  messages triggered     {result['messages_triggered']}",
        f"  allowed by the cap     {result['messages_allowed']}",
        f"  held back by the cap   {result['messages_capped']}",
        f"  delayed by quiet hours {result['messages_quiet_hours_delayed']}",
        f"  ordered within {result['attribution_days']} days {result['ordered_within_window']}"
        + (f" ({rate:.1%}: the baseline a play has to beat)" if rate is not None else ""),
        f"  first / last message   {result['first_at'] or '-'} / {result['last_at'] or '-'}",
    ]
    if result["by_week"]:
        lines.append("  messages per week      " + ", ".join(
            f"{week['week_start']}: {week['messages']}" for week in result["by_week"]
        ))  # fmt: skip
    return lines + [f"note: {note}" for note in result["notes"]]
