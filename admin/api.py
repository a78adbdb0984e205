"""The admin's JSON, every call behind the session token (`g.shop_id` is the token's shop). Input is
validated by the same marshmallow schemas the server uses; errors come back per field (422)."""

from __future__ import annotations

import secrets
from types import SimpleNamespace

from flask import Blueprint, current_app, g, jsonify, request
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates
from sqlalchemy import func, or_, select

from admin import insights
from admin.auth import session_token_required
from plugin import clock, emails
from plugin.core.rules import TEMPLATES, RuleSchema
from plugin.store import status, suppressions
from plugin.store.models import ActionRun, EmailTemplate, Rule, RunStatus, Shop, Shopper
from plugin.store.stage_sql import stage_case

bp = Blueprint("admin_api", __name__, url_prefix="/app/api")
SAMPLE = {
    "first_name": "Ann",
    "orders_count": 1,
    "total": "49.90",
    "currency": "EUR",
    "order_name": "#1001",
    "product_title": "Linen shirt",
    "code": "LC-SAMPLE-CODE",
    "url": "https://example.myshopify.com/",
}


def db():
    return current_app.extensions["lifecycle.db"]


def problems(error: ValidationError):
    return jsonify({"errors": error.messages}), 422


@bp.get("/overview")
@session_token_required
def overview():
    with db().session() as session:
        body = insights.overview(session, g.shop_id, clock.now())
    body["freshness"] = status.shop_status(db(), g.shop_domain, with_stages=False)
    return jsonify(body)


@bp.get("/rules")
@session_token_required
def rules():
    with db().session() as session:
        rows = session.scalars(select(Rule).where(Rule.shop_id == g.shop_id).order_by(Rule.id))
        return jsonify([dict(r.definition, enabled=r.enabled) for r in rows])


@bp.put("/rules/<key>")
@session_token_required
def save_rule(key: str):
    try:
        rule = RuleSchema().load(dict(request.get_json(force=True) or {}, key=key))
    except ValidationError as error:
        return problems(error)
    with db().session() as session:
        row = session.scalar(select(Rule).where(Rule.shop_id == g.shop_id, Rule.key == key))
        if row is None:
            row = Rule(shop_id=g.shop_id, key=key)
            session.add(row)
        row.definition, row.enabled, row.updated_at = rule, rule["enabled"], clock.now()
    return jsonify(rule)


@bp.post("/rules/<key>/enabled")
@session_token_required
def switch_rule(key: str):
    enabled = bool((request.get_json(force=True) or {}).get("enabled"))
    with db().session() as session:
        row = session.scalar(select(Rule).where(Rule.shop_id == g.shop_id, Rule.key == key))
        if row is None:
            return jsonify({"error": f"no rule {key}"}), 404
        row.enabled, row.updated_at = enabled, clock.now()
    return jsonify({"key": key, "enabled": enabled})


@bp.post("/audience")
@session_token_required
def audience():
    """How many shoppers a rule (saved or being edited) would reach now, with a few examples."""
    try:
        rule = RuleSchema().load(request.get_json(force=True) or {})
    except ValidationError as error:
        return problems(error)
    with db().session() as session:
        return jsonify(insights.audience(session, g.shop_id, rule, clock.now()))


class PreviewSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    template = fields.String(required=True, validate=validate.OneOf(TEMPLATES))
    locale = fields.String(load_default="en", validate=validate.OneOf(emails.LOCALES))
    subject = fields.String(load_default=None)
    html = fields.String(load_default=None)
    text = fields.String(load_default=None)
    to = fields.Email(load_default=None)
    percent = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=90))


def _render(form: dict, shop: Shop):
    override = None
    if form.get("subject") or form.get("html") or form.get("text"):
        override = SimpleNamespace(
            subject=form["subject"] or "", html=form["html"] or "", text=form["text"] or ""
        )
    else:
        with db().session() as session:
            override = session.scalar(
                select(EmailTemplate).where(
                    EmailTemplate.shop_id == shop.id,
                    EmailTemplate.template == form["template"],
                    EmailTemplate.locale == form["locale"],
                )
            )
    percent = form.get("percent")
    context = dict(
        SAMPLE,
        percent=percent,
        code=SAMPLE["code"] if percent else None,
        shop_name=shop.domain.split(".")[0].replace("-", " ").title(),
        marketing=True,
        expires_at=clock.now(),
        unsubscribe_url="https://example.invalid/unsubscribe",
    )
    return emails.render_email(form["template"], context, form["locale"], override)


