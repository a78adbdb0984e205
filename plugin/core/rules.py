"""Rules: what a shop's plays are (data, validated by RuleSchema), the defaults every shop starts with, and
planning: which runs a trigger creates for a shopper (pure: profile, rules and now in, planned runs out).

A trigger is either a stage entered (`stage:at_risk`) or a store event (`checkout_started`, `order_paid`,
`order_fulfilled`, `customer_created`, `consent_granted`, `back_in_stock`). `consent_granted` fires once a
shopper is both known and subscribed, whichever of customers/create and the consent webhook came first.
Conditions are a fixed vocabulary over the profile, never code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from plugin.core.stages import Stage

EVENTS = (
    "customer_created",
    "consent_granted",
    "checkout_started",
    "order_paid",
    "order_fulfilled",
    "back_in_stock",
)
TRIGGERS = EVENTS + tuple(f"stage:{stage.value}" for stage in Stage)
CONDITION_FIELDS = (
    "orders_count",
    "total_spent",
    "stage",
    "accepts_marketing",
    "locale",
    "days_since_last_order",
    "tags",
)
OPERATORS = ("==", "!=", ">", ">=", "<", "<=", "in", "contains")
ACTIONS = ("send_email", "tag_customer")
TEMPLATES = (
    "welcome",
    "abandoned_checkout",
    "thank_you",
    "review_request",
    "back_in_stock",
    "vip_reward",
    "win_back",
)
# A trigger older than this when it is planned (history replayed, a webhook delivered days late) sends
# nothing: a three-month-old abandoned checkout is not worth an email.
MAX_TRIGGER_AGE = timedelta(days=2)


class ConditionSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    field = fields.String(required=True, validate=validate.OneOf(CONDITION_FIELDS))
    op = fields.String(required=True, validate=validate.OneOf(OPERATORS))
    value = fields.Raw(required=True, allow_none=True)


class DiscountSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    percent = fields.Integer(required=True, validate=validate.Range(min=1, max=90))
    valid_days = fields.Integer(required=True, validate=validate.Range(min=1, max=365))


class ParamsSchema(Schema):
    """Parameters of both actions: an email (optionally with a unique code), and/or tags to add."""

    class Meta:
        unknown = EXCLUDE

    template = fields.String(validate=validate.OneOf(TEMPLATES), load_default=None)
    discount = fields.Nested(DiscountSchema, allow_none=True, load_default=None)
    tags = fields.List(fields.String(validate=validate.Length(min=1, max=255)), load_default=list)


class RuleSchema(Schema):
    """A rule as merchants edit it and as it is stored (Rule.definition)."""

    class Meta:
        unknown = EXCLUDE

    key = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9_]{1,63}$"))
    name = fields.String(required=True, validate=validate.Length(min=1, max=120))
    trigger = fields.String(required=True, validate=validate.OneOf(TRIGGERS))
    conditions = fields.List(fields.Nested(ConditionSchema), load_default=list)
    delay_minutes = fields.Integer(load_default=0, validate=validate.Range(min=0, max=60 * 24 * 90))
    action = fields.String(required=True, validate=validate.OneOf(ACTIONS))
    params = fields.Nested(ParamsSchema, load_default=dict)
    priority = fields.Integer(load_default=50, validate=validate.Range(min=0, max=100))
    enabled = fields.Boolean(load_default=True)
    holdout_percent = fields.Integer(load_default=0, validate=validate.Range(min=0, max=90))
    marketing = fields.Boolean(load_default=True)  # False only for mails the shopper asked for

    @validates_schema
    def _email_needs_template(self, data, **_):
        if data["action"] == "send_email" and not (data.get("params") or {}).get("template"):
            raise ValidationError("an email rule needs a template", "params")
        if data["action"] == "tag_customer" and not (data.get("params") or {}).get("tags"):
            raise ValidationError("a tagging rule needs at least one tag", "params")


def _rule(key, name, trigger, template, *, delay=0, discount=None, tags=(), priority=50, **extra) -> dict:
    params = {"template": template, "discount": discount, "tags": list(tags)}
    return dict(
        key=key,
        name=name,
        trigger=trigger,
        action="send_email",
        params=params,
        delay_minutes=delay,
        priority=priority,
        **extra,
    )


NO_ORDERS = [{"field": "orders_count", "op": "==", "value": 0}]
DEFAULT_RULES = (
    _rule("welcome", "Welcome", "consent_granted", "welcome", conditions=NO_ORDERS, priority=60),
    _rule(
        "abandoned_checkout",
        "Abandoned checkout",
        "checkout_started",
        "abandoned_checkout",
        delay=4 * 60,
        priority=80,
    ),
    _rule("thank_you", "Thank you", "order_paid", "thank_you", delay=60, priority=70),
    _rule(
        "review_request",
        "Review request",
        "order_fulfilled",
        "review_request",
        delay=7 * 24 * 60,
        priority=30,
    ),
    _rule(
        "back_in_stock",
        "Back in stock (asked for)",
        "back_in_stock",
        "back_in_stock",
        priority=90,
        marketing=False,
    ),
    _rule(
        "back_in_stock_buyers",
        "Back in stock (past buyers)",
        "back_in_stock",
        "back_in_stock",
        priority=20,
        enabled=False,
    ),
    _rule(
        "vip_reward",
        "VIP reward",
        "stage:loyal",
        "vip_reward",
        discount={"percent": 15, "valid_days": 30},
        tags=["lifecycle:vip"],
        priority=65,
    ),
    _rule(
        "win_back",
        "Win-back",
        "stage:at_risk",
        "win_back",
        discount={"percent": 20, "valid_days": 14},
        priority=55,
    ),
    _rule(
        "win_back_lapsed",
        "Win-back (lapsed, stronger)",
        "stage:lapsed",
        "win_back",
        discount={"percent": 30, "valid_days": 14},
        priority=55,
        enabled=False,
    ),
)


def load_rule(data: dict) -> dict:
    """Validate a rule (raises marshmallow.ValidationError with per-field messages)."""
    return RuleSchema().load(data)


@dataclass(frozen=True)
class Profile:
    """What conditions and planning read of a shopper."""

    shopper_id: int | None
    orders_count: int = 0
    total_spent: Decimal = Decimal(0)
    stage: str = Stage.PROSPECT.value
    accepts_marketing: bool = False
    locale: str | None = None
    last_order_at: datetime | None = None
    tags: tuple[str, ...] = ()
    email: str | None = None


@dataclass(frozen=True)
class Trigger:
    """Something that happened: its name, when, the cycle it belongs to, and what a message needs of it."""

    name: str
    at: datetime
    cycle: str
    source: str  # the topic, or "tick"
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedRun:
    rule_id: int
    play: str
    action: str
    shopper_id: int | None
    cycle: str
    idempotency_key: str
    due_at: datetime
    priority: int
    marketing: bool
    params: dict
    context: dict
    trigger: str
    held_out: bool
    recipient_email: str | None = None


def plan_runs(
    shop_id: int, rules: list[tuple[int, dict]], profile: Profile, trigger: Trigger, now: datetime
) -> list[PlannedRun]:
    """The runs a trigger creates for one shopper: enabled rules on this trigger whose conditions hold."""
    if now - trigger.at > MAX_TRIGGER_AGE:
        return []
    if trigger.at > now:  # a store clock ahead of ours: the event happened "now" as far as delays go
        trigger = replace(trigger, at=now)
    planned = []
    for rule_id, rule in rules:
        if not rule["enabled"] or rule["trigger"] != trigger.name:
            continue
        if not all(condition_holds(c, profile, now) for c in rule["conditions"]):
            continue
        if rule["marketing"] and not profile.accepts_marketing:
            continue  # never plan marketing without consent (checked again at send time)
        planned.append(_planned(shop_id, rule_id, rule, profile, trigger))
    return planned


def _planned(shop_id: int, rule_id: int, rule: dict, profile: Profile, trigger: Trigger) -> PlannedRun:
    who = profile.shopper_id if profile.shopper_id is not None else f"email:{profile.email}"
    key = f"{shop_id}:{rule['key']}:{who}:{trigger.cycle}"
    return PlannedRun(
        rule_id=rule_id,
        play=rule["key"],
        action=rule["action"],
        shopper_id=profile.shopper_id,
        cycle=trigger.cycle,
        idempotency_key=key,
        due_at=trigger.at + timedelta(minutes=rule["delay_minutes"]),  # store_run clamps to now
        priority=rule["priority"],
        marketing=rule["marketing"],
        params=dict(rule["params"]),
        context=dict(trigger.context),
        trigger=trigger.source,
        held_out=is_held_out(key, rule["holdout_percent"]),
        recipient_email=profile.email if profile.shopper_id is None else None,
    )


def is_held_out(idempotency_key: str, percent: int) -> bool:
    """Deterministic control-group draw: the same run is always in or out, whatever retries happen."""
    if percent <= 0:
        return False
    bucket = int.from_bytes(hashlib.sha256(idempotency_key.encode()).digest()[:4], "big") % 100
    return bucket < percent


def condition_holds(condition: dict, profile: Profile, now: datetime) -> bool:
    """Evaluate one condition of the fixed vocabulary against a profile."""
    actual = _field_value(condition["field"], profile, now)
    op, wanted = condition["op"], condition["value"]
    if op == "contains":
        return wanted in (actual or ())
    if op == "in":
        return actual in (wanted or ())
    if actual is None:
        return op == "==" and wanted is None
    if isinstance(actual, (int, Decimal)) and not isinstance(actual, bool):
        wanted = Decimal(str(wanted))
    return {
        "==": actual == wanted,
        "!=": actual != wanted,
        ">": actual > wanted,
        ">=": actual >= wanted,
        "<": actual < wanted,
        "<=": actual <= wanted,
    }[op]


def _field_value(name: str, profile: Profile, now: datetime):
    if name == "days_since_last_order":
        return (now - profile.last_order_at).days if profile.last_order_at else None
    return getattr(profile, name)
