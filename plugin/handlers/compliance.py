"""Mandatory compliance topics, processed even for shops that are no longer installed.

customers/data_request gathers the shopper's stored data into a DataExport the merchant retrieves
(`lifecycle compliance export ID`, or the admin); customers/redact and shop/redact erase (see
`plugin.compliance` for where personal data lives).
"""

from __future__ import annotations

from flask import current_app

from plugin.handlers.context import HandlerContext
from plugin.handlers.registry import handles
from plugin.shopify.payloads import ComplianceRequest
from plugin.store import erasure as compliance


def _outbox() -> str:
    return current_app.config["OUTBOX"]


@handles("customers/data_request")
def on_data_request(ctx: HandlerContext, request: ComplianceRequest) -> str:
    if ctx.shop is None or request.customer_id is None:
        return "nothing stored for this shop"
    export = compliance.record_export(
        ctx.session, ctx.shop, request.customer_id, request.email, request.data_request_id, ctx.now
    )
    return f"data export {export.id} ready for the merchant"


@handles("customers/redact")
def on_customer_redact(ctx: HandlerContext, request: ComplianceRequest) -> str:
    if request.customer_id is None:
        return "no customer named"
    counts = compliance.redact_shopper(
        ctx.session,
        ctx.shop,
        ctx.shop_domain,
        request.customer_id,
        request.email,
        request.phone,
        request.orders,
        _outbox(),
    )
    ctx.jobs.append(("erase_on_disk", ctx.shop.id if ctx.shop else 0))
    touched = ", ".join(f"{kind} {n}" for kind, n in counts.items() if n)
    return f"redacted: {touched or 'nothing stored'}"


@handles("shop/redact")
def on_shop_redact(ctx: HandlerContext, request: ComplianceRequest) -> str:
    ctx.jobs.append(("erase_on_disk", ctx.shop.id if ctx.shop else 0))
    removed = compliance.redact_shop(ctx.session, ctx.shop, ctx.shop_domain, ctx.delivery_id, _outbox())
    ctx.shop = None
    return f"shop erased ({removed} rows)"
