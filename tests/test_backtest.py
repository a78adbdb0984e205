"""Backtest a rule: a constructed history with known answers, replayed through the CLI and the admin API
(on SQLite and PostgreSQL), and nothing written while it runs."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from plugin.core.backtest import Replay, ShopPolicy, summarise
from plugin.core.backtest_period import period
from plugin.core.backtest_timeline import (
    TICK,
    CheckoutFact,
    OrderFact,
    ShopperHistory,
    ceil_tick,
)
from plugin.core.policy import CONSENT_WAIT
from plugin.core.rules import DEFAULT_RULES, load_rule
from plugin.store.models import Base, Checkout, Order, Rule, Shop, Shopper, Suppression
from plugin.store.suppressions import email_hash
from tests.conftest import SHOP
from tests.test_install import session_token


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


PERIOD = {"from": "2026-08-01", "to": "2026-10-31"}  # the clock is pinned at 2026-11-01 12:00 UTC
# The win-back (stage:at_risk, 90 days after the last order) with a 2-hour delay; the shop's other
# enabled rules (abandoned checkout, thank-you, ...) share the cap of 1 marketing email a day.
EXPECTED = {
    "rule": "win_back",
    "from": "2026-08-01T00:00:00+00:00",
    "to": "2026-11-01T00:00:00+00:00",
    "shoppers_reached": 2,  # ann and quinn
    "messages_triggered": 5,  # ann, quinn, bob, nina (no consent), sam (unsubscribed)
    "messages_allowed": 2,
    "messages_capped": 1,  # bob: the abandoned checkout took the day's email, then he ordered
    "messages_quiet_hours_delayed": 1,  # quinn: due at 00:10, sent at 08:00
    "ordered_within_window": 1,  # ann ordered 4 days after; quinn 13 days after
    "shoppers_measured": 2,  # both windows closed long before now
    "baseline_conversion": 0.5,
    "attribution_days": 7,
    "first_at": "2026-08-08T16:30:00+00:00",  # at risk at 14:30 (the first tick 90 days on), + 2 h
    "last_at": "2026-08-19T08:00:00+00:00",
    "by_week": [{"week_start": "2026-08-03", "messages": 1}, {"week_start": "2026-08-17", "messages": 1}],
}


def _shopper(session, shop_id, customer_id, email, consents=True) -> None:
    session.add(
        Shopper(
            shop_id=shop_id,
            customer_id=customer_id,
            email=email,
            consent_state="subscribed" if consents else "unsubscribed",
            consent_updated_at=at("2026-01-01T00:00:00"),
            tag_events={},
            orders_count=0,
            total_spent=Decimal(0),
            stage="prospect",
        )
    )


def _order(session, shop_id, customer_id, order_id, placed) -> None:
    session.add(
        Order(
            shop_id=shop_id,
            order_id=order_id,
            customer_id=customer_id,
            placed_at=at(placed),
            total_price=Decimal("40.00"),
            refunded=Decimal(0),
            financial_status="paid",
            line_items=[],
            discount_codes=[],
        )
    )


@pytest.fixture
def history(db, shop):
    """Six shoppers with known answers (times UTC; quiet hours 21:00-08:00 in the shop's UTC)."""
    with db.session() as session:
        shop_id = session.scalar(select(Shop.id).where(Shop.domain == SHOP))
        rule = session.scalar(select(Rule).where(Rule.shop_id == shop_id, Rule.key == "win_back"))
        rule.definition = load_rule(dict(rule.definition, delay_minutes=120))
        people = [
            (1, "ann@example.com", True),  # at risk 2026-08-08 14:30, sent 16:30, orders again 08-12
            (2, "quinn@example.com", True),  # at risk 08-18 22:10, due 08-19 00:10: quiet until 08:00
            (3, "bob@example.com", True),  # at risk 08-30 10:00; abandoned checkout sent 10:00 first
            (4, "nina@example.com", False),  # at risk 09-08, but no consent now
            (5, "sam@example.com", True),  # at risk 09-20, but unsubscribed
            (6, "olga@example.com", True),  # at risk in April, lapsed in July: before the period
        ]
        for customer_id, email, consents in people:
            _shopper(session, shop_id, customer_id, email, consents)
        for customer_id, order_id, placed in (
            (1, 101, "2026-05-10T14:30:00"),
            (1, 102, "2026-08-12T10:00:00"),  # within 7 days of the win-back
            (2, 201, "2026-05-20T22:10:00"),
            (2, 202, "2026-09-01T10:00:00"),  # 13 days after: outside the window
            (3, 301, "2026-06-01T10:00:00"),
            (3, 302, "2026-08-31T09:00:00"),  # before the capped win-back's next try
            (4, 401, "2026-06-10T10:00:00"),
            (5, 501, "2026-06-22T10:00:00"),
            (6, 601, "2026-01-05T10:00:00"),
        ):
            _order(session, shop_id, customer_id, order_id, placed)
        session.add(
            Checkout(
                shop_id=shop_id,
                token="bob-checkout",
                customer_id=3,
                source_updated_at=at("2026-08-30T06:00:00"),  # abandoned checkout due 10:00 (4 h)
                abandoned_checkout_url="https://example.com/recover",
                line_items=[],
            )
        )
        session.add(
            Suppression(
                shop_id=shop_id,
                email_hash=email_hash("sam@example.com"),
                reason="unsubscribed",
                created_at=at("2026-07-01T00:00:00"),
            )
        )


@pytest.fixture
def headers():
    return {"Authorization": f"Bearer {session_token()}"}


def _counts(db, redis_connection) -> dict:
    with db.session() as session:
        rows = {
            t.name: session.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables
        }
    return rows | {"redis keys": redis_connection.dbsize()}


def test_the_backtest_counts_what_the_rule_would_have_done(client, headers, history):
    answer = client.post("/app/api/rules/win_back/backtest", json=PERIOD, headers=headers)
    assert answer.status_code == 200
    body = answer.get_json()
    assert {k: v for k, v in body.items() if k != "notes"} == EXPECTED
    notes = " ".join(body["notes"])
    assert "Consent is taken as it is now" in notes
    assert "2 message(s) left out" in notes  # nina and sam
    # the review request (order_fulfilled) shares the cap but cannot be replayed: said; the back-in-stock
    # alert asked for is transactional (never capped): not said
    assert "except those of review_request (order_fulfilled)," in notes
    assert "back_in_stock (" not in notes


def test_a_backtest_writes_sends_and_calls_nothing(
    db, client, headers, history, redis_connection, run, smtp, fake_store, tmp_path
):
    # given
    before = _counts(db, redis_connection)
    calls = fake_store.store.state()["calls"]
    # when
    answer = client.post("/app/api/rules/win_back/backtest", json=PERIOD, headers=headers)
    run("backtest", "--shop", SHOP, "--rule", "win_back", "--from", PERIOD["from"], "--to", PERIOD["to"])
    # then: not a row, not a Redis key, not an email (SMTP or outbox), not an Admin API call
    assert answer.get_json()["messages_allowed"] == 2
    assert _counts(db, redis_connection) == before
    assert before["orders"] == 9 and before["action_runs"] == 0
    assert smtp.messages == [] and not list(tmp_path.rglob("*.eml"))
    assert fake_store.store.state()["calls"] == calls


def test_the_cli_prints_the_figures_and_the_same_json(client, headers, history, run):
    args = ("backtest", "--shop", SHOP, "--rule", "win_back", "--from", PERIOD["from"], "--to", PERIOD["to"])
    printed = json.loads(run(*args, "--json"))
    assert printed == client.post("/app/api/rules/win_back/backtest", json=PERIOD, headers=headers).get_json()
    text = run(*args)
    assert "shoppers reached       2" in text
    assert "held back by the cap   1" in text
    assert "ordered within 7 days 1 (50.0%" in text
    assert "note: Consent is taken as it is now" in text


def test_an_unsaved_rule_is_backtested_as_the_editor_holds_it(client, headers, history):
    rule = load_rule(dict(_win_back(client, headers), delay_minutes=0))
    answer = client.post(
        "/app/api/rules/win_back/backtest", json=dict(PERIOD, rule=rule), headers=headers
    ).get_json()
    # no delay: bob's win-back goes at 10:00 too, and outranks nothing (priority 55 < 80): still capped
    assert answer["first_at"] == "2026-08-08T14:30:00+00:00"
    assert answer["messages_quiet_hours_delayed"] == 1  # quinn at 22:10


def _win_back(client, headers) -> dict:
    return next(r for r in client.get("/app/api/rules", headers=headers).get_json() if r["key"] == "win_back")


def test_a_trigger_the_history_cannot_replay_says_so(client, headers, history):
    body = client.post("/app/api/rules/review_request/backtest", json=PERIOD, headers=headers).get_json()
    assert body["messages_triggered"] == 0
    assert body["notes"][0].startswith("This rule's trigger (order_fulfilled) cannot be replayed")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"from": "2026-13-01"}, 422),
        ({"from": "yesterday"}, 422),
        ({"from": "2026-10-01", "to": "2026-09-01"}, 422),
        ({"rule": {"name": "x", "trigger": "stage:nowhere", "action": "send_email"}}, 422),
        ({"rule": "not an object"}, 422),
        ({"from": "0001-01-01"}, 422),  # an OverflowError (500) before the dates were bounded
        ({"from": "2026-10-01", "to": "9999-12-31"}, 422),
        ({"from": "2026-11-02", "to": "2026-11-02"}, 422),  # wholly in the future: nothing to replay
        ({"from": "2025-09-01", "to": "2026-10-31"}, 422),  # 426 days: longer than 400
        ({"from": "2021-10-01", "to": "2021-12-31"}, 422),  # more than five years ago
    ],
)
def test_bad_input_is_refused(client, headers, history, body, status):
    answer = client.post("/app/api/rules/win_back/backtest", json=body, headers=headers)
    assert answer.status_code == status
    assert answer.get_json()["error"]


