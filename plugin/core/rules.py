"""Rules: what a shop's plays are (data, validated by RuleSchema), the defaults every shop starts with, and
planning: which runs a trigger creates for a shopper (pure: profile, rules and now in, planned runs out).

A trigger is either a stage entered (`stage:at_risk`) or a store event (`checkout_started`, `order_paid`,
`order_fulfilled`, `customer_created`, `consent_granted`, `back_in_stock`). `consent_granted` fires once a
shopper is both known and subscribed, whichever of customers/create and the consent webhook came first.
Conditions are a fixed vocabulary over the profile, never code: each field has its operators and the type
of its value, checked when a rule is saved, and a condition evaluates only its own operator.

Whether a play is marketing is fixed by the play, not by a field a merchant can edit (see is_marketing):
consent, suppression, the frequency cap and the unsubscribe headers cannot be switched off by a form.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate, validates_schema

from plugin.core.policy import CONSENT_WAIT, ConsentGate, consent_gate
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
RULE_ACTIONS = ("send_email", "tag_customer")  # what a merchant's rule may do
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


COMPARISONS = ("==", "!=", ">", ">=", "<", "<=")
# Each field: the operators it takes and the kind of value they compare with.
FIELD_OPERATORS = {
    "orders_count": COMPARISONS + ("in",),
    "total_spent": COMPARISONS,
    "days_since_last_order": COMPARISONS + ("in",),
    "stage": ("==", "!=", "in"),
    "accepts_marketing": ("==", "!="),
    "locale": ("==", "!=", "in"),
    "tags": ("contains",),
}
STAGES = tuple(stage.value for stage in Stage)


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise ValidationError("a whole number from 0 to 1000000")
    return value


def _money(value) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError("an amount, such as 150 or 99.90")
    try:
        amount = Decimal(str(value).strip())
    except ArithmeticError:
        raise ValidationError("an amount, such as 150 or 99.90") from None
    if not amount.is_finite() or not 0 <= amount <= 10**12:
        raise ValidationError("an amount from 0 to 1000000000000")
    return str(amount)


def _stage(value) -> str:
    if value not in STAGES:
        raise ValidationError(f"one of {', '.join(STAGES)}")
    return value


def _text(value) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= 255:
        raise ValidationError("a text of 1 to 255 characters")
    return value.strip()


def _flag(value) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("true or false")
    return value


VALUE_OF = {
    "orders_count": _count,
    "days_since_last_order": _count,
    "total_spent": _money,
    "stage": _stage,
    "accepts_marketing": _flag,
    "locale": _text,
    "tags": _text,
}


class ConditionSchema(Schema):
    """One condition; its value typed by its field (a count, an amount, a stage, a text, true/false)."""

    class Meta:
        unknown = EXCLUDE

    field = fields.String(required=True, validate=validate.OneOf(CONDITION_FIELDS))
    op = fields.String(required=True, validate=validate.OneOf(OPERATORS))
    value = fields.Raw(required=True, allow_none=True)

    @validates_schema
    def _typed(self, data, **_):
        allowed = FIELD_OPERATORS[data["field"]]
        if data["op"] not in allowed:
            raise ValidationError(f"{data['field']} takes {', '.join(allowed)}", "op")
        _typed_value(data)

    @post_load
    def _normalised(self, data, **_):
        return dict(data, value=_typed_value(data))


def _typed_value(data: dict):
    one = VALUE_OF[data["field"]]
    value = data["value"]
    try:
        if data["op"] != "in":
            return one(value)
        if not isinstance(value, list) or not 1 <= len(value) <= 100:
            raise ValidationError("a list of 1 to 100 values")
        return [one(item) for item in value]
    except ValidationError as error:
        raise ValidationError(f"{data['field']} {data['op']} needs {error.messages[0]}", "value") from None


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
    action = fields.String(required=True, validate=validate.OneOf(RULE_ACTIONS))
    params = fields.Nested(ParamsSchema, load_default=dict)
    priority = fields.Integer(load_default=50, validate=validate.Range(min=0, max=100))
    enabled = fields.Boolean(load_default=True)
    holdout_percent = fields.Integer(load_default=0, validate=validate.Range(min=0, max=90))
    # No `marketing` field: input saying so is ignored (unknown=EXCLUDE); the play decides (post_load).

    @validates_schema
    def _email_needs_template(self, data, **_):
        if data["action"] == "send_email" and not (data.get("params") or {}).get("template"):
            raise ValidationError("an email rule needs a template", "params")
        if data["action"] == "tag_customer" and not (data.get("params") or {}).get("tags"):
            raise ValidationError("a tagging rule needs at least one tag", "params")

    @post_load
    def _marketing_of_the_play(self, data, **_):
        return dict(data, marketing=is_marketing(data))


# The one play whose messages the shopper asked for: their own back-in-stock request (the theme block's
# form). It is transactional only as long as it stays that play: same key, same trigger. Every other
# rule a merchant has or writes is marketing. The app's own runs (stage and consent write-backs) are not
# rules and are never marketing (store.run_rows.system_run).
TRANSACTIONAL_PLAYS = frozenset({("back_in_stock", "back_in_stock")})


def is_marketing(rule: dict) -> bool:
    """Whether a rule's runs are marketing: fixed by the play, whatever a stored or posted rule says."""
    return (rule.get("key"), rule.get("trigger")) not in TRANSACTIONAL_PLAYS


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
    consent_at: datetime | None = None  # when the latest email-marketing consent state was recorded


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
    error: str | None = None  # the rule raised while planning: stored as a failed run with this reason
    event_at: datetime | None = None  # when the triggering event happened
    wait_until: datetime | None = None  # marketing: consent by then (see policy.consent_gate)
    gate: ConsentGate | None = None  # marketing: where it stands on consent when planned


