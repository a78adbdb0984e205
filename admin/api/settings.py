"""The Settings page: stage thresholds and personal stages (with how many shoppers a change would move,
counted by the tick's own SQL before anything is saved), frequency cap, quiet hours, sender, timezone and
email languages."""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from dataclasses import replace
from types import SimpleNamespace

from flask import g, jsonify
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates
from sqlalchemy import func, select

from admin.api.base import bp, db, load_or_422, refuse
from plugin import clock, emails
from plugin.core.stages import Thresholds
from plugin.store.models import Shop, Shopper
from plugin.store.predictions import current_fit
from plugin.store.shoppers import current_shoppers
from plugin.store.stage_sql import personal_fit, stage_case


class SettingsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    engaged_days = fields.Integer(validate=validate.Range(min=1, max=365))
    at_risk_days = fields.Integer(validate=validate.Range(min=7, max=730))
    lapsed_days = fields.Integer(validate=validate.Range(min=14, max=1460))
    loyal_orders = fields.Integer(validate=validate.Range(min=2, max=100))
    # 0 is the merchant's "no marketing email": core.policy.frequency_cap skips those runs
    cap_per_day = fields.Integer(validate=validate.Range(min=0, max=10))
    cap_per_week = fields.Integer(validate=validate.Range(min=0, max=30))
    quiet_start_hour = fields.Integer(validate=validate.Range(min=0, max=23))
    quiet_end_hour = fields.Integer(validate=validate.Range(min=0, max=23))
    sender_name = fields.String(allow_none=True, validate=validate.Length(max=255))
    sender_email = fields.Email(allow_none=True)  # Reply-To of the shop's emails (From is the app's sender)
    # Printed in every marketing email's footer, as anti-spam law asks.
    postal_address = fields.String(allow_none=True, validate=validate.Length(max=500))
    timezone = fields.String(validate=validate.Length(max=64))
    # Email languages in order; the first is for shoppers whose locale is not among them.
    # Personal at-risk: each shopper's own purchase rhythm (the fitted model) instead of the fixed days.
    personal_stages = fields.Boolean()
    languages = fields.List(
        fields.String(validate=validate.OneOf(emails.LOCALES)), validate=validate.Length(min=1)
    )

    @validates("languages")
    def _languages_once(self, value, **_):
        if len(set(value)) != len(value):
            raise ValidationError("Each language once.")


SETTINGS = tuple(SettingsSchema().fields)
THRESHOLDS = tuple(f.name for f in dataclass_fields(Thresholds))


def settings_of(shop: Shop) -> dict:
    answer = {name: getattr(shop, name) for name in SETTINGS}
    answer["languages"] = emails.shop_languages(shop.languages)
    return answer


@bp.get("/settings")
def settings():
    with db().session() as session:
        shop = session.get(Shop, g.shop_id)
        return jsonify(settings_of(shop))


@bp.post("/settings/impact")
def settings_impact():
    """How many shoppers new stage thresholds (or personal stages switched) would move now, per move: the
    tick's own SQL (`stage_sql.stage_case`, with the fit it would read), counted, not applied."""
    draft = load_or_422(SettingsSchema())
    with db().session() as session:
        shop = session.get(Shop, g.shop_id)
        thresholds = replace(Thresholds.of(shop), **{n: v for n, v in draft.items() if n in THRESHOLDS})
        personal = draft.get("personal_stages", shop.personal_stages)
        fit = personal_fit(session, SimpleNamespace(id=shop.id, personal_stages=personal))
        new_stage = stage_case(thresholds, clock.now(), fit, not db().is_sqlite)
        rows = session.execute(
            select(Shopper.stage, new_stage, func.count(Shopper.id))
            .where(current_shoppers(g.shop_id), new_stage != Shopper.stage)
            .group_by(Shopper.stage, new_stage)
        ).all()
        personal_model = _personal_model(session, shop.id, personal, fit is not None)
    moves = [{"move": f"{old}→{new}", "count": n} for old, new, n in rows]
    return jsonify({"would_move": sum(m["count"] for m in moves), "moves": moves, "personal": personal_model})


def _personal_model(session, shop_id: int, wanted: bool, fitted: bool) -> dict:
    """Whether personal stages would apply: on and fitted, or why the fixed thresholds stay."""
    if not wanted or fitted:
        return {"on": wanted, "applies": wanted, "reason": None}
    fit = current_fit(session, shop_id)
    why = fit.reason if fit is not None else "the model has not been fitted yet"
    return {"on": True, "applies": False, "reason": why}


@bp.put("/settings")
def save_settings():
    changes = load_or_422(SettingsSchema())
    if changes.get("lapsed_days") and changes.get("at_risk_days"):
        if changes["lapsed_days"] <= changes["at_risk_days"]:
            refuse({"lapsed_days": ["Must be longer than the at-risk period."]})
    with db().session() as session:
        shop = session.get(Shop, g.shop_id)
        for name, value in changes.items():
            setattr(shop, name, value)
        return jsonify(settings_of(shop))
