"""The app's own lifecycle in a shop: uninstall, and bulk operations finishing."""

from __future__ import annotations

from flask import current_app

from plugin.handlers.context import HandlerContext
from plugin.handlers.registry import handles
from plugin.shopify.install_probe import Installation, probe_installation
from plugin.shopify.payloads import BulkOperationFinish, ShopData
from plugin.store import runs, shops

UNINSTALLED = "the app was uninstalled"


@handles("app/uninstalled")
def on_app_uninstalled(ctx: HandlerContext, shop: ShopData) -> str:
    """Pause all sending at once and cancel pending runs; record the uninstall (shop deactivated, tokens
    forgotten) once Shopify refuses the token. Data stays until shop/redact.

    The signature covers the body only, so a replayed uninstall body can pause a shop but never
    deactivate it: the pause lifts when the merchant opens the app again (token exchange re-installs).
    """
    shops.pause_shop(ctx.session, ctx.shop, UNINSTALLED, ctx.now)
    cancelled = runs.cancel_pending(ctx.session, ctx.shop.id, f"sending paused: {UNINSTALLED}", ctx.now)
    answer = probe_installation(ctx.shop, current_app.config, ctx.now)
    if answer is Installation.REFUSED:
        shops.deactivate_shop(ctx.session, ctx.shop, ctx.now, UNINSTALLED)
        return (
            f"uninstalled: Shopify refuses the token; shop deactivated, {cancelled} pending run(s) cancelled"
        )
    return f"sending paused, {cancelled} pending run(s) cancelled; uninstall not confirmed (token {answer})"


@handles("bulk_operations/finish")
def on_bulk_operations_finish(ctx: HandlerContext, operation: BulkOperationFinish) -> None:
    """Remember the finished bulk operation; when it is the backfill's, wake the backfill to import it."""
    ctx.shop.last_bulk_operation = {
        "id": operation.admin_graphql_api_id,
        "status": operation.status,
        "error_code": operation.error_code,
        "completed_at": operation.completed_at.isoformat() if operation.completed_at else None,
        "type": operation.type,
    }
    backfill = ctx.shop.backfill or {}
    if backfill.get("operation_id") == operation.admin_graphql_api_id:
        ctx.jobs.append(("backfill", ctx.shop.id))
