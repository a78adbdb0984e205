"""SQLAlchemy 2 models: shops, the delivery ledger, shopper profiles, their orders and stage transitions.

Times are stored as naive UTC in both SQLite and PostgreSQL (`UTCDateTime` converts at the edge), so the
same SQL comparisons hold on both. Shopify ids are 64-bit integers.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from plugin.core.stages import Stage

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """Aware datetimes in Python, naive UTC in the database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


Money = Numeric(14, 2)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class DeliveryStatus(StrEnum):
    RECEIVED = "received"
    PROCESSED = "processed"
    IGNORED = "ignored"
    QUARANTINED = "quarantined"
    FAILED = "failed"


class Shop(Base):
    """An installed (or formerly installed) store, with its stage thresholds."""

    __tablename__ = "shops"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str] = mapped_column(String(255), unique=True)
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    currency: Mapped[str | None] = mapped_column(String(3))
    installed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    uninstalled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A signed app/uninstalled pauses all sending at once; the uninstall is recorded (uninstalled_at, tokens
    # forgotten) only once Shopify refuses the token, since the webhook's signature covers its body alone.
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pause_reason: Mapped[str | None] = mapped_column(Text)
    last_bulk_operation: Mapped[dict | None] = mapped_column(JSON)
    # Stage thresholds (the defaults); per shop so merchants can tune them.
    engaged_days: Mapped[int] = mapped_column(Integer, default=30)
    at_risk_days: Mapped[int] = mapped_column(Integer, default=90)
    lapsed_days: Mapped[int] = mapped_column(Integer, default=180)
    loyal_orders: Mapped[int] = mapped_column(Integer, default=4)
    loyal_min_orders: Mapped[int] = mapped_column(Integer, default=2)
    loyal_spend: Mapped[Decimal] = mapped_column(Money, default=Decimal("500"))
    # Sending policy: the shop's timezone for quiet hours, the frequency cap, the sender.
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    quiet_start_hour: Mapped[int] = mapped_column(Integer, default=21)
    quiet_end_hour: Mapped[int] = mapped_column(Integer, default=8)
    cap_per_day: Mapped[int] = mapped_column(Integer, default=1)
    cap_per_week: Mapped[int] = mapped_column(Integer, default=3)
    sender_name: Mapped[str | None] = mapped_column(String(255))
    sender_email: Mapped[str | None] = mapped_column(String(320))
    # The shop's postal address, printed in the footer of every marketing email (CAN-SPAM and the like).
    postal_address: Mapped[str | None] = mapped_column(String(500))
    # The languages emails go out in, in order: a shopper whose locale is not among them gets the first.
    # Empty means every shipped language, English first (emails.pick_locale).
    languages: Mapped[list | None] = mapped_column(JSON)
    # The offline token is the expiring kind: it lasts an hour and is refreshed with a rotating refresh
    # token (both encrypted at rest); `scopes` is what the merchant granted.
    access_token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refresh_token_encrypted: Mapped[str | None] = mapped_column(Text)
    refresh_token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scopes: Mapped[str | None] = mapped_column(Text)
    # History backfill: {status, operation_id, started_at, finished_at, lines, customers, orders, error}
    backfill: Mapped[dict | None] = mapped_column(JSON)
    # Reconciliation: customers and orders updated since this time were pulled through GraphQL.
    last_reconciled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Personal at-risk: stage time rules from each shopper's own purchase rhythm (the purchase model's
    # predictions) instead of the fixed days; off until the merchant turns it on.
    personal_stages: Mapped[bool] = mapped_column(Boolean, default=False)


# The condition of ix_deliveries_waiting, one definition for the index and the queries that must use it.
# Those queries state it as this constant, not as `status = :param`: a generic plan of a prepared statement
# cannot prove a partial index from a parameter, and would read every row version ever updated from
# `received` (on a queue table, the whole backlog since the last VACUUM). The app's own connections plan
# every execution for its parameters (`db._plan_every_execution`); the constant holds on any connection.
WAITING = text("status = 'received'")


class Delivery(Base):
    """One webhook delivery as Shopify sent it: the durable record behind every acknowledgement."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_status_received_at", "status", "received_at"),
        # A drain's claim walks the waiting deliveries in id order: O(batch), however long the backlog.
        Index("ix_deliveries_waiting", "id", postgresql_where=WAITING, sqlite_where=WAITING),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[str] = mapped_column(String(255), unique=True)
    shop_domain: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(128))
    api_version: Mapped[str | None] = mapped_column(String(32))
    event_id: Mapped[str | None] = mapped_column(String(255))
    triggered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.RECEIVED)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # After a failed attempt: not before this time (the ledger, not Redis, holds the retry schedule).
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Shopper(Base):
    """What we know of one Shopify customer of one shop, and the stage it puts them in."""

    __tablename__ = "shoppers"
    __table_args__ = (
        UniqueConstraint("shop_id", "customer_id", name="uq_shoppers_shop_customer"),
        Index("ix_shoppers_shop_stage", "shop_id", "stage"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(BigInteger)
    email: Mapped[str | None] = mapped_column(String(320))
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    locale: Mapped[str | None] = mapped_column(String(16))
    customer_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consent_state: Mapped[str | None] = mapped_column(String(32))
    consent_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # tag -> {"on": bool, "at": iso}: the latest add/remove event per tag, so reordered events settle right.
    tag_events: Mapped[dict] = mapped_column(JSON, default=dict)
    orders_count: Mapped[int] = mapped_column(Integer, default=0)
    total_spent: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    currency: Mapped[str | None] = mapped_column(String(3))
    first_order_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_order_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_checkout_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_cart_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    checkout_open: Mapped[bool] = mapped_column(Boolean, default=False)
    # Shopify's own figures from customers/purchasing_summary, kept beside ours for reconciliation.
    shopify_orders_count: Mapped[int | None] = mapped_column(Integer)
    shopify_amount_spent: Mapped[Decimal | None] = mapped_column(Money)
    shopify_summary_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stage: Mapped[str] = mapped_column(String(16), default=Stage.PROSPECT)
    stage_reason: Mapped[str | None] = mapped_column(Text)
    stage_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timezone: Mapped[str | None] = mapped_column(String(64))  # IANA name, when known
    synced_stage: Mapped[str | None] = mapped_column(String(16))  # last stage written back to Shopify

    @property
    def tags(self) -> list[str]:
        return sorted(tag for tag, event in (self.tag_events or {}).items() if event.get("on"))


class Order(Base):
    """One order, stored once however many topics carry it; counting reads these rows."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("shop_id", "order_id", name="uq_orders_shop_order"),
        Index("ix_orders_shop_customer", "shop_id", "customer_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    order_id: Mapped[int] = mapped_column(BigInteger)
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    name: Mapped[str | None] = mapped_column(String(64))
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    currency: Mapped[str | None] = mapped_column(String(3))
    total_price: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    refunded: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    financial_status: Mapped[str | None] = mapped_column(String(32))
    fulfillment_status: Mapped[str | None] = mapped_column(String(32))
    checkout_token: Mapped[str | None] = mapped_column(String(255))
    line_items: Mapped[list] = mapped_column(
        JSON, default=list
    )  # [{product_id, variant_id, quantity, price}]
    discount_codes: Mapped[list] = mapped_column(JSON, default=list)  # [code, ...]


class Refund(Base):
    """A refund, keyed by Shopify's id so it is subtracted once whichever topic brought it."""

    __tablename__ = "refunds"
    __table_args__ = (
        UniqueConstraint("shop_id", "refund_id", name="uq_refunds_shop_refund"),
        Index("ix_refunds_shop_order", "shop_id", "order_id"),  # an order's refunds (its refunded sum)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    refund_id: Mapped[int] = mapped_column(BigInteger)
    order_id: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[Decimal] = mapped_column(Money)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Checkout(Base):
    """A checkout; open until an order completes it or Shopify closes it."""

    __tablename__ = "checkouts"
    __table_args__ = (
        UniqueConstraint("shop_id", "token", name="uq_checkouts_shop_token"),
        Index("ix_checkouts_shop_customer", "shop_id", "customer_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    token: Mapped[str] = mapped_column(String(255))
    checkout_id: Mapped[int | None] = mapped_column(BigInteger)
    cart_token: Mapped[str | None] = mapped_column(String(255))
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    abandoned_checkout_url: Mapped[str | None] = mapped_column(Text)
    total_price: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str | None] = mapped_column(String(3))
    line_items: Mapped[list] = mapped_column(JSON, default=list)


class Cart(Base):
    """An online-store cart; carts carry no customer, so one is linked when a checkout names its token."""

    __tablename__ = "carts"
    __table_args__ = (UniqueConstraint("shop_id", "token", name="uq_carts_shop_token"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    token: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    line_items: Mapped[list] = mapped_column(JSON, default=list)


class StageTransition(Base):
    """A shopper's move between stages: the input of the rules engine."""

    __tablename__ = "stage_transitions"
    __table_args__ = (Index("ix_stage_transitions_shop_at", "shop_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    shopper_id: Mapped[int] = mapped_column(ForeignKey("shoppers.id", ondelete="CASCADE"), index=True)
    from_stage: Mapped[str | None] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text)
    cause: Mapped[str] = mapped_column(String(128))  # the topic, or "tick"


class Product(Base):
    """Variants of a product as products/* last described them (back-in-stock reads these later)."""

    __tablename__ = "products"
    __table_args__ = (UniqueConstraint("shop_id", "product_id", name="uq_products_shop_product"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    product_id: Mapped[int] = mapped_column(BigInteger)
    title: Mapped[str | None] = mapped_column(Text)
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    variants: Mapped[list] = mapped_column(JSON, default=list)  # [{variant_id, inventory_item_id, title}]


class InventoryLevel(Base):
    """Available quantity of one inventory item at one location, with the previous value."""

    __tablename__ = "inventory_levels"
    __table_args__ = (
        UniqueConstraint("shop_id", "inventory_item_id", "location_id", name="uq_inventory_levels_item"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    inventory_item_id: Mapped[int] = mapped_column(BigInteger)
    location_id: Mapped[int] = mapped_column(BigInteger)
    available: Mapped[int | None] = mapped_column(Integer)
    previous_available: Mapped[int | None] = mapped_column(Integer)
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RunStatus(StrEnum):
    WAITING = "waiting"  # a marketing run waiting for consent until wait_until; deferred_reason says so
    SCHEDULED = "scheduled"  # waiting for due_at (delays, deferrals by cap or quiet hours)
    QUEUED = "queued"
    RUNNING = "running"  # an attempt started, with a lease (lease_until); a crash leaves it here, the tick
    # takes it back after the lease, and the next attempt decides
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"  # no longer applies at run time; skip_reason says why
    HELD_OUT = "held_out"  # in the rule's control group: nothing sent, kept to measure lift
    FAILED = "failed"
    CANCELLED = "cancelled"


class Rule(Base):
    """A play a shop runs: trigger, conditions, delay, action with parameters (validated by RuleSchema)."""

    __tablename__ = "rules"
    __table_args__ = (UniqueConstraint("shop_id", "key", name="uq_rules_shop_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    definition: Mapped[dict] = mapped_column(JSON)  # RuleSchema's dump: the one source of the rule
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ActionRun(Base):
    """One intended effect; unique per (shop, rule, shopper, cycle), so a retry or a replay plans it once."""

    __tablename__ = "action_runs"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_action_runs_idempotency_key"),
        Index("ix_action_runs_status_due", "status", "due_at"),
        Index("ix_action_runs_shopper", "shopper_id", "sent_at"),
        Index("ix_action_runs_shop_created", "shop_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("rules.id", ondelete="SET NULL"))
    play: Mapped[str] = mapped_column(
        String(64)
    )  # the rule's key, or a system play (stage_sync, consent_sync)
    action: Mapped[str] = mapped_column(String(64))
    shopper_id: Mapped[int | None] = mapped_column(ForeignKey("shoppers.id", ondelete="CASCADE"))
    recipient_email: Mapped[str | None] = mapped_column(String(320))  # for subscribers with no customer
    cycle: Mapped[str] = mapped_column(String(128))
    idempotency_key: Mapped[str] = mapped_column(String(400))
    trigger: Mapped[str] = mapped_column(String(128))  # what caused it: topic, stage move, tick
    context: Mapped[dict] = mapped_column(JSON, default=dict)  # checkout token, order id, variant...
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=50)
    marketing: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.SCHEDULED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    skip_reason: Mapped[str | None] = mapped_column(Text)
    deferred_reason: Mapped[str | None] = mapped_column(Text)
    discount_code: Mapped[str | None] = mapped_column(String(64))
    discount_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when the triggering event happened
    wait_until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # marketing: consent by then, or skipped
    # while running: the end of the attempt's lease; one still running after it was interrupted, and the
    # tick takes it back (`run_action.take_back_interrupted`)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def play_stage(self) -> str | None:
        """The stage a stage play was planned for (`at_risk` of cycle `at_risk:3`), else None."""
        stage = self.cycle.split(":", 1)[0]
        return stage if stage in {s.value for s in Stage} and ":" in self.cycle else None


class ActionAttempt(Base):
    """One try of a run: when, how long, and how it ended."""

    __tablename__ = "action_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("action_runs.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(32))  # succeeded, skipped, deferred, retry, failed
    error: Mapped[str | None] = mapped_column(Text)


class Suppression(Base):
    """An address that asked for no more marketing from a shop; kept as a hash only."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("shop_id", "email_hash", name="uq_suppressions_shop_email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    email_hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EmailTemplate(Base):
    """A merchant's override of one play's email in one locale (rendered in the sandbox)."""

    __tablename__ = "email_templates"
    __table_args__ = (UniqueConstraint("shop_id", "template", "locale", name="uq_email_templates_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    template: Mapped[str] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)


class StockSubscription(Base):
    """A shopper's request to be told when a sold-out variant is back (the storefront form's row)."""

    __tablename__ = "stock_subscriptions"
    __table_args__ = (UniqueConstraint("shop_id", "variant_id", "email", name="uq_stock_subscriptions_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    variant_id: Mapped[int] = mapped_column(BigInteger)
    email: Mapped[str] = mapped_column(String(320))
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    locale: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DataExport(Base):
    """A shopper's stored data, gathered for a customers/data_request, for the merchant to hand over."""

    __tablename__ = "data_exports"
    __table_args__ = (Index("ix_data_exports_shop", "shop_id", "requested_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(BigInteger)
    data_request_id: Mapped[int | None] = mapped_column(BigInteger)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    content: Mapped[dict] = mapped_column(JSON)


class PurchaseFit(Base):
    """One fit of a shop's purchase (BG/NBD) and spend (Gamma-Gamma) models on its orders up to a cutoff day.

    `cutoff_day` is the last day (in the shop's time zone) whose orders the fit saw; `cutoff_at` the instant
    that day ends. Without enough data the parameters are NULL and `reason` says why.
    """

    __tablename__ = "purchase_fits"
    __table_args__ = (Index("ix_purchase_fits_shop_cutoff", "shop_id", "cutoff_day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    cutoff_day: Mapped[date] = mapped_column(Date)
    cutoff_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(Text)  # why not fitted; NULL when fitted
    unit: Mapped[str] = mapped_column(String(8), default="days")  # alpha's time unit
    r: Mapped[float | None] = mapped_column(Float)
    alpha: Mapped[float | None] = mapped_column(Float)
    a: Mapped[float | None] = mapped_column(Float)
    b: Mapped[float | None] = mapped_column(Float)
    p: Mapped[float | None] = mapped_column(Float)
    q: Mapped[float | None] = mapped_column(Float)
    gamma: Mapped[float | None] = mapped_column(Float)
    log_likelihood: Mapped[float | None] = mapped_column(Float)  # the BG/NBD's
    spend_log_likelihood: Mapped[float | None] = mapped_column(Float)
    shoppers: Mapped[int] = mapped_column(Integer, default=0)  # with a kept order by the cutoff
    repeat_buyers: Mapped[int] = mapped_column(Integer, default=0)
    # Days from first to second purchase day among repeat buyers: one-time buyers are at risk past the
    # 80th percentile, lapsed past the 95th (personal stages).
    second_order_p80_days: Mapped[float | None] = mapped_column(Float)
    second_order_p95_days: Mapped[float | None] = mapped_column(Float)


class ShopperPrediction(Base):
    """A shopper's forecast from their shop's current fit (rows of older fits are replaced)."""

    __tablename__ = "shopper_predictions"

    shopper_id: Mapped[int] = mapped_column(ForeignKey("shoppers.id", ondelete="CASCADE"), primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    fit_id: Mapped[int] = mapped_column(ForeignKey("purchase_fits.id", ondelete="CASCADE"), index=True)
    repeat_occasions: Mapped[int] = mapped_column(Integer)  # x: purchase days after the first
    p_alive: Mapped[float] = mapped_column(Float)
    expected_orders_90d: Mapped[float] = mapped_column(Float)
    predicted_clv_365d: Mapped[float | None] = mapped_column(Float)
    expected_gap_days: Mapped[float | None] = mapped_column(Float)  # NULL for one-time buyers
    predicted_next_order_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
