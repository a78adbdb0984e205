"""The ledgers: `lifecycle actions` (action runs) and `lifecycle deliveries` (webhook deliveries, and
replaying one)."""

from __future__ import annotations

import click
from sqlalchemy import select

from plugin.cli.group import build_app, emit, main, shop_or_exit
from plugin.clock import iso
from plugin.pipeline import queue
from plugin.store import deliveries as delivery_rows
from plugin.store.models import ActionRun, Delivery, DeliveryStatus, RunStatus, Shopper


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
        shop = shop_or_exit(session, shop_domain)
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
    emit(rows, as_json, ["id", "play", "customer_id", "status", "due_at", "sent_at", "skip_reason"])


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
        "lease_until": iso(run.lease_until),  # while running: when the tick takes an interrupted attempt back
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
    emit(rows, as_json, ["id", "topic", "shop_domain", "status", "received_at", "reason"])


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