def plan_runs(
    shop_id: int,
    rules: list[tuple[int, dict]],
    profile: Profile,
    trigger: Trigger,
    now: datetime,
    consent_wait: timedelta = CONSENT_WAIT,
) -> list[PlannedRun]:
    """The runs a trigger creates for one shopper: enabled rules on this trigger whose conditions hold.

    `profile` holds the facts as of the trigger's time (the store computes them so), whatever order the
    deliveries came in. Marketing runs are planned whatever the consent at this moment: a run without
    consent waits for it until the event's time + `consent_wait` (policy.consent_gate).
    """
    if now - trigger.at > MAX_TRIGGER_AGE:
        return []
    if trigger.at > now:  # a store clock ahead of ours: the event happened "now" as far as delays go
        trigger = replace(trigger, at=now)
    planned = []
    for rule_id, rule in rules:
        try:
            run = _plan_one(shop_id, rule_id, rule, profile, trigger, now)
            if run is not None and run.marketing:
                until = trigger.at + consent_wait
                gate = consent_gate(profile.accepts_marketing, profile.consent_at, trigger.at, until)
                run = replace(run, wait_until=until, gate=gate)
        except Exception as error:  # a stored rule the schema never saw must not fail the delivery
            run = _failed(shop_id, rule_id, rule, profile, trigger, error)
        if run is not None:
            planned.append(run)
    return planned


def _plan_one(
    shop_id: int, rule_id: int, rule: dict, profile: Profile, trigger: Trigger, now: datetime
) -> PlannedRun | None:
    if not rule["enabled"] or rule["trigger"] != trigger.name:
        return None
    if not all(condition_holds(c, profile, now) for c in rule["conditions"]):
        return None
    return _planned(shop_id, rule_id, rule, profile, trigger)


def _key(shop_id: int, rule: dict, profile: Profile, trigger: Trigger) -> str:
    who = profile.shopper_id if profile.shopper_id is not None else f"email:{profile.email}"
    return f"{shop_id}:{rule['key']}:{who}:{trigger.cycle}"


def _planned(shop_id: int, rule_id: int, rule: dict, profile: Profile, trigger: Trigger) -> PlannedRun:
    key = _key(shop_id, rule, profile, trigger)
    return PlannedRun(
        rule_id=rule_id,
        play=rule["key"],
        action=rule["action"],
        shopper_id=profile.shopper_id,
        cycle=trigger.cycle,
        idempotency_key=key,
        due_at=trigger.at + timedelta(minutes=rule["delay_minutes"]),  # store_run clamps to now
        priority=rule["priority"],
        marketing=is_marketing(rule),
        params=dict(rule["params"]),
        context=dict(trigger.context),
        trigger=trigger.source,
        held_out=is_held_out(key, rule["holdout_percent"]),
        recipient_email=profile.email if profile.shopper_id is None else None,
        event_at=trigger.at,
    )


def _failed(
    shop_id: int, rule_id: int, rule: Any, profile: Profile, trigger: Trigger, error: Exception
) -> PlannedRun:
    """The record of a rule that raised while planning: a run that is failed with the reason."""
    rule = rule if isinstance(rule, dict) else {}
    play = str(rule.get("key") or f"rule_{rule_id}")[:64]
    return PlannedRun(
        rule_id=rule_id,
        play=play,
        action=str(rule.get("action") or "none")[:64],
        shopper_id=profile.shopper_id,
        cycle=trigger.cycle,
        idempotency_key=_key(shop_id, {"key": play}, profile, trigger),
        due_at=trigger.at,
        priority=0,
        marketing=True,
        params={},
        context=dict(trigger.context),
        trigger=trigger.source,
        held_out=False,
        recipient_email=profile.email if profile.shopper_id is None else None,
        error=f"the rule could not be evaluated: {type(error).__name__}: {error}"[:1000],
    )


def is_held_out(idempotency_key: str, percent: int) -> bool:
    """Deterministic control-group draw: the same run is always in or out, whatever retries happen."""
    if percent <= 0:
        return False
    bucket = int.from_bytes(hashlib.sha256(idempotency_key.encode()).digest()[:4], "big") % 100
    return bucket < percent


COMPARE = {
    "==": lambda actual, wanted: actual == wanted,
    "!=": lambda actual, wanted: actual != wanted,
    ">": lambda actual, wanted: actual > wanted,
    ">=": lambda actual, wanted: actual >= wanted,
    "<": lambda actual, wanted: actual < wanted,
    "<=": lambda actual, wanted: actual <= wanted,
}


def condition_holds(condition: dict, profile: Profile, now: datetime) -> bool:
    """Evaluate one condition of the fixed vocabulary against a profile: only its own operator."""
    actual = _field_value(condition["field"], profile, now)
    op, wanted = condition["op"], condition["value"]
    if op == "contains":
        return wanted in (actual or ())
    if isinstance(actual, int | Decimal) and not isinstance(actual, bool):
        wanted = [Decimal(str(w)) for w in wanted] if op == "in" else Decimal(str(wanted))
    if op == "in":
        return actual in (wanted or ())
    if actual is None:
        return op == "==" and wanted is None
    return COMPARE[op](actual, wanted)


def _field_value(name: str, profile: Profile, now: datetime):
    if name == "days_since_last_order":
        return (now - profile.last_order_at).days if profile.last_order_at else None
    return getattr(profile, name)