class TemplateSchema(Schema):
    """A merchant's version of one play's email in one locale (Jinja2, rendered in the sandbox)."""

    class Meta:
        unknown = EXCLUDE

    subject = fields.String(required=True, validate=validate.Length(min=1, max=500))
    html = fields.String(required=True, validate=validate.Length(min=1, max=100_000))
    text = fields.String(required=True, validate=validate.Length(min=1, max=50_000))


def _template_key(template: str, locale: str):
    if template not in TEMPLATES or locale not in emails.LOCALES:
        return None
    return template, locale


@bp.get("/templates/<template>/<locale>")
@session_token_required
def get_template(template: str, locale: str):
    """The shop's version, or our default layout to start from (its variables: subject, body, cta, …)."""
    if _template_key(template, locale) is None:
        return jsonify({"error": "unknown template or locale"}), 404
    with db().session() as session:
        row = session.scalar(
            select(EmailTemplate).where(
                EmailTemplate.shop_id == g.shop_id,
                EmailTemplate.template == template,
                EmailTemplate.locale == locale,
            )
        )
        if row is not None:
            return jsonify({"subject": row.subject, "html": row.html, "text": row.text, "custom": True})
    return jsonify(
        {
            "subject": "{{ subject }}",
            "html": emails._default("message.html"),
            "text": emails._default("message.txt"),
            "custom": False,
        }
    )


@bp.put("/templates/<template>/<locale>")
@session_token_required
def save_template(template: str, locale: str):
    if _template_key(template, locale) is None:
        return jsonify({"error": "unknown template or locale"}), 404
    try:
        form = TemplateSchema().load(request.get_json(force=True) or {})
    except ValidationError as error:
        return problems(error)
    errors = {}
    for name in ("subject", "html", "text"):
        try:
            emails.check_template(form[name])
        except emails.TemplateError as error:
            errors[name] = [str(error)]
    if errors:
        return jsonify({"errors": errors}), 422
    with db().session() as session:
        row = session.scalar(
            select(EmailTemplate).where(
                EmailTemplate.shop_id == g.shop_id,
                EmailTemplate.template == template,
                EmailTemplate.locale == locale,
            )
        )
        if row is None:
            row = EmailTemplate(shop_id=g.shop_id, template=template, locale=locale)
            session.add(row)
        row.subject, row.html, row.text = form["subject"], form["html"], form["text"]
    return jsonify(dict(form, custom=True))


@bp.delete("/templates/<template>/<locale>")
@session_token_required
def reset_template(template: str, locale: str):
    with db().session() as session:
        row = session.scalar(
            select(EmailTemplate).where(
                EmailTemplate.shop_id == g.shop_id,
                EmailTemplate.template == template,
                EmailTemplate.locale == locale,
            )
        )
        if row is not None:
            session.delete(row)
    return jsonify({"custom": False})


@bp.post("/preview")
@session_token_required
def preview():
    """The email as the real renderer (sandboxed) makes it, for the locale and the edited template."""
    try:
        form = PreviewSchema().load(request.get_json(force=True) or {})
    except ValidationError as error:
        return problems(error)
    with db().session() as session:
        shop = session.get(Shop, g.shop_id)
    try:
        rendered = _render(form, shop)
    except emails.TemplateError as error:
        return jsonify({"errors": {"html": [str(error)]}}), 422
    return jsonify({"subject": rendered.subject, "html": rendered.html, "text": rendered.text})


@bp.post("/test-send")
@session_token_required
def test_send():
    """Send the preview to the merchant's address (the shop's sender address unless `to` is given)."""
    try:
        form = PreviewSchema().load(request.get_json(force=True) or {})
    except ValidationError as error:
        return problems(error)
    with db().session() as session:
        shop = session.get(Shop, g.shop_id)
    to = form.get("to") or shop.sender_email
    if not to:
        return jsonify({"errors": {"to": ["Set a sender address in Settings, or give one here."]}}), 422
    try:
        rendered = _render(form, shop)
    except emails.TemplateError as error:
        return jsonify({"errors": {"html": [str(error)]}}), 422
    sender = (shop.sender_name or "Lifecycle test", shop.sender_email or f"no-reply@{shop.domain}")
    message_id = f"<test-{secrets.token_hex(6)}.{shop.id}@lifecycle>"
    message = emails.build_message(rendered, sender, to, message_id, None, clock.now())
    message.replace_header("Subject", "[Test] " + rendered.subject)
    config = current_app.config
    try:
        emails.send_email(message, config.get("SMTP_URL"), config["OUTBOX"])
    except emails.EmailDeliveryError as error:
        return jsonify({"error": f"the mail server refused: {error}"}), 502
    return jsonify({"sent_to": to})