def test_an_invalid_unsaved_rule_is_refused_with_the_schemas_errors(client, headers, history):
    rule = {"name": "x", "trigger": "stage:nowhere", "action": "send_email"}
    answer = client.post("/app/api/rules/win_back/backtest", json={"rule": rule}, headers=headers)
    assert "trigger" in answer.get_json()["errors"]


def test_an_unknown_rule_is_404_and_the_default_period_is_90_days(client, headers, history):
    assert client.post("/app/api/rules/nope/backtest", json={}, headers=headers).status_code == 404
    body = client.post("/app/api/rules/win_back/backtest", headers=headers).get_json()
    assert (body["from"], body["to"]) == ("2026-08-03T12:00:00+00:00", "2026-11-01T12:00:00+00:00")


def test_the_backtest_needs_the_session_token(client, history):
    assert client.post("/app/api/rules/win_back/backtest", json=PERIOD).status_code == 401


class TickReplay(Replay):
    """The replay as the tick loop the event-driven one claims to equal: every tick (5 minutes) from the
    warm-up to now, plan the triggers up to that tick, each instant's in turn, and send the no-delay runs
    they plan at that instant (as their handler enqueues them); then dispatch the runs due at the tick,
    highest priority first (the same plan and dispatch: only the scheduling differs)."""

    def push(self, run, due, at_once=False):
        run.due_at = due
        when = due if at_once else ceil_tick(due)
        self.due.setdefault(when, []).append((-run.priority, next(self.order), run))

    def dispatch_due(self, when):
        for *_, run in sorted(self.due.pop(when, []), key=lambda item: item[:2]):
            self.dispatch(run, when)

    def run(self):
        self.due = {}
        triggers = self.triggers()
        tick, next_trigger = ceil_tick(self.warm_up), 0
        while tick <= self.now:
            while next_trigger < len(triggers) and triggers[next_trigger][1].at <= tick:
                instant = triggers[next_trigger][1].at
                while next_trigger < len(triggers) and triggers[next_trigger][1].at == instant:
                    self.plan(*triggers[next_trigger])
                    next_trigger += 1
                if instant < tick:
                    self.dispatch_due(instant)
            self.dispatch_due(tick)
            tick += TICK


