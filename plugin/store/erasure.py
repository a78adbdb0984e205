"""Shopify's mandatory privacy duties: hand over a shopper's data, erase a shopper, erase a shop.

Personal data lives in more places than the profile: the raw webhook bodies of the delivery ledger, the
recipient and context of action runs, checkouts' recovery links, back-in-stock subscriptions, data exports,
and the `.eml` files of the outbox. Erasure visits each of them; what stays is what carries no personal
data (order totals for the shop's revenue figures, anonymous run outcomes for lift, suppressions as hashes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from plugin.clock import iso
from plugin.store.models import (
    ActionAttempt,
    ActionRun,
    Cart,
    Checkout,
    DataExport,
    Delivery,
    Order,
    Shop,
    Shopper,
    ShopperPrediction,
    StageTransition,
    StockSubscription,
    Suppression,
)
from plugin.store.suppressions import email_hash

REDACTED_BODY = b'{"redacted": true}'
# Where erasure deletes or overwrites personal values: the tables whose freed space is cleared afterwards.
ERASED_TABLES = (
    "shoppers", "stage_transitions", "deliveries", "action_runs", "action_attempts", "orders", "checkouts",
    "carts", "stock_subscriptions", "data_exports", "shopper_predictions",
)  # fmt: skip
SCAN_CHUNK = 500


def export_shopper(session: Session, shop: Shop, customer_id: int, email: str | None, now: datetime) -> dict:
    """Everything Lifecycle stores about one shopper, as a JSON-ready dict (the data_request answer)."""
    shopper = session.scalar(
        select(Shopper).where(Shopper.shop_id == shop.id, Shopper.customer_id == customer_id)
    )
    email = (shopper.email if shopper and shopper.email else email) or None
    orders = session.scalars(
        select(Order)
        .where(Order.shop_id == shop.id, Order.customer_id == customer_id)
        .order_by(Order.placed_at)
    ).all()
    content = {
        "shop": shop.domain,
        "customer_id": customer_id,
        "generated_at": now.isoformat(),
        "profile": _profile(shopper),
        "prediction": _prediction(session, shopper),
        "orders": [
            {
                "order_id": o.order_id,
                "name": o.name,
                "placed_at": iso(o.placed_at),
                "total_price": str(o.total_price),
                "refunded": str(o.refunded),
                "currency": o.currency,
                "cancelled_at": iso(o.cancelled_at),
                "line_items": o.line_items,
                "discount_codes": o.discount_codes,
            }
            for o in orders
        ],
        "checkouts": [
            {"token": c.token, "updated_at": iso(c.source_updated_at), "completed_at": iso(c.completed_at)}
            for c in session.scalars(
                select(Checkout).where(Checkout.shop_id == shop.id, Checkout.customer_id == customer_id)
            )
        ],
        "stage_history": [],
        "messages": [],
        "back_in_stock_requests": [
            {"variant_id": s.variant_id, "created_at": iso(s.created_at), "notified_at": iso(s.notified_at)}
            for s in session.scalars(
                select(StockSubscription).where(*_subscription_filter(shop, customer_id, email))
            )
        ],
        "unsubscribed_from_marketing": bool(
            email
            and session.scalar(
                select(Suppression.id).where(
                    Suppression.shop_id == shop.id, Suppression.email_hash == email_hash(email)
                )
            )
        ),
    }
    if shopper:
        content["stage_history"] = [
            {"from": t.from_stage, "to": t.to_stage, "at": iso(t.at), "why": t.reason}
            for t in session.scalars(
                select(StageTransition)
                .where(StageTransition.shopper_id == shopper.id)
                .order_by(StageTransition.at)
            )
        ]
        content["messages"] = [
            {
                "play": r.play,
                "status": r.status,
                "planned_at": iso(r.created_at),
                "sent_at": iso(r.sent_at),
                "discount_code": r.discount_code,
                "why_skipped": r.skip_reason,
            }
            for r in session.scalars(
                select(ActionRun).where(ActionRun.shopper_id == shopper.id).order_by(ActionRun.id)
            )
        ]
    return content


def record_export(session: Session, shop: Shop, customer_id: int, email, request_id, now) -> DataExport:
    export = DataExport(
        shop_id=shop.id,
        customer_id=customer_id,
        data_request_id=request_id,
        requested_at=now,
        content=export_shopper(session, shop, customer_id, email, now),
    )
    session.add(export)
    session.flush()
    return export


def redact_shopper(
    session: Session,
    shop: Shop | None,
    shop_domain: str,
    customer_id: int,
    email: str | None,
    phone: str | None,
    orders: list[int],
    outbox: str | None,
) -> dict[str, int]:
    """Erase one shopper's personal data everywhere; returns what was touched, by kind."""
    counts: dict[str, int] = {}
    names: list[str | None] = []
    if shop is not None:
        shopper = session.scalar(
            select(Shopper).where(Shopper.shop_id == shop.id, Shopper.customer_id == customer_id)
        )
        email = email or (shopper.email if shopper else None)
        runs_of = ActionRun.shopper_id == shopper.id if shopper is not None else None
        if email and email.strip():  # a back-in-stock subscriber's alerts, with or without a profile
            by_address = func.lower(ActionRun.recipient_email) == email.strip().lower()
            runs_of = by_address if runs_of is None else or_(runs_of, by_address)
        if runs_of is not None:
            run_ids = list(session.scalars(select(ActionRun.id).where(ActionRun.shop_id == shop.id, runs_of)))
            counts["messages anonymised"] = _anonymise_runs(session, run_ids)
            _delete_outbox_files(outbox, run_ids, shop.id)
        if shopper is not None:
            session.delete(shopper)  # its stage transitions go with it
            counts["profiles"] = 1
            names = [shopper.first_name, shopper.last_name]
        order_filter = Order.customer_id == customer_id
        if orders:
            order_filter = or_(order_filter, Order.order_id.in_(orders))
        counts["orders unlinked"] = session.execute(
            update(Order)
            .where(Order.shop_id == shop.id, order_filter)
            .values(customer_id=None, checkout_token=None)
        ).rowcount
        for model in (Checkout, Cart):
            counts[model.__tablename__] = session.execute(
                delete(model).where(model.shop_id == shop.id, model.customer_id == customer_id)
            ).rowcount
        counts["back-in-stock requests"] = session.execute(
            delete(StockSubscription).where(*_subscription_filter(shop, customer_id, email))
        ).rowcount
        counts["data exports"] = session.execute(
            delete(DataExport).where(DataExport.shop_id == shop.id, DataExport.customer_id == customer_id)
        ).rowcount
    patterns = _identifying_patterns(customer_id, [email, phone])
    counts["webhook bodies"] = _redact_deliveries(session, shop_domain, patterns)
    counts["failed jobs"] = forget_failed_jobs(_redis(), [email, phone, *names])
    return counts