@bp.get("/shoppers")
@session_token_required
def shoppers():
    query = (request.args.get("q") or "").strip()
    with db().session() as session:
        statement = select(Shopper).where(Shopper.shop_id == g.shop_id, Shopper.deleted_at.is_(None))
        if query:
            like = f"%{query.lower()}%"
            statement = statement.where(
                or_(Shopper.email.ilike(like), Shopper.first_name.ilike(like), Shopper.last_name.ilike(like))
            )
        rows = session.scalars(statement.order_by(Shopper.last_order_at.desc().nulls_last()).limit(50))
        return jsonify([_shopper_row(s) for s in rows])


@bp.get("/shoppers/<int:shopper_id>")
@session_token_required
def shopper(shopper_id: int):
    with db().session() as session:
        found = session.get(Shopper, shopper_id)
        if found is None or found.shop_id != g.shop_id:
            return jsonify({"error": "no such shopper"}), 404
        return jsonify(dict(_shopper_row(found), timeline=insights.timeline(session, found)))


@bp.post("/shoppers/<int:shopper_id>/suppress")
@session_token_required
def suppress(shopper_id: int):
    """Stop all marketing to this shopper's address (kept as a hash, as unsubscribes are)."""
    with db().session() as session:
        found = session.get(Shopper, shopper_id)
        if found is None or found.shop_id != g.shop_id or not found.email:
            return jsonify({"error": "no such shopper with an address"}), 404
        suppressions.suppress(db(), session, g.shop_id, found.email, "merchant", clock.now())
    return jsonify({"suppressed": True})


@bp.post("/runs/<int:run_id>/resend")
@session_token_required
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


class SettingsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    engaged_days = fields.Integer(validate=validate.Range(min=1, max=365))
    at_risk_days = fields.Integer(validate=validate.Range(min=7, max=730))
    lapsed_days = fields.Integer(validate=validate.Range(min=14, max=1460))
    loyal_orders = fields.Integer(validate=validate.Range(min=2, max=100))
    cap_per_day = fields.Integer(validate=validate.Range(min=0, max=10))
    cap_per_week = fields.Integer(validate=validate.Range(min=0, max=30))
    quiet_start_hour = fields.Integer(validate=validate.Range(min=0, max=23))
    quiet_end_hour = fields.Integer(validate=validate.Range(min=0, max=23))
    sender_name = fields.String(allow_none=True, validate=validate.Length(max=255))
    sender_email = fields.Email(allow_none=True)
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


def settings_of(shop: Shop) -> dict:
    answer = {name: getattr(shop, name) for name in SETTINGS}
    answer["languages"] = emails.shop_languages(shop.languages)
    return answer


@bp.get("/settings")
@session_token_required
def settings():
    with db().session() as session:
        shop = session.get(Shop, g.shop_id)
        return jsonify(settings_of(shop))


@bp.post("/settings/impact")
@session_token_required
def settings_impact():
    """How many shoppers new stage thresholds would move now, per move (the tick's own SQL, not applied)."""

    try:
        draft = SettingsSchema().load(request.get_json(force=True) or {})
    except ValidationError as error:
        return problems(error)
    with db().session() as session:
        shop = session.get(Shop, g.shop_id)
        names = (
            "engaged_days",
            "at_risk_days",
            "lapsed_days",
            "loyal_orders",
            "loyal_min_orders",
            "loyal_spend",
        )
        thresholds = SimpleNamespace(**{n: draft.get(n, getattr(shop, n)) for n in names})
        new_stage = stage_case(thresholds, clock.now())
        rows = session.execute(
            select(Shopper.stage, new_stage, func.count(Shopper.id))
            .where(Shopper.shop_id == g.shop_id, Shopper.deleted_at.is_(None), new_stage != Shopper.stage)
            .group_by(Shopper.stage, new_stage)
        ).all()
    moves = [{"move": f"{old}→{new}", "count": n} for old, new, n in rows]
    return jsonify({"would_move": sum(m["count"] for m in moves), "moves": moves})


@bp.put("/settings")
@session_token_required
def save_settings():
    try:
        changes = SettingsSchema().load(request.get_json(force=True) or {})
    except ValidationError as error:
        return problems(error)
    if (
        changes.get("lapsed_days")
        and changes.get("at_risk_days")
        and changes["lapsed_days"] <= changes["at_risk_days"]
    ):
        return problems(ValidationError({"lapsed_days": ["Must be longer than the at-risk period."]}))
    with db().session() as session:
        shop = session.get(Shop, g.shop_id)
        for name, value in changes.items():
            setattr(shop, name, value)
        return jsonify(settings_of(shop))