def _random_histories(seed: int, count: int) -> list[ShopperHistory]:
    """Shoppers with random orders (some cancelled), checkouts, consent, suppression and time zones."""
    rng = random.Random(seed)
    first = at("2025-01-01T00:00:00")

    def moment() -> datetime:
        return first + timedelta(minutes=rng.randrange(0, 670 * 24 * 60))

    histories = []
    for shopper_id in range(1, count + 1):
        orders = []
        for n in range(rng.choice((0, 1, 1, 2, 3, 5))):
            placed = moment()
            cancelled = placed + timedelta(hours=5) if rng.random() < 0.1 else None
            total = Decimal(rng.randrange(10, 400))
            orders.append(OrderFact(shopper_id * 100 + n, placed, total, cancelled, paid=rng.random() < 0.9))
        checkouts = []
        for n in range(rng.choice((0, 0, 1, 2))):
            updated = moment()
            done = updated + timedelta(hours=rng.randrange(1, 30)) if rng.random() < 0.4 else None
            checkouts.append(CheckoutFact(f"c{shopper_id}-{n}", updated, completed_at=done))
        histories.append(
            ShopperHistory(
                shopper_id=shopper_id,
                email=f"s{shopper_id}@example.com",
                consents=rng.random() < 0.6,
                consent_at=moment(),
                suppressed=rng.random() < 0.05,
                timezone=rng.choice((None, "America/New_York", "Asia/Tokyo")),
                orders=tuple(sorted(orders, key=lambda o: o.placed_at)),
                checkouts=tuple(checkouts),
            )
        )
    return histories


