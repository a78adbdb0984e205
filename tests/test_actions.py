"""Plays end to end: signed webhooks → worker → runs → real SMTP and the fake store; time moved, not slept."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import requests
from sqlalchemy import select

from plugin.demo import synthetic as s
from plugin.pipeline.tick import tick_app
from plugin.store.models import ActionRun, Shop, StockSubscription, Suppression
from tests.conftest import NOW, SHOP
from tests.webhook_client import post_webhook

ANN, ANN_ID = "ann@example.com", 7


def customer(client, customer_id=ANN_ID, email=ANN, consent="subscribed", at=NOW, locale=None, n=0):
    post_webhook(
        client,
        "customers/create",
        s.customer_payload(customer_id, email, at, first="Ann"),
        webhook_id=f"c-{customer_id}-{n}",
    )
    post_webhook(
        client,
        "customers_email_marketing_consent/update",
        s.consent_payload(customer_id, email, consent, at),
        webhook_id=f"k-{customer_id}-{n}",
    )


def runs(db, play=None) -> list[ActionRun]:
    with db.session() as session:
        query = select(ActionRun).order_by(ActionRun.id)
        if play:
            query = query.where(ActionRun.play == play)
        return list(session.scalars(query))


def tick_at(app, monkeypatch, when):
    monkeypatch.setenv("LIFECYCLE_NOW", when.isoformat())
    return tick_app(app)


def fake_state(fake_store) -> dict:
    return requests.get(fake_store.origin + "/_fake/state", timeout=5).json()


def test_welcome_is_sent_once_with_unsubscribe_headers(client, shop, worker, smtp, db):
    # when the same signup is delivered twice (new webhook ids, as a replay would)
    customer(client, n=0)
    customer(client, n=1)
    worker.work()
    # then exactly one welcome arrives, with one-click unsubscribe
    [mail] = smtp.to(ANN)
    assert mail["Subject"].startswith("Welcome to")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["List-Unsubscribe"].strip().startswith("<http://127.0.0.1:8000/unsubscribe/")
    assert "/unsubscribe/" in mail.get_body(("plain",)).get_content()
    assert [r.status for r in runs(db, "welcome")] == ["succeeded"]


def test_no_marketing_without_consent(client, shop, worker, smtp, db):
    customer(client, consent="not_subscribed")
    post_webhook(client, "orders/paid", s.order_payload(11, ANN_ID, NOW, Decimal(50), email=ANN))
    worker.work()
    assert smtp.to(ANN) == []
    assert runs(db, "welcome") == []


def test_welcome_in_the_shoppers_locale(client, shop, worker, smtp):
    customer(client, consent="not_subscribed")
    checkout = s.checkout_payload("tok-it", ANN_ID, ANN, NOW - timedelta(minutes=5), Decimal(30), locale="it")
    post_webhook(client, "checkouts/create", checkout)
    post_webhook(
        client,
        "customers_email_marketing_consent/update",
        s.consent_payload(ANN_ID, ANN, "subscribed", NOW + timedelta(seconds=1)),
        webhook_id="k2",
    )
    worker.work()
    [mail] = smtp.to(ANN)
    assert mail["Subject"].startswith("Benvenuto")
    assert mail["Content-Language"] == "it"


def test_shops_languages_decide_who_is_written_in_what(client, shop, worker, smtp):
    from tests.test_install import session_token

    headers = {"Authorization": f"Bearer {session_token()}"}
    # the merchant writes in Italian and English only, Italian for everybody else
    refused = client.put("/app/api/settings", json={"languages": ["it", "xx"]}, headers=headers)
    assert refused.status_code == 422 and "languages" in refused.get_json()["errors"]
    saved = client.put("/app/api/settings", json={"languages": ["it", "en"]}, headers=headers)
    assert saved.get_json()["languages"] == ["it", "en"]
    # a Polish shopper signs up: written in Italian; an English one in English
    for customer_id, email, locale in ((21, "pola@example.com", "pl-PL"), (22, "emma@example.com", "en")):
        customer(client, customer_id=customer_id, email=email, consent="not_subscribed")
        checkout = s.checkout_payload(f"t{customer_id}", customer_id, email, NOW, Decimal(30), locale=locale)
        post_webhook(client, "checkouts/create", checkout)
        consent = s.consent_payload(customer_id, email, "subscribed", NOW + timedelta(seconds=1))
        post_webhook(
            client, "customers_email_marketing_consent/update", consent, webhook_id=f"k{customer_id}"
        )
    worker.work()
    [pola] = smtp.to("pola@example.com")
    [emma] = smtp.to("emma@example.com")
    assert (pola["Content-Language"], emma["Content-Language"]) == ("it", "en")
    assert pola["Subject"].startswith("Benvenuto")


def test_abandoned_checkout_is_sent_four_hours_later_with_the_recovery_link(
    app, client, shop, worker, smtp, db, monkeypatch
):
    customer(client, at=NOW - timedelta(days=30))
    worker.work()
    smtp.messages.clear()
    checkout = s.checkout_payload("tok-1", ANN_ID, ANN, NOW, Decimal("49.90"))
    post_webhook(client, "checkouts/create", checkout)
    worker.work()
    # not before its time
    tick_at(app, monkeypatch, NOW + timedelta(hours=3))
    worker.work()
    assert smtp.to(ANN) == []
    # at +4 h the reminder goes, with Shopify's recovery link
    tick_at(app, monkeypatch, NOW + timedelta(hours=4, minutes=1))
    worker.work()
    [mail] = smtp.to(ANN)
    assert checkout["abandoned_checkout_url"] in mail.get_body(("plain",)).get_content()
    assert (
        "49,90" in mail.get_body(("plain",)).get_content()
        or "49.90" in mail.get_body(("plain",)).get_content()
    )


def test_abandoned_checkout_is_skipped_when_the_order_came(app, client, shop, worker, smtp, db, monkeypatch):
    customer(client, at=NOW - timedelta(days=30))
    post_webhook(client, "checkouts/create", s.checkout_payload("tok-2", ANN_ID, ANN, NOW, Decimal(20)))
    worker.work()
    order = s.order_payload(
        21, ANN_ID, NOW + timedelta(hours=1), Decimal(20), email=ANN, checkout_token="tok-2"
    )
    post_webhook(client, "orders/create", order)
    worker.work()
    tick_at(app, monkeypatch, NOW + timedelta(hours=5))
    worker.work()
    [run] = runs(db, "abandoned_checkout")
    assert run.status == "skipped"
    assert run.skip_reason == "the checkout was completed"


def test_win_back_creates_one_unique_code_and_writes_the_stage_back(
    app, client, shop, worker, smtp, db, fake_store, monkeypatch
):
    customer(client, at=NOW - timedelta(days=200))
    post_webhook(
        client, "orders/paid", s.order_payload(31, ANN_ID, NOW - timedelta(days=80), Decimal(60), email=ANN)
    )
    worker.work()
    smtp.messages.clear()
    # when the clock passes 90 days since the order, twice
    later = NOW + timedelta(days=11)
    tick_at(app, monkeypatch, later)
    worker.work()
    tick_at(app, monkeypatch, later + timedelta(hours=1))
    worker.work()
    # then one code, for this customer only, single use, valid 14 days, and it is in the email
    [run] = runs(db, "win_back")
    assert run.status == "succeeded"
    state = fake_state(fake_store)
    discount = state["discounts"][run.discount_code]
    assert discount["context"] == {"customers": {"add": [f"gid://shopify/Customer/{ANN_ID}"]}}
    assert discount["usageLimit"] == 1
    assert discount["customerGets"]["value"]["percentage"] == 0.2
    [mail] = smtp.to(ANN)
    assert run.discount_code in mail.get_body(("plain",)).get_content()
    customer_state = state["customers"][f"gid://shopify/Customer/{ANN_ID}"]
    assert (
        "lifecycle:at_risk" in customer_state["tags"] and "lifecycle:first_time" not in customer_state["tags"]
    )
    assert customer_state["metafields"]["lifecycle.stage"]["value"] == "at_risk"
    assert state["invalid_documents"] == 0


def test_throttled_store_defers_then_succeeds(app, client, shop, worker, db, fake_store, monkeypatch):
    # given a store whose bucket is empty and refills slowly
    requests.post(
        fake_store.origin + "/_fake/control", json={"available": 0, "restore_rate": 0.001}, timeout=5
    )
    customer(client)
    worker.work()
    tick_at(app, monkeypatch, NOW + timedelta(minutes=10))  # the stage write-back's window ends
    worker.work()
    [sync] = runs(db, "stage_sync")
    assert sync.status == "scheduled" and "ShopifyThrottled" in sync.deferred_reason
    # when the bucket is back and the tick runs after the retry time
    requests.post(
        fake_store.origin + "/_fake/control", json={"available": 1000, "restore_rate": 50}, timeout=5
    )
    tick_at(app, monkeypatch, NOW + timedelta(hours=1))
    worker.work()
    assert [r.status for r in runs(db, "stage_sync")] == ["succeeded"]


def test_frequency_cap_defers_the_second_message(app, client, shop, worker, smtp, db, monkeypatch):
    customer(client)
    post_webhook(client, "orders/paid", s.order_payload(41, ANN_ID, NOW, Decimal(30), email=ANN))
    worker.work()
    tick_at(app, monkeypatch, NOW + timedelta(hours=2))
    worker.work()
    assert len(smtp.to(ANN)) == 1  # the welcome; the thank-you waits for the cap
    [thanks] = runs(db, "thank_you")
    assert thanks.status == "scheduled" and thanks.deferred_reason.startswith("frequency cap")
    tick_at(app, monkeypatch, NOW + timedelta(hours=24, minutes=5))
    worker.work()
    assert [m["Subject"] for m in smtp.to(ANN)][1].startswith("Thank you")


def test_quiet_hours_hold_mail_until_morning(app, client, shop, worker, smtp, db, monkeypatch):
    night = NOW.replace(hour=22)
    monkeypatch.setenv("LIFECYCLE_NOW", night.isoformat())
    customer(client, at=night)
    worker.work()
    assert smtp.to(ANN) == []
    [welcome] = runs(db, "welcome")
    assert welcome.due_at == (night + timedelta(days=1)).replace(hour=8)
    tick_at(app, monkeypatch, (night + timedelta(days=1)).replace(hour=8, minute=1))
    worker.work()
    assert len(smtp.to(ANN)) == 1


def test_one_click_unsubscribe_suppresses_and_tells_shopify(client, shop, worker, smtp, db, fake_store):
    customer(client)
    worker.work()
    [mail] = smtp.to(ANN)
    url = mail["List-Unsubscribe"].strip().strip("<>")
    path = url.split("127.0.0.1:8000", 1)[1]
    # when the mail client posts RFC 8058's one-click body
    response = client.post(
        path, data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    worker.work()
    with db.session() as session:
        assert session.scalar(select(Suppression.reason)) == "one-click"
    consent = fake_state(fake_store)["customers"][f"gid://shopify/Customer/{ANN_ID}"]["defaultEmailAddress"]
    assert consent["marketingState"] == "UNSUBSCRIBED"
    # and a forged token changes nothing
    assert client.post("/unsubscribe/not-a-token").status_code == 404


def test_back_in_stock_tells_the_subscriber_once(client, shop, worker, smtp, db):
    post_webhook(client, "products/create", s.product_payload(7001, "Linen shirt", [(8001, 9001)], NOW))
    post_webhook(
        client, "inventory_levels/update", s.inventory_level_payload(9001, 1, 0, NOW - timedelta(hours=1))
    )
    worker.work()
    with db.session() as session:
        shop_id = session.scalar(select(Shop.id))
        session.add(
            StockSubscription(shop_id=shop_id, variant_id=8001, email="bob@example.com", created_at=NOW)
        )
    post_webhook(client, "inventory_levels/update", s.inventory_level_payload(9001, 1, 5, NOW))
    post_webhook(
        client, "inventory_levels/update", s.inventory_level_payload(9001, 1, 4, NOW + timedelta(minutes=1))
    )
    worker.work()
    [mail] = smtp.to("bob@example.com")
    assert "Linen shirt" in mail["Subject"]
    # asked for: transactional (no marketing footer), with a one-click link that stops this alert only
    stop = str(mail["List-Unsubscribe"]).strip().strip("<>")
    assert "/alerts/" in stop and "Stop this alert" in mail.get_body(("plain",)).get_content()
    assert client.post(stop.removeprefix("http://127.0.0.1:8000")).status_code == 200
    with db.session() as session:
        assert session.scalar(select(StockSubscription)) is None


def test_uninstall_cancels_pending_runs(client, shop, worker, db):
    customer(client, at=NOW - timedelta(days=30))
    post_webhook(client, "checkouts/create", s.checkout_payload("tok-u", ANN_ID, ANN, NOW, Decimal(20)))
    worker.work()
    post_webhook(client, "app/uninstalled", s.shop_payload(SHOP))
    worker.work()
    assert [r.status for r in runs(db, "abandoned_checkout")] == ["cancelled"]


def test_every_document_is_valid_against_the_admin_schema():
    from plugin.demo.fake_store import validate_document
    from plugin.shopify.client import document, operations

    assert len(operations()) >= 6
    for name in operations():
        assert validate_document(document(name)) == [], name


def test_the_sandbox_refuses_unsafe_templates():
    import pytest

    from plugin.emails import TemplateError, render_email

    class Override:
        subject = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
        html = text = "x"

    with pytest.raises(TemplateError):
        render_email("welcome", {"shop_name": "S"}, "en", Override())


def test_a_template_compiles_once_and_still_renders_within_the_limits_each_time():
    """The sandbox keeps each compiled source; a render of it still spends its own budget, and an edited
    override (a new source) renders its own text."""
    import pytest

    from plugin.emails import TemplateError, render_email
    from plugin.emails.sandbox import compiled

    class Override:
        subject = "Hello {{ first_name }}"
        html = text = "<p>{% for i in range(n) %}{{ i }}{% endfor %}</p>"

    context = {"shop_name": "S", "first_name": "Ann", "n": 3}
    first = render_email("welcome", context, "en", Override())
    before = compiled.cache_info()
    second = render_email("welcome", dict(context, first_name="Bob"), "en", Override())
    after = compiled.cache_info()
    assert first.subject == "Hello Ann" and second.subject == "Hello Bob"
    assert after.misses == before.misses and after.hits > before.hits  # nothing compiled again
    with pytest.raises(TemplateError):  # the same compiled loop, past the budget of this render
        render_email("welcome", dict(context, n=10**9), "en", Override())

    class Edited(Override):
        subject = "Welcome back {{ first_name }}"

    assert render_email("welcome", context, "en", Edited()).subject == "Welcome back Ann"


def test_past_buyers_hear_about_a_restock_when_the_merchant_turns_it_on(client, shop, worker, smtp, db):
    from plugin.store.models import Rule

    with db.session() as session:
        rule = session.scalar(select(Rule).where(Rule.key == "back_in_stock_buyers"))
        rule.enabled = True  # off by default: marketing to past buyers is the merchant's choice
    customer(client, at=NOW - timedelta(days=60))
    line = s.line_item(1, 7001, 8001, Decimal(30))
    post_webhook(
        client,
        "orders/paid",
        s.order_payload(11, ANN_ID, NOW - timedelta(days=30), Decimal(30), email=ANN, lines=[line]),
    )
    post_webhook(client, "products/create", s.product_payload(7001, "Linen shirt", [(8001, 9001)], NOW))
    post_webhook(
        client, "inventory_levels/update", s.inventory_level_payload(9001, 1, 0, NOW - timedelta(hours=1))
    )
    worker.work()
    post_webhook(client, "inventory_levels/update", s.inventory_level_payload(9001, 1, 3, NOW))
    worker.work()
    [mail] = [m for m in smtp.to(ANN) if "Linen shirt" in m["Subject"]]
    assert (
        mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    )  # marketing: unsubscribe, not "stop alert"
    assert [r.status for r in runs(db, "back_in_stock_buyers")] == ["succeeded"]


def test_a_holdout_share_records_held_out_runs_that_send_nothing(client, shop, worker, smtp, db):
    from plugin.store.models import Rule

    with db.session() as session:
        rule = session.scalar(select(Rule).where(Rule.key == "welcome"))
        rule.definition = dict(rule.definition, holdout_percent=50)
    for n in range(40):
        customer(client, customer_id=1000 + n, email=f"h{n}@example.com", n=n)
    worker.work()
    statuses = [r.status for r in runs(db, "welcome")]
    held = statuses.count("held_out")
    assert len(statuses) == 40 and 8 <= held <= 32  # a deterministic draw around half
    assert statuses.count("succeeded") == 40 - held
    assert len(smtp.messages) == 40 - held  # the control group gets nothing
