"""The Overview page: shoppers per stage, weekly moves, messages and revenue per play, data freshness; and,
in a second call, the purchase model's fit with its holdout check, lift per rule and the at-risk value."""

from __future__ import annotations

from flask import current_app, g, jsonify

from admin import forecasts, insights
from admin.api.base import bp, db
from plugin import clock
from plugin.store import status
from plugin.store.models import Shop


@bp.get("/overview")
def overview():
    with db().session() as session:
        body = insights.overview(session, g.shop_id, clock.now())
    body["freshness"] = status.shop_status(db(), g.shop_domain, with_stages=False)
    return jsonify(body)


@bp.get("/overview/predictions")
def overview_predictions():
    """The model's fit (holdout check cached per fit), lift per rule, the predicted value at risk."""
    model = forecasts.model_panel(db(), current_app.extensions["lifecycle.redis"], g.shop_id)
    with db().session() as session:
        shop = session.get(Shop, g.shop_id)
        lift = forecasts.lift_panel(session, shop, clock.now())
        at_risk = forecasts.at_risk_value(session, shop)
    return jsonify({"model": model, "lift": lift, "at_risk": at_risk})
