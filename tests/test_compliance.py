"""Compliance webhooks: a shopper's data handed over, then erased; a shop erased. Proven by searching every
table of the database (and the outbox folder) for the personal values afterwards."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import inspect, select, text, update

from plugin.demo import synthetic as s
from plugin.pipeline import queue
from plugin.store.models import ActionRun, DataExport, Delivery, Order, Shop, Shopper, StockSubscription
from tests.conftest import NOW, SHOP
from tests.webhook_client import post_webhook

EMAIL, FIRST, LAST, PHONE = "annabelle.q@example.org", "Annabelle", "Quixotic", "+393331234567"
ANN_ID, BOB_ID = 4242, 5151
PERSONAL = (EMAIL, FIRST, LAST, PHONE, "annabelle")


def every_value(db) -> list[tuple[str, str]]:
    """(table, text) for every cell of every table, bytes and JSON included."""
    out = []
    with db.engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value).decode("utf-8", "replace")
                    elif isinstance(value, dict | list):
                        value = json.dumps(value)
                    if value is not None:
                        out.append((table, str(value)))
    return out


def found(db, outbox: str, needles) -> list[str]:
    hits = [
        f"{table}: {value[:80]}"
        for table, value in every_value(db)
        if any(n.lower() in value.lower() for n in needles)
    ]
    if os.path.isdir(outbox):
        for name in os.listdir(outbox):
            with open(os.path.join(outbox, name), "rb") as handle:
                content = handle.read().decode("utf-8", "replace").lower()
            hits += [f"outbox/{name}" for n in needles if n.lower() in content]
    return hits


def ann_history(client, db, worker, app, tmp_path):
    """Ann signs up with consent, buys twice (a thank-you email goes to the outbox), leaves a checkout open
    and asks for a back-in-stock alert; Bob, another shopper, buys once."""
    app.config.update(SMTP_URL=None, OUTBOX=str(tmp_path / "outbox"))
    customer = s.customer_payload(
        ANN_ID, EMAIL, NOW - timedelta(days=40), first=FIRST, last=LAST, phone=PHONE
    )
    post_webhook(client, "customers/create", customer)
    post_webhook(
        client,
        "customers_email_marketing_consent/update",
        s.consent_payload(ANN_ID, EMAIL, "subscribed", NOW - timedelta(days=40)),
    )
    for order_id, age in ((901, timedelta(days=30)), (902, timedelta(hours=2))):
        order = s.order_payload(order_id, ANN_ID, NOW - age, Decimal(40), email=EMAIL)
        post_webhook(client, "orders/paid", order)
    post_webhook(client, "checkouts/create", s.checkout_payload("tok-ann", ANN_ID, EMAIL, NOW, Decimal(25)))
    post_webhook(
        client,
        "orders/paid",
        s.order_payload(950, BOB_ID, NOW - timedelta(days=2), Decimal(70), email="bob@example.com"),
    )
    worker.work()
    with db.session() as session:
        shop_id = session.scalar(select(Shopper.shop_id))
        session.add(StockSubscription(shop_id=shop_id, variant_id=8001, email=EMAIL, created_at=NOW))
    return str(tmp_path / "outbox")


def test_data_request_exports_everything_stored_about_the_shopper(client, db, shop, worker, app, tmp_path):
    ann_history(client, db, worker, app, tmp_path)
    request = {
        "shop_id": 1,
        "shop_domain": SHOP,
        "orders_requested": [901, 902],
        "customer": {"id": ANN_ID, "email": EMAIL, "phone": PHONE},
        "data_request": {"id": 77},
    }
    post_webhook(client, "customers/data_request", request)
    worker.work()
    with db.session() as session:
        export = session.scalar(select(DataExport))
        delivery = session.scalar(select(Delivery).where(Delivery.topic == "customers/data_request"))
        assert delivery.reason == f"data export {export.id} ready for the merchant"
        content = export.content
    assert export.data_request_id == 77
    assert content["profile"]["email"] == EMAIL and content["profile"]["last_name"]
    assert [o["order_id"] for o in content["orders"]] == [901, 902]
    assert content["checkouts"][0]["token"] == "tok-ann"
    assert content["back_in_stock_requests"][0]["variant_id"] == 8001
    assert "thank_you" in [m["play"] for m in content["messages"]]
    assert content["stage_history"][-1]["to"] == "repeat"


def test_customer_redact_leaves_no_personal_value_anywhere(client, db, shop, worker, app, tmp_path):
    outbox = ann_history(client, db, worker, app, tmp_path)
    post_webhook(
        client,
        "customers/data_request",
        {
            "shop_domain": SHOP,
            "customer": {"id": ANN_ID, "email": EMAIL, "phone": PHONE},
            "data_request": {"id": 1},
        },
    )
    worker.work()
    # before: Ann is everywhere (profile, webhook bodies, runs, the export, the rendered thank-you)
    before = found(db, outbox, PERSONAL)
    assert {hit.split(":")[0].split("/")[0] for hit in before} >= {
        "shoppers",
        "deliveries",
        "data_exports",
        "outbox",
    }

    payload = s.redact_payload(SHOP, ANN_ID, EMAIL, [901, 902])
    payload["customer"]["phone"] = PHONE
    post_webhook(client, "customers/redact", payload)
    worker.work()

    # then no table, no JSON, no raw webhook body and no outbox file holds any of her personal values
    assert found(db, outbox, PERSONAL) == []
    with db.session() as session:
        # her orders still count in the shop's revenue, unlinked from her; Bob is untouched
        assert sorted(session.scalars(select(Order.order_id).where(Order.customer_id.is_(None)))) == [
            901,
            902,
        ]
        bob = session.scalar(select(Shopper).where(Shopper.customer_id == BOB_ID))
        assert (bob.email, bob.orders_count) == ("bob@example.com", 1)
        redact = session.scalar(select(Delivery).where(Delivery.topic == "customers/redact"))
        assert redact.status == "processed" and redact.reason.startswith("redacted: ")
    assert found(db, outbox, ["bob@example.com"])  # the search itself finds what is there


def test_shop_redact_erases_the_whole_shop(client, db, shop, worker, app, tmp_path, fake_store):
    outbox = ann_history(client, db, worker, app, tmp_path)
    fake_store.store.access_token = "revoked-at-uninstall"  # Shopify revokes the token at uninstall
    post_webhook(client, "app/uninstalled", s.shop_payload(SHOP))
    worker.work()
    post_webhook(client, "shop/redact", {"shop_id": 1, "shop_domain": SHOP})
    worker.work()
    leftovers = [hit for hit in found(db, outbox, PERSONAL + ("bob@example.com",))]
    assert leftovers == []
    with db.engine.connect() as connection:
        for table in (
            "shops",
            "shoppers",
            "orders",
            "checkouts",
            "action_runs",
            "stage_transitions",
            "rules",
        ):
            assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0, table
    with db.session() as session:
        [delivery] = session.scalars(select(Delivery)).all()
        assert (delivery.topic, delivery.status) == ("shop/redact", "processed")
        assert bytes(delivery.body) == b'{"redacted": true}'


# --- destructive topics: confirmed before they destroy ----------------------------------------------------
def shop_row(db) -> Shop | None:
    with db.session() as session:
        return session.scalar(select(Shop))


def delivery_of(db, topic: str) -> Delivery:
    with db.session() as session:
        return session.scalar(select(Delivery).where(Delivery.topic == topic).order_by(Delivery.id.desc()))


def test_uninstall_pauses_sending_at_once_and_a_queued_run_skips(client, db, shop, worker, app):
    # given a run planned and queued (a thank-you after an order), not yet carried out
    post_webhook(client, "customers/create", s.customer_payload(ANN_ID, EMAIL, NOW - timedelta(days=3)))
    post_webhook(client, "orders/paid", s.order_payload(901, ANN_ID, NOW, Decimal(40), email=EMAIL))
    with app.app_context():
        from plugin.pipeline.deliveries import drain_deliveries

        drain_deliveries()
    with db.session() as session:
        queued = session.scalars(select(ActionRun).where(ActionRun.status.in_(("queued", "scheduled")))).all()
    assert queued
    # when a signed app/uninstalled arrives (Shopify still accepts the token: not confirmed yet)
    post_webhook(client, "app/uninstalled", s.shop_payload(SHOP), webhook_id="u1")
    with app.app_context():
        drain_deliveries()
    # then every pending run is cancelled with the reason, and a job already in the queue skips
    with db.session() as session:
        ended = {(r.status, r.skip_reason) for r in session.scalars(select(ActionRun))}
        # as if queued before: the runs that run one by one (stage write-backs go in the shop's bulk job)
        one_by_one = ActionRun.play != "stage_sync"
        session.execute(update(ActionRun).where(one_by_one).values(status="queued", skip_reason=None))
        queued_ids = list(session.scalars(select(ActionRun.id).where(one_by_one)))
    assert ended == {("cancelled", "sending paused: the app was uninstalled")}
    assert queued_ids
    with app.app_context():
        for run_id in queued_ids:
            queue.enqueue_action_run(app.extensions["lifecycle.redis"], run_id, 0)
    worker.work()
    with db.session() as session:
        assert {(r.status, r.skip_reason) for r in session.scalars(select(ActionRun).where(one_by_one))} == {
            ("skipped", "sending paused: the app was uninstalled")
        }
    # and the shop is paused, not deactivated: its token still works, so the uninstall is unconfirmed
    row = shop_row(db)
    assert (row.active, row.paused_at, row.access_token_encrypted is not None) == (True, NOW, True)
    # and later webhooks plan nothing
    post_webhook(client, "orders/paid", s.order_payload(902, ANN_ID, NOW, Decimal(40), email=EMAIL))
    worker.work()
    assert delivery_of(db, "orders/paid").status == "ignored"


def test_uninstall_confirmed_by_a_refused_token_deactivates_the_shop(client, db, shop, worker, fake_store):
    fake_store.store.access_token = "another-token"  # Shopify refuses ours: the app is uninstalled
    post_webhook(client, "app/uninstalled", s.shop_payload(SHOP))
    worker.work()
    row = shop_row(db)
    assert (row.active, row.uninstalled_at, row.access_token_encrypted) == (False, NOW, None)
    assert "Shopify refuses the token" in delivery_of(db, "app/uninstalled").reason


def test_premature_shop_redact_erases_nothing_and_is_replayable(client, db, shop, worker, app, tmp_path):
    outbox = ann_history(client, db, worker, app, tmp_path)
    # when shop/redact arrives while Shopify still accepts the shop's token (no uninstall happened)
    post_webhook(client, "shop/redact", {"shop_id": 1, "shop_domain": SHOP})
    worker.work()
    # then nothing is erased, and the delivery is quarantined with why
    assert shop_row(db) is not None and found(db, outbox, [EMAIL])
    redact = delivery_of(db, "shop/redact")
    assert redact.status == "quarantined" and "still accepts the shop's token" in redact.reason


def test_a_lost_uninstall_still_ends_in_erasure(client, db, shop, worker, app, tmp_path, fake_store):
    # given the app/uninstalled webhook never arrived, and Shopify revoked the token
    outbox = ann_history(client, db, worker, app, tmp_path)
    fake_store.store.access_token = "revoked"
    # when shop/redact arrives, 48 hours later
    post_webhook(client, "shop/redact", {"shop_id": 1, "shop_domain": SHOP})
    worker.work()
    # then the refused token confirms the uninstall, and the shop is erased
    assert shop_row(db) is None and found(db, outbox, [EMAIL, "bob@example.com"]) == []
    assert delivery_of(db, "shop/redact").status == "processed"


def test_a_lapsed_token_is_refreshed_to_ask_and_a_refused_refresh_confirms(client, db, shop, worker, app):
    # given the access token lapsed and the refresh token is unknown to Shopify (revoked at uninstall)
    from plugin.crypto import encrypt_token

    with db.session() as session:
        row = session.scalar(select(Shop))
        row.access_token_expires_at = NOW - timedelta(hours=2)
        row.refresh_token_encrypted = encrypt_token("shprt_revoked", "test-secret-key")
        row.refresh_token_expires_at = NOW + timedelta(days=30)
    post_webhook(client, "shop/redact", {"shop_id": 1, "shop_domain": SHOP})
    worker.work()
    assert shop_row(db) is None
    assert delivery_of(db, "shop/redact").status == "processed"


@pytest.mark.parametrize(
    ("topic", "body"),
    [
        ("shop/redact", {"shop_id": 1, "shop_domain": "victim.myshopify.com"}),
        ("customers/redact", {"shop_id": 1, "shop_domain": "victim.myshopify.com", "customer": {"id": 4242}}),
        ("app/uninstalled", {"id": 1, "myshopify_domain": "victim.myshopify.com", "domain": SHOP}),
    ],
)
def test_a_body_naming_another_shop_than_the_header_is_quarantined(client, db, shop, worker, topic, body):
    # the HMAC covers the body only: a genuine body of one shop replayed under another shop's header
    post_webhook(client, topic, body, shop=SHOP)
    worker.work()
    delivery = delivery_of(db, topic)
    assert delivery.status == "quarantined" and "victim.myshopify.com" in delivery.reason
    assert shop_row(db).active and shop_row(db).paused_at is None


@pytest.mark.parametrize(
    ("topic", "body", "missing"),
    [
        ("app/uninstalled", {"id": 1, "domain": SHOP}, "myshopify_domain"),
        ("app/uninstalled", {}, "myshopify_domain"),
        ("shop/redact", {"shop_domain": SHOP}, "shop_id"),
        ("customers/redact", {"shop_id": 1, "shop_domain": SHOP}, "customer"),
        ("customers/data_request", {"shop_domain": SHOP, "customer": {}}, "id"),
        ("orders/paid", {"created_at": "2026-10-01T00:00:00Z"}, "id"),
    ],
)
def test_each_schema_requires_its_identifying_fields(client, db, shop, worker, topic, body, missing):
    post_webhook(client, topic, body)
    worker.work()
    delivery = delivery_of(db, topic)
    assert delivery.status == "quarantined" and missing in delivery.reason
    assert shop_row(db).active and shop_row(db).paused_at is None


def test_an_unknown_topic_is_ignored_explicitly_and_a_known_one_is_not(client, db, shop, worker):
    from plugin.shopify import payloads

    post_webhook(client, "themes/publish", {"id": 1})
    worker.work()
    assert delivery_of(db, "themes/publish").reason == "no handler for topic themes/publish"
    # a KeyError inside a known topic's loading is no longer read as "unknown topic"
    with pytest.raises(payloads.UnknownTopicError):
        payloads.load("themes/publish", b"{}")
    assert not issubclass(payloads.UnknownTopicError, KeyError)
