"""One-click unsubscribe: a signed link in every marketing email, working without login.

GET shows a page with one button; POST (the button, or a mail client's RFC 8058 one-click request with
body `List-Unsubscribe=One-Click`) records the suppression, withdraws consent on the local profile, and
queues the consent update to Shopify (customerEmailMarketingConsentUpdate).

The link names the run that sent the email (links.url_for), not the address; the address it resolves to
is matched exactly (lower-cased), so `%` and `_` in an address are characters, not wildcards.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app
from markupsafe import escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from plugin import clock, links
from plugin.core.rules import PlannedRun
from plugin.pipeline import queue
from plugin.store import run_rows, runs, suppressions
from plugin.store.db import Database
from plugin.store.models import ActionRun, Shop, Shopper

log = logging.getLogger(__name__)


bp = Blueprint("unsubscribe", __name__)


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 480px; margin: 48px auto; padding: 0 16px;">
<h1 style="font-size: 22px;">{title}</h1><p>{text}</p>{form}</body></html>"""


INVALID = PAGE.format(title="Link not valid", text="This unsubscribe link is not valid.", form="")


def recipient(session: Session, link: links.UnsubscribeLink) -> tuple[int, str] | None:
    """The (shop id, lower-cased address) a link stands for, or None when it names nothing we have."""
    if link.run_id is None:
        return link.shop_id, link.email.strip().lower()
    run = session.get(ActionRun, link.run_id)
    if run is None:
        return None
    shopper = session.get(Shopper, run.shopper_id) if run.shopper_id is not None else None
    email = run.recipient_email or (shopper.email if shopper else None)
    return (run.shop_id, email.strip().lower()) if email else None


@bp.get("/unsubscribe/<token>")
def confirm(token: str):
    """The page behind the link: one button, so link scanners that follow GETs unsubscribe nobody."""
    link = links.read_unsubscribe_token(token)
    if link is None:
        return INVALID, 404
    db: Database = current_app.extensions["lifecycle.db"]
    with db.session() as session:
        found = recipient(session, link)
    if found is None:
        return INVALID, 404
    form = (
        '<form method="post"><button type="submit" style="font-size: 16px; padding: 10px 18px;">'
        "Unsubscribe</button></form>"
    )
    text = f"Stop marketing emails to <strong>{escape(found[1])}</strong>?"
    return PAGE.format(title="Unsubscribe", text=text, form=form)


@bp.post("/unsubscribe/<token>")
def unsubscribe(token: str):
    """Record the suppression (idempotent) and withdraw consent, here and in Shopify."""
    link = links.read_unsubscribe_token(token)
    if link is None:
        return INVALID, 404
    db: Database = current_app.extensions["lifecycle.db"]
    now, queued = clock.now(), []
    with db.session() as session:
        found = recipient(session, link)
        if found is None:
            return INVALID, 404
        shop_id, email = found
        shop = session.get(Shop, shop_id)
        if shop is None:
            return PAGE.format(title="Link not valid", text="This shop is gone.", form=""), 404
        suppressions.suppress(db, session, shop_id, email, "one-click", now)
        for shopper in session.scalars(
            select(Shopper).where(Shopper.shop_id == shop_id, func.lower(Shopper.email) == email)
        ):
            shopper.consent_state, shopper.consent_updated_at = "unsubscribed", now
            runs.skip_pending_marketing(session, shopper.id, "the address unsubscribed", now)
            run_id = run_rows.store_run(db, session, shop_id, consent_run(shop_id, shopper.id, now), now)
            queued += [run_id] if run_id else []
    connection = current_app.extensions["lifecycle.redis"]
    queue.enqueue_action_runs(connection, [(run_id, 0) for run_id in queued])  # new runs: no attempts yet
    log.info("unsubscribed an address at shop %s", shop_id)
    return PAGE.format(
        title="You are unsubscribed", text=f"{escape(email)} will get no more marketing emails.", form=""
    )


def consent_run(shop_id: int, shopper_id: int, now) -> PlannedRun:
    """Tell Shopify this shopper unsubscribed."""
    return run_rows.system_run(
        shop_id, "consent_sync", "sync_consent", shopper_id, now.isoformat(), now, "unsubscribe"
    )
