"""The Rules page: the shop's rules, saved through the server's own `RuleSchema`, switched on and off, and
how many shoppers one would reach now. (The page's email editor is `email_editor`.)"""

from __future__ import annotations

from flask import g, jsonify
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin import insights
from admin.api.base import bp, db, json_object, load_or_422
from plugin import clock
from plugin.core.rules import RuleSchema
from plugin.store.models import Rule


@bp.get("/rules")
def rules():
    with db().session() as session:
        rows = session.scalars(select(Rule).where(Rule.shop_id == g.shop_id).order_by(Rule.id))
        return jsonify([dict(r.definition, enabled=r.enabled) for r in rows])


@bp.put("/rules/<key>")
def save_rule(key: str):
    rule = load_or_422(RuleSchema(), key=key)
    with db().session() as session:
        row = _rule(session, key)
        if row is None:
            row = Rule(shop_id=g.shop_id, key=key)
            session.add(row)
        row.definition, row.enabled, row.updated_at = rule, rule["enabled"], clock.now()
    return jsonify(rule)


@bp.post("/rules/<key>/enabled")
def switch_rule(key: str):
    enabled = bool(json_object().get("enabled"))
    with db().session() as session:
        row = _rule(session, key)
        if row is None:
            return jsonify({"error": f"no rule {key}"}), 404
        row.enabled, row.updated_at = enabled, clock.now()
    return jsonify({"key": key, "enabled": enabled})


@bp.post("/audience")
def audience():
    """How many shoppers a rule (saved or being edited) would reach now, with a few examples."""
    rule = load_or_422(RuleSchema())
    with db().session() as session:
        return jsonify(insights.audience(session, g.shop_id, rule, clock.now()))


def _rule(session: Session, key: str) -> Rule | None:
    return session.scalar(select(Rule).where(Rule.shop_id == g.shop_id, Rule.key == key))
