"""The app's own lifecycle in a shop: uninstall, and bulk operations finishing."""

from __future__ import annotations

from plugin.handlers.context import HandlerContext
from plugin.handlers.registry import handles
from plugin.shopify.payloads import BulkOperationFinish, ShopData
from plugin.store import runs, shops


@handles("app/uninstalled")
def on_app_uninstalled(ctx: HandlerContext, shop: ShopData) -> None:
    """Deactivate the shop, forget its token, cancel its pending runs; data stays until shop/redact."""

    shops.deactivate_shop(ctx.session, ctx.shop, ctx.now)
    runs.cancel_pending(ctx.session, ctx.shop.id, "the app was uninstalled", ctx.now)


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
