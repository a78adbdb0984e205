"""The Rules page: the shop's rules, saved through the server's own `RuleSchema`, switched on and off, how
many shoppers one would reach now, and a backtest over the stored history. (The page's email editor is
`email_editor`.)"""

from __future__ import annotations

from flask import g, jsonify
from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin import insights
from admin.api.base import bp, db, json_object, load_or_422
from plugin import clock
from plugin.core.backtest import BacktestTooLarge
from plugin.core.backtest_period import PeriodError
from plugin.core.rules import RuleSchema
from plugin.store.backtest_history import UnknownRuleError, backtest_rule
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


@bp.post("/rules/<key>/backtest")
def backtest(key: str):
    """Replay the stored history through the rule (stored, or the editor's unsaved `rule`) over
    {"from", "to"} (YYYY-MM-DD, both optional: the last 90 days). Sends and writes nothing."""
    body, rule = json_object(), None
    if body.get("rule") is not None:
        if not isinstance(body["rule"], dict):
            return jsonify(
                {"error": "rule must be a JSON object", "errors": {"rule": ["Not an object."]}}
            ), 422
        try:
            rule = RuleSchema().load(dict(body["rule"], key=key))
        except ValidationError as error:
            return jsonify({"error": "the rule is not valid", "errors": error.messages}), 422
    try:
        result = backtest_rule(db(), g.shop_id, key, clock.now(), body.get("from"), body.get("to"), rule)
    except (PeriodError, BacktestTooLarge) as error:
        return jsonify({"error": str(error)}), 422
    except UnknownRuleError as error:
        return jsonify({"error": str(error)}), 404
    return jsonify(result.as_dict())


def _rule(session: Session, key: str) -> Rule | None:
    return session.scalar(select(Rule).where(Rule.shop_id == g.shop_id, Rule.key == key))