def forget_failed_jobs(connection, needles: list[str | None]) -> int:
    """Delete the failed RQ jobs whose arguments or failure text name the shopper (a traceback may quote a
    payload fragment); returns how many. A kept job is the operator's to replay; these could not be."""
    words = [
        re.compile(r"\b" + re.escape(n.strip()) + r"\b", re.IGNORECASE) for n in needles if n and n.strip()
    ]
    if connection is None or not words:
        return 0
    from rq import Queue  # imported here: only erasure reaches into RQ's registries from the store
    from rq.exceptions import NoSuchJobError
    from rq.job import Job
    from rq.serializers import JSONSerializer

    removed = 0
    for queue in Queue.all(connection=connection, serializer=JSONSerializer):
        registry = queue.failed_job_registry
        for job_id in registry.get_job_ids():
            try:
                job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
            except NoSuchJobError:
                continue
            text = _job_text(job)
            if any(word.search(text) for word in words):
                registry.remove(job, delete_job=True)
                removed += 1
    return removed


def _job_text(job) -> str:
    result = job.latest_result()
    failure = result.exc_string if result is not None else None
    return f"{job.args!r} {job.kwargs!r} {failure or ''}"


def _redis():
    """The app's Redis, when erasing inside one (a worker or the CLI); None in a bare session."""
    from flask import current_app, has_app_context  # store code otherwise never needs the app

    return current_app.extensions.get("lifecycle.redis") if has_app_context() else None


def redact_shop(session: Session, shop: Shop | None, shop_domain: str, keep_delivery: int, outbox) -> int:
    """Erase everything of a shop (48 hours after uninstall Shopify asks for it). Returns rows removed.

    The shop row goes and every table cascades from it; the delivery ledger (keyed by domain) is emptied
    too, except the shop/redact delivery itself, whose body is replaced so it records only that it ran.
    """
    removed = 0
    if shop is not None:
        _delete_outbox_files(outbox, None, shop.id)
        session.delete(shop)
        removed += 1
    removed += session.execute(
        delete(Delivery).where(Delivery.shop_domain == shop_domain, Delivery.id != keep_delivery)
    ).rowcount
    session.execute(update(Delivery).where(Delivery.id == keep_delivery).values(body=REDACTED_BODY))
    return removed


