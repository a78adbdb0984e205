"""`lifecycle shops`: register an installed shop, show its status, restart its history backfill."""

from __future__ import annotations

import json

import click

from plugin import clock
from plugin.cli.group import build_app, main
from plugin.crypto import encrypt_token
from plugin.pipeline import queue
from plugin.shopify.verify import sanitize_shop_domain
from plugin.store import shops as shop_rows
from plugin.store.status import shop_status


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
