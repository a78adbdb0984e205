"""The Shoppers page: search by email or name, one shopper's forecast and timeline, stop marketing to a
shopper, and try a failed message again."""

from __future__ import annotations

from flask import g, jsonify, request
from sqlalchemy import or_, select

from admin import forecasts, insights
from admin.api.base import bp, db
from plugin import clock
from plugin.store import suppressions
from plugin.store.models import ActionRun, RunStatus, Shopper
from plugin.store.shoppers import current_shoppers


@bp.get("/shoppers")
def shoppers():
    query = (request.args.get("q") or "").strip()
    with db().session() as session:
        statement = select(Shopper).where(current_shoppers(g.shop_id))
        if query:
            like = f"%{query.lower()}%"
            statement = statement.where(
                or_(Shopper.email.ilike(like), Shopper.first_name.ilike(like), Shopper.last_name.ilike(like))
            )
        rows = session.scalars(statement.order_by(Shopper.last_order_at.desc().nulls_last()).limit(50))
        return jsonify([_shopper_row(s) for s in rows])


@bp.get("/shoppers/<int(max=9223372036854775807):shopper_id>")
def shopper(shopper_id: int):
    with db().session() as session:
        found = session.get(Shopper, shopper_id)
        if found is None or found.shop_id != g.shop_id:
            return jsonify({"error": "no such shopper"}), 404
        return jsonify(
            _shopper_row(found)
            | forecasts.shopper_forecast(session, found)
            | {"timeline": insights.timeline(session, found)}
        )


@bp.post("/shoppers/<int(max=9223372036854775807):shopper_id>/suppress")
def suppress(shopper_id: int):
    """Stop all marketing to this shopper's address (kept as a hash, as unsubscribes are)."""
    with db().session() as session:
        found = session.get(Shopper, shopper_id)
        if found is None or found.shop_id != g.shop_id or not found.email:
            return jsonify({"error": "no such shopper with an address"}), 404
        suppressions.suppress(db(), session, g.shop_id, found.email, "merchant", clock.now())
    return jsonify({"suppressed": True})


@bp.post("/runs/<int(max=9223372036854775807):run_id>/resend")
def resend(run_id: int):
    """Try a failed message again. Anything sent (or skipped for a reason that still holds) is refused:
    a shopper never gets the same message twice."""

    with db().session() as session:
        run = session.get(ActionRun, run_id, with_for_update=True)
        if run is None or run.shop_id != g.shop_id:
            return jsonify({"error": "no such message"}), 404
        if run.sent_at is not None or run.status == RunStatus.SUCCEEDED:
            return jsonify({"error": "already sent: Lifecycle never sends the same message twice"}), 409
        if run.status != RunStatus.FAILED or (run.context or {}).get("sending_at"):
            return jsonify(
                {"error": f"only failed messages can be tried again (this one is {run.status})"}
            ), 409
        run.status, run.due_at, run.skip_reason = RunStatus.SCHEDULED, clock.now(), None
    return jsonify({"status": "scheduled"})


def _shopper_row(shopper: Shopper) -> dict:
    return {
        "id": shopper.id,
        "email": shopper.email,
        "name": " ".join(x for x in (shopper.first_name, shopper.last_name) if x) or None,
        "stage": shopper.stage,
        "stage_reason": shopper.stage_reason,
        "orders_count": shopper.orders_count,
        "total_spent": str(shopper.total_spent),
        "consent": shopper.consent_state,
        "last_order_at": shopper.last_order_at.isoformat() if shopper.last_order_at else None,
    }
