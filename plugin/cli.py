"""The `lifecycle` command: serve, worker, tick, shops, customers, predict, lift, deliveries, demo."""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal

import click
from sqlalchemy import select

from plugin import clock, create_app, instance_path, runtime
from plugin.clock import iso
from plugin.config import ConfigError, load_config
from plugin.core.backtest import BacktestTooLarge
from plugin.core.backtest_period import PeriodError
from plugin.core.facts import accepts_marketing
from plugin.crypto import encrypt_token
from plugin.pipeline import queue
from plugin.pipeline.tick import tick_app
from plugin.pipeline.worker import run_worker
from plugin.shopify.verify import sanitize_shop_domain
from plugin.store import deliveries as delivery_rows
from plugin.store import predictions
from plugin.store import shops as shop_rows
from plugin.store.backtest_history import UnknownRuleError, backtest_rule
from plugin.store.db import Database, database_url
from plugin.store.models import (
    ActionRun,
    DataExport,
    Delivery,
    DeliveryStatus,
    RunStatus,
    Shopper,
    ShopperPrediction,
    Stage,
)
from plugin.store.prediction_reports import holdout_report, lift_row, model_report
from plugin.store.rule_lift import lift_by_rule
from plugin.store.status import shop_status


def build_app():
    try:
        return create_app()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def read_only_database() -> Database:
    """The database alone, for a command that only reads (`backtest`): no migration run, no Redis
    connected or embedded Redis started, as `create_app` would (a database behind the code's migrations
    fails the read with the missing column's error instead of being migrated by a read)."""
    try:
        config = load_config()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    return Database(database_url(config["DATABASE_URL"], instance_path()))


def _now_option(function):
    return click.option(
        "--now", "now", default=None, help="Pin the clock (ISO 8601) for this process, as LIFECYCLE_NOW does."
    )(function)


def _pin(now: str | None) -> None:
    try:
        clock.pin(now)
    except clock.ClockError as error:
        raise click.BadParameter(str(error), param_hint="--now") from None


