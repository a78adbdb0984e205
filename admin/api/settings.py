"""The Settings page: stage thresholds (with how many shoppers a change would move, counted by the tick's
own SQL before anything is saved), frequency cap, quiet hours, sender, timezone and email languages."""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from dataclasses import replace

from flask import g, jsonify
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates
from sqlalchemy import func, select

from admin.api.base import bp, db, load_or_422, refuse
from plugin import clock, emails
from plugin.core.stages import Thresholds
from plugin.store.models import Shop, Shopper
from plugin.store.shoppers import current_shoppers
from plugin.store.stage_sql import stage_case


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
    """How many shoppers new stage thresholds would move now, per move (the tick's own SQL, not applied)."""
    draft = load_or_422(SettingsSchema())
    with db().session() as session:
        saved = Thresholds.of(session.get(Shop, g.shop_id))
        new_stage = stage_case(
            replace(saved, **{n: v for n, v in draft.items() if n in THRESHOLDS}), clock.now()
        )
        rows = session.execute(
            select(Shopper.stage, new_stage, func.count(Shopper.id))
            .where(current_shoppers(g.shop_id), new_stage != Shopper.stage)
            .group_by(Shopper.stage, new_stage)
        ).all()
    moves = [{"move": f"{old}→{new}", "count": n} for old, new, n in rows]
    return jsonify({"would_move": sum(m["count"] for m in moves), "moves": moves})


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