@pytest.mark.parametrize("key", ["win_back", "abandoned_checkout", "thank_you", "vip_reward", "welcome"])
def test_the_event_driven_replay_equals_a_tick_loop(key):
    # given: random shoppers and the default rules (half of them without delay, sent at once, half with
    # a delay off the ticks), a cap of 1 a day shared by all, quiet hours in Rome
    rules = [
        (n, load_rule(dict(rule, delay_minutes=0 if n % 2 else rule["delay_minutes"] + 7)))
        for n, rule in enumerate(DEFAULT_RULES)
    ]
    policy = ShopPolicy(timezone="Europe/Rome")
    args = (_random_histories(seed=15, count=250), rules, key, at("2025-06-01T00:00:00"))
    end, now = at("2026-09-01T00:00:00"), at("2026-11-01T12:00:00")
    # when
    replays = [kind(*args, end, now, policy, CONSENT_WAIT) for kind in (Replay, TickReplay)]
    for replay in replays:
        replay.run()
    # then
    event_driven, ticked = (summarise(replay, timedelta(days=7)).as_dict() for replay in replays)
    assert event_driven == ticked
    assert event_driven["messages_allowed"] > 0
    outcomes = [
        {r.planned.idempotency_key: (r.outcome, r.sent_at) for r in replay.runs if r.counted}
        for replay in replays
    ]
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (None, None, ("2026-08-03T12:00:00+00:00", "2026-11-01T12:00:00+00:00")),
        ("2026-10-01", "2026-10-01", ("2026-09-30T22:00:00+00:00", "2026-10-01T22:00:00+00:00")),
        ("2026-10-01", None, ("2026-09-30T22:00:00+00:00", "2026-11-01T12:00:00+00:00")),
        (None, "2026-10-31", ("2026-08-02T23:00:00+00:00", "2026-10-31T23:00:00+00:00")),
    ],
)
def test_a_period_is_whole_days_in_the_shops_time_zone(start, end, expected):
    since, until = period(start, end, at("2026-11-01T12:00:00"), "Europe/Rome")
    assert (since.isoformat(), until.isoformat()) == expected


def test_out_of_bounds_dates_are_a_clear_cli_error(history, run):
    from click.testing import CliRunner

    from plugin.cli import main

    args = ["backtest", "--shop", SHOP, "--rule", "win_back", "--from", "0001-01-01"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "from must be between 2021-" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_read_session_lets_writers_in_and_writes_nothing(db, shop):
    # given: a backtest's loading session is open (its first read done, so its transaction has begun)
    with db.read_session() as reading:
        assert reading.scalar(select(func.count()).select_from(Shop)) == 1
        # when: the webhook endpoint writes meanwhile (one second of patience, not the 60 s busy timeout)
        with db.autocommit_engine.connect() as writer:
            if db.is_sqlite:
                writer.exec_driver_sql("PRAGMA busy_timeout = 1000")
            writer.execute(Suppression.__table__.insert(), _suppression(shop.id, "writer@example.com"))
        # then: it got in; and the reading session itself cannot write on PostgreSQL (READ ONLY)
        if not db.is_sqlite:
            with pytest.raises(Exception, match="read-only transaction"):
                reading.execute(Suppression.__table__.insert(), _suppression(shop.id, "reader@example.com"))
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == 1


def _suppression(shop_id: int, email: str) -> dict:
    return {"shop_id": shop_id, "email_hash": email_hash(email), "reason": "unsubscribed", "created_at": at(
        "2026-10-01T00:00:00"
    )}  # fmt: skip


def test_a_cap_of_zero_is_saved_and_then_sends_no_marketing_email(client, headers, history):
    saved = client.put("/app/api/settings", json={"cap_per_day": 0}, headers=headers)
    assert saved.status_code == 200 and saved.get_json()["cap_per_day"] == 0
    answer = client.post("/app/api/rules/win_back/backtest", json=PERIOD, headers=headers)
    assert answer.status_code == 200  # an IndexError in the cap (500) before
    assert (answer.get_json()["messages_triggered"], answer.get_json()["messages_allowed"]) == (5, 0)


def test_the_cli_backtest_neither_migrates_nor_starts_redis(db, history, run, monkeypatch, tmp_path):
    # given: a database the migrations would run on again (no revision stamped), and no REDIS_URL
    with db.session() as session:
        version = session.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        session.execute(text("DELETE FROM alembic_version"))
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("LIFECYCLE_INSTANCE_PATH", str(tmp_path))
    try:
        # when
        printed = json.loads(run("backtest", "--shop", SHOP, "--rule", "win_back", *_period_args(), "--json"))
        # then: it read, and it did not migrate (which would fail on the existing tables) nor embed Redis
        assert printed["messages_allowed"] == 2
        with db.session() as session:
            assert session.scalar(text("SELECT count(*) FROM alembic_version")) == 0
        assert list(tmp_path.iterdir()) == []
    finally:
        with db.session() as session:
            session.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": version})


def _period_args() -> list[str]:
    return ["--from", PERIOD["from"], "--to", PERIOD["to"]]