# --- helpers ---------------------------------------------------------------------------------------------
def _profile(shopper: Shopper | None) -> dict | None:
    if shopper is None:
        return None
    return {
        "email": shopper.email,
        "first_name": shopper.first_name,
        "last_name": shopper.last_name,
        "locale": shopper.locale,
        "timezone": shopper.timezone,
        "email_marketing_consent": shopper.consent_state,
        "consent_updated_at": iso(shopper.consent_updated_at),
        "tags": shopper.tags,
        "orders_count": shopper.orders_count,
        "total_spent": str(shopper.total_spent),
        "currency": shopper.currency,
        "first_order_at": iso(shopper.first_order_at),
        "last_order_at": iso(shopper.last_order_at),
        "stage": shopper.stage,
        "stage_reason": shopper.stage_reason,
    }


def _subscription_filter(shop: Shop, customer_id: int, email: str | None):
    match = StockSubscription.customer_id == customer_id
    if email:
        match = or_(match, StockSubscription.email == email.strip().lower())
    return (StockSubscription.shop_id == shop.id, match)


def _anonymise_runs(session: Session, run_ids: list[int]) -> int:
    if not run_ids:
        return 0
    session.execute(
        update(ActionRun)
        .where(ActionRun.id.in_(run_ids))
        .values(shopper_id=None, recipient_email=None, context={})
    )
    session.execute(update(ActionAttempt).where(ActionAttempt.run_id.in_(run_ids)).values(error=None))
    return len(run_ids)


def _delete_outbox_files(outbox: str | None, run_ids: list[int] | None, shop_id: int) -> None:
    """Remove rendered emails (named after their Message-ID, `run-N.SHOP@lifecycle`): those of the given
    runs, or every one of the shop (run_ids None)."""
    if not outbox or not os.path.isdir(outbox):
        return
    suffix = f".{shop_id}_lifecycle.eml"
    wanted = None if run_ids is None else {f"run-{run_id}{suffix}" for run_id in run_ids}
    for name in os.listdir(outbox):
        if name.endswith(suffix) and (wanted is None or name in wanted):
            os.remove(os.path.join(outbox, name))


def _identifying_patterns(customer_id: int, values: list[str | None]) -> list[re.Pattern]:
    patterns = [
        re.compile(rb'"(?:id|customer_id)"\s*:\s*"?' + str(customer_id).encode() + rb"(?![0-9])"),
        re.compile(rb"gid://shopify/Customer/" + str(customer_id).encode() + rb"(?![0-9])"),
    ]
    for value in values:
        if value and value.strip():
            patterns.append(re.compile(re.escape(value.strip().encode()), re.IGNORECASE))
    return patterns


def _redact_deliveries(session: Session, shop_domain: str, patterns: list[re.Pattern]) -> int:
    """Replace the body of every delivery of the shop that names the shopper (scanned in chunks)."""
    matched = [
        delivery_id
        for delivery_id, body in _bodies(session, shop_domain)
        if any(p.search(body) for p in patterns)
    ]
    for start in range(0, len(matched), SCAN_CHUNK):
        chunk = matched[start : start + SCAN_CHUNK]
        session.execute(update(Delivery).where(Delivery.id.in_(chunk)).values(body=REDACTED_BODY))
    return len(matched)


def _bodies(session: Session, shop_domain: str) -> Iterator[tuple[int, bytes]]:
    after = 0
    while True:
        rows = session.execute(
            select(Delivery.id, Delivery.body)
            .where(Delivery.shop_domain == shop_domain, Delivery.id > after)
            .order_by(Delivery.id)
            .limit(SCAN_CHUNK)
        ).all()
        if not rows:
            return
        for delivery_id, body in rows:
            yield delivery_id, bytes(body or b"")
        after = rows[-1][0]


def _prediction(session: Session, shopper: Shopper | None) -> dict | None:
    """The shopper's latest forecast of the purchase model, as the data request shows it."""
    row = session.get(ShopperPrediction, shopper.id) if shopper is not None else None
    if row is None:
        return None
    return {
        "p_alive": row.p_alive,
        "expected_orders_90d": row.expected_orders_90d,
        "predicted_next_order_at": iso(row.predicted_next_order_at),
        "predicted_clv_365d": row.predicted_clv_365d,
    }
