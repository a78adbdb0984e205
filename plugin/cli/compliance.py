"""`lifecycle compliance`: the data exports produced for customers/data_request, listed and printed."""

from __future__ import annotations

import json

import click
from sqlalchemy import select

from plugin.cli.group import build_app, main
from plugin.clock import iso
from plugin.store import shops as shop_rows
from plugin.store.models import DataExport


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