def _emit(rows: list[dict], as_json: bool, columns: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    click.echo("  ".join(f"{c:<18}" for c in columns))
    for row in rows:
        click.echo("  ".join(f"{str(row.get(c, '')):<18.18}" for c in columns))


@click.group()
def main() -> None:
    """Lifecycle: Shopify webhooks in, customer-lifecycle stages out."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn worker processes")
@click.option(
    "--threads",
    default=4,
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
@_now_option
def worker(burst: bool, now: str | None) -> None:
    """Process queued webhooks and action runs."""
    _pin(now)

    run_worker(build_app(), burst=burst)


@main.command()
@_now_option
def tick(now: str | None) -> None:
    """Apply time-based stage moves as of now, and re-queue deliveries whose job was lost."""
    _pin(now)

    report = tick_app(build_app())
    click.echo(json.dumps(report.as_dict(), indent=2))


@main.group()
def shops() -> None:
    """Installed shops."""


@shops.command("add")
@click.argument("domain")
@click.option("--token", required=True, help="The shop's Admin API access token (stored encrypted).")
def shops_add(domain: str, token: str) -> None:
    """Register an installed shop (the app-store install flow does this by itself)."""

    shop_domain = sanitize_shop_domain(domain)
    if shop_domain is None:
        raise click.BadParameter("a shop domain looks like NAME.myshopify.com", param_hint="DOMAIN")
    app = build_app()
    with app.extensions["lifecycle.db"].session() as session:
        shop_rows.upsert_shop(
            session, shop_domain, encrypt_token(token, app.config["SECRET_KEY"]), clock.now()
        )
    click.echo(f"registered {shop_domain}")


@shops.command("status")
@click.argument("domain")
def shops_status(domain: str) -> None:
    """Install state, token, backfill progress and data freshness of a shop, as JSON."""

    found = shop_status(build_app().extensions["lifecycle.db"], domain.strip().lower())
    if found is None:
        raise click.ClickException(f"{domain} is not known")
    click.echo(json.dumps(found, indent=2))


@shops.command("backfill")
@click.argument("domain")
def shops_backfill(domain: str) -> None:
    """Start a shop's history backfill again (after it failed: a refused bulk query, a failed operation)."""
    from plugin.shopify import backfill  # only this command restarts a backfill

    app = build_app()
    db = app.extensions["lifecycle.db"]
    with db.session() as session:
        shop = shop_rows.get_shop(session, domain.strip().lower())
        shop_id = shop.id if shop is not None and shop.active else None
    if shop_id is None:
        raise click.ClickException(f"{domain} is not an installed shop")
    progress = backfill.retry(db, shop_id)
    if progress is None:
        raise click.ClickException(f"the backfill of {domain} is under way or done; nothing to retry")
    queue.enqueue_backfill(app.extensions["lifecycle.redis"], shop_id)
    click.echo(f"backfill of {domain} queued again")


@main.group()
def compliance() -> None:
    """Data exports produced for customers/data_request."""


@compliance.command("exports")
@click.option("--shop", "shop_domain", required=True)
def compliance_exports(shop_domain: str) -> None:
    """List a shop's data exports (id, customer, request, when)."""

    with build_app().extensions["lifecycle.db"].session() as session:
        shop = shop_rows.get_shop(session, shop_domain)
        rows = (
            []
            if shop is None
            else session.scalars(
                select(DataExport).where(DataExport.shop_id == shop.id).order_by(DataExport.id)
            )
        )
        listed = [
            {
                "id": e.id,
                "customer_id": e.customer_id,
                "data_request_id": e.data_request_id,
                "requested_at": iso(e.requested_at),
            }
            for e in rows
        ]
    click.echo(json.dumps(listed, indent=2))


@compliance.command("export")
@click.argument("export_id", type=int)
def compliance_export(export_id: int) -> None:
    """Print one data export as JSON, to hand to the merchant's customer."""

    with build_app().extensions["lifecycle.db"].session() as session:
        export = session.get(DataExport, export_id)
        if export is None:
            raise click.ClickException(f"no data export {export_id}")
        click.echo(json.dumps(export.content, indent=2, ensure_ascii=False))


@main.command()
@click.option("--shop", "shop_domain", required=True)
@click.option("--stage", type=click.Choice([s.value for s in Stage]), default=None)
@click.option("--json", "as_json", is_flag=True)
def customers(shop_domain: str, stage: str | None, as_json: bool) -> None:
    """List shoppers with their stage and why."""
    app = build_app()
    with app.extensions["lifecycle.db"].session() as session:
        shop = shop_rows.get_shop(session, shop_domain)
        if shop is None:
            raise click.ClickException(f"no such shop: {shop_domain}")
        query = (
            select(Shopper, ShopperPrediction)
            .outerjoin(ShopperPrediction, ShopperPrediction.shopper_id == Shopper.id)
            .where(Shopper.shop_id == shop.id, Shopper.deleted_at.is_(None))
        )
        if stage:
            query = query.where(Shopper.stage == stage)
        rows = [customer_row(s, p) for s, p in session.execute(query.order_by(Shopper.customer_id))]
    _emit(rows, as_json, ["id", "email", "stage", "orders_count", "total_spent", "stage_reason"])


def customer_row(shopper: Shopper, prediction: ShopperPrediction | None = None) -> dict:
    """A shopper as `customers --json` prints it; the forecast fields are null without a fitted model."""
    return {
        "id": shopper.customer_id,
        "email": shopper.email,
        "first_name": shopper.first_name,
        "last_name": shopper.last_name,
        "locale": shopper.locale,
        "stage": shopper.stage,
        "stage_reason": shopper.stage_reason,
        "stage_changed_at": iso(shopper.stage_changed_at),
        "orders_count": shopper.orders_count,
        "total_spent": str(Decimal(shopper.total_spent).quantize(Decimal("0.01"))),
        "currency": shopper.currency,
        "first_order_at": iso(shopper.first_order_at),
        "last_order_at": iso(shopper.last_order_at),
        "last_checkout_at": iso(shopper.last_checkout_at),
        "last_cart_at": iso(shopper.last_cart_at),
        "checkout_open": shopper.checkout_open,
        "accepts_marketing": accepts_marketing(shopper),
        "email_marketing_consent": shopper.consent_state,
        "tags": shopper.tags,
        "p_alive": prediction.p_alive if prediction else None,
        "expected_orders_90d": prediction.expected_orders_90d if prediction else None,
        "predicted_next_order_at": iso(prediction.predicted_next_order_at) if prediction else None,
        "predicted_clv_365d": prediction.predicted_clv_365d if prediction else None,
    }


@main.command()
@click.option("--shop", "shop_domain", required=True)
@click.option("--unit", type=click.Choice(["days", "weeks"]), default="days", show_default=True)
@_now_option
@click.option("--json", "as_json", is_flag=True)
def predict(shop_domain: str, unit: str, now: str | None, as_json: bool) -> None:
    """Fit the shop's purchase model now (stored with its cutoff) and check it on a holdout."""
    _pin(now)

    db = build_app().extensions["lifecycle.db"]
    with db.session() as session:
        shop = shop_rows.get_shop(session, shop_domain)
        if shop is None:
            raise click.ClickException(f"no such shop: {shop_domain}")
    instant = clock.now()
    fit = predictions.fit_shop(db, shop.id, instant, unit=unit)
    report = model_report(fit)
    if fit.reason is None:
        report["holdout"] = holdout_report(predictions.holdout_check(db, shop.id, instant, unit=unit))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for line in model_lines(report):
        click.echo(line)


def model_lines(report: dict) -> list[str]:
    lines = [f"model: {report['model']}, orders up to {report['cutoff_day']}"]
    if not report["fitted"]:
        return [*lines, f"not fitted: {report['reason']}"]
    bg, gg = report["bg_nbd"], report["gamma_gamma"]
    lines += [
        f"BG/NBD: r = {bg['r']:.4f}, alpha = {bg['alpha']:.4f} ({bg['unit']}), a = {bg['a']:.4f}, "
        f"b = {bg['b']:.4f}; log-likelihood {bg['log_likelihood']:.1f}",
        f"Gamma-Gamma: p = {gg['p']:.4f}, q = {gg['q']:.4f}, gamma = {gg['gamma']:.4f}; "
        f"log-likelihood {gg['log_likelihood']:.1f}",
        f"shoppers used: {report['shoppers']} ({report['repeat_buyers']} repeat buyers)",
    ]
    holdout = report["holdout"]
    if "reason" in holdout:
        return [*lines, f"holdout check: {holdout['reason']}"]
    return [
        *lines,
        f"holdout check: fitted on orders up to {holdout['calibration_end_day']}, repeat orders to "
        f"{holdout['end_day']}: forecast {holdout['forecast_repeat_orders']}, "
        f"actual {holdout['actual_repeat_orders']}",
    ]


@main.command()
@click.option("--shop", "shop_domain", required=True)
@click.option("--json", "as_json", is_flag=True)
def lift(shop_domain: str, as_json: bool) -> None:
    """Per rule with a hold-out group: the sent arm's conversion against the held-out arm's, 95 % interval."""
    with build_app().extensions["lifecycle.db"].session() as session:
        shop = shop_rows.get_shop(session, shop_domain)
        if shop is None:
            raise click.ClickException(f"no such shop: {shop_domain}")
        measured = [lift_row(m) for m in lift_by_rule(session, shop, clock.now())]
    if as_json:
        click.echo(json.dumps(measured, indent=2))
        return
    if not measured:
        click.echo("no rule has a hold-out group (holdout_percent > 0)")
    for row in measured:
        sent, held = row["sent"], row["held_out"]
        click.echo(
            f"{row['rule']} ({row['holdout_percent']} % held out): "
            f"sent {sent['conversions']}/{sent['runs']}, held out {held['conversions']}/{held['runs']} "
            f"ordered within {row['attribution_days']} days"
        )
        if row["lift"] is None:
            click.echo(f"  {row['reason']}")
        else:
            found = row["lift"]
            click.echo(
                f"  lift {found['absolute_lift']:+.1%} "
                f"(95 % CI {found['low']:+.1%} to {found['high']:+.1%}), "
                f"incremental revenue {found['incremental_revenue']:.2f}"
            )


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
        shop = shop_rows.get_shop(session, shop_domain)
        shop_id = shop.id if shop is not None else None
    if shop_id is None:
        raise click.ClickException(f"no such shop: {shop_domain}")
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


@main.command()
@click.option("--shop", "shop_domain", required=True)
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), default=None)
@click.option("--play", default=None, help="Only this play (a rule key, stage_sync or consent_sync).")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=1000, show_default=True)
def actions(shop_domain: str, status: str | None, play: str | None, as_json: bool, limit: int) -> None:
    """List action runs (newest first): play, shopper, status, due/sent time, and why skipped or deferred."""
    app = build_app()
    with app.extensions["lifecycle.db"].session() as session:
        shop = shop_rows.get_shop(session, shop_domain)
        if shop is None:
            raise click.ClickException(f"no such shop: {shop_domain}")
        query = (
            select(ActionRun, Shopper)
            .outerjoin(Shopper, Shopper.id == ActionRun.shopper_id)
            .where(ActionRun.shop_id == shop.id)
            .order_by(ActionRun.id.desc())
            .limit(limit)
        )
        if status:
            query = query.where(ActionRun.status == status)
        if play:
            query = query.where(ActionRun.play == play)
        rows = [run_row(run, shopper) for run, shopper in session.execute(query)]
    _emit(rows, as_json, ["id", "play", "customer_id", "status", "due_at", "sent_at", "skip_reason"])


