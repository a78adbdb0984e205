"""The Overview page: shoppers per stage, weekly moves, messages and revenue per play, data freshness."""

from __future__ import annotations

from flask import g, jsonify

from admin import insights
from admin.api.base import bp, db
from plugin import clock
from plugin.store import status


@bp.get("/overview")
def overview():
    with db().session() as session:
        body = insights.overview(session, g.shop_id, clock.now())
    body["freshness"] = status.shop_status(db(), g.shop_domain, with_stages=False)
    return jsonify(body)
