"""`lifecycle customers`: a shop's shoppers with their stage, why, and their forecast."""

from __future__ import annotations

from decimal import Decimal

import click
from sqlalchemy import select

from plugin.cli.group import build_app, emit, main, shop_or_exit
from plugin.clock import iso
from plugin.core.facts import accepts_marketing
from plugin.store.models import Shopper, ShopperPrediction, Stage


@main.command()
@click.option("--shop", "shop_domain", required=True)
@click.option("--stage", type=click.Choice([s.value for s in Stage]), default=None)
@click.option("--json", "as_json", is_flag=True)
def customers(shop_domain: str, stage: str | None, as_json: bool) -> None:
    """List shoppers with their stage and why."""
    app = build_app()
    with app.extensions["lifecycle.db"].session() as session:
        shop = shop_or_exit(session, shop_domain)
        query = (
            select(Shopper, ShopperPrediction)
            .outerjoin(ShopperPrediction, ShopperPrediction.shopper_id == Shopper.id)
            .where(Shopper.shop_id == shop.id, Shopper.deleted_at.is_(None))
        )
        if stage:
            query = query.where(Shopper.stage == stage)
        rows = [customer_row(s, p) for s, p in session.execute(query.order_by(Shopper.customer_id))]
    emit(rows, as_json, ["id", "email", "stage", "orders_count", "total_spent", "stage_reason"])


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