def run_row(run: ActionRun, shopper: Shopper | None) -> dict:
    return {
        "id": run.id,
        "play": run.play,
        "action": run.action,
        "customer_id": shopper.customer_id if shopper else None,
        "email": run.recipient_email or (shopper.email if shopper else None),
        "status": run.status,
        "trigger": run.trigger,
        "cycle": run.cycle,
        "created_at": iso(run.created_at),
        "due_at": iso(run.due_at),
        "sent_at": iso(run.sent_at),
        "finished_at": iso(run.finished_at),
        "skip_reason": run.skip_reason,
        "deferred_reason": run.deferred_reason,
        "discount_code": run.discount_code,
        "discount_expires_at": iso(run.discount_expires_at),
        "attempts": run.attempts,
        "marketing": run.marketing,
    }


@main.group(invoke_without_command=True)
@click.option("--status", type=click.Choice([s.value for s in DeliveryStatus]), default=None)
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
def deliveries(ctx, status: str | None, as_json: bool, limit: int) -> None:
    """List webhook deliveries (newest first), or replay one."""
    if ctx.invoked_subcommand:
        return
    app = build_app()
    with app.extensions["lifecycle.db"].session() as session:
        query = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
        if status:
            query = query.where(Delivery.status == status)
        rows = [delivery_row(d) for d in session.scalars(query)]
    _emit(rows, as_json, ["id", "topic", "shop_domain", "status", "received_at", "reason"])


def delivery_row(delivery: Delivery) -> dict:
    return {
        "id": delivery.id,
        "webhook_id": delivery.webhook_id,
        "topic": delivery.topic,
        "shop_domain": delivery.shop_domain,
        "api_version": delivery.api_version,
        "event_id": delivery.event_id,
        "triggered_at": iso(delivery.triggered_at),
        "received_at": iso(delivery.received_at),
        "status": delivery.status,
        "reason": delivery.reason,
        "attempts": delivery.attempts,
        "processed_at": iso(delivery.processed_at),
    }


@deliveries.command("replay")
@click.argument("delivery_id", type=int)
def deliveries_replay(delivery_id: int) -> None:
    """Queue a delivery again (after fixing what quarantined or failed it)."""
    app = build_app()
    with app.extensions["lifecycle.db"].session() as session:
        delivery = delivery_rows.reset_delivery(session, delivery_id)
        if delivery is None:
            raise click.ClickException(f"no delivery {delivery_id}")
    queue.enqueue_drain(app.extensions["lifecycle.redis"], force=True)
    click.echo(f"delivery {delivery_id} queued again")


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


if __name__ == "__main__":
    main()
