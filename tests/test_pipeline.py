"""Signed webhooks in through HTTP, a worker draining them, profiles and stages out."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from plugin.demo import synthetic as s
from plugin.store.models import Delivery, Order, Shopper, StageTransition
from tests.conftest import NOW
from tests.webhook_client import post_webhook

DAY = timedelta(days=1)


def shopper(db, customer_id: int) -> Shopper:
    with db.session() as session:
        return session.scalar(select(Shopper).where(Shopper.customer_id == customer_id))


def statuses(db) -> dict[str, tuple[str, str | None]]:
    with db.session() as session:
        return {d.webhook_id: (d.status, d.reason) for d in session.scalars(select(Delivery))}


def order(order_id, customer_id=7, days_ago=10, total="40.00", **kw):
    return s.order_payload(
        order_id, customer_id, NOW - days_ago * DAY, Decimal(total), email="ann@example.com", **kw
    )


def test_first_paid_order_makes_a_first_time_buyer(client, db, shop, worker):
    post_webhook(client, "orders/paid", order(1))
    worker.work()
    ann = shopper(db, 7)
    assert (ann.stage, ann.orders_count, ann.total_spent) == ("first_time", 1, Decimal("40.00"))
    assert ann.email == "ann@example.com"
    assert ann.locale == "en"
    assert "First order" in ann.stage_reason


def test_one_order_under_several_topics_counts_once(client, db, shop, worker):
    for topic in ("orders/create", "orders/paid", "orders/updated", "orders/fulfilled"):
        post_webhook(client, topic, order(1))
    post_webhook(client, "orders/paid", order(1), webhook_id="same")
    post_webhook(client, "orders/paid", order(1), webhook_id="same")
    worker.work()
    assert shopper(db, 7).orders_count == 1


def test_repeat_then_loyal_by_count(client, db, shop, worker):
    for n in range(1, 5):
        post_webhook(client, "orders/paid", order(n, days_ago=40 - n))
        worker.work()
        expected = {1: "first_time", 2: "repeat", 3: "repeat", 4: "loyal"}[n]
        assert shopper(db, 7).stage == expected


def test_loyal_by_spend_with_two_orders(client, db, shop, worker):
    post_webhook(client, "orders/paid", order(1, total="300.00", days_ago=20))
    post_webhook(client, "orders/paid", order(2, total="250.00", days_ago=5))
    worker.work()
    ann = shopper(db, 7)
    assert (ann.stage, ann.total_spent) == ("loyal", Decimal("550.00"))


def test_cancelled_order_is_excluded(client, db, shop, worker):
    post_webhook(client, "orders/paid", order(1))
    post_webhook(client, "orders/paid", order(2, days_ago=5))
    post_webhook(client, "orders/cancelled", order(2, days_ago=5, cancelled_at=NOW - 4 * DAY))
    worker.work()
    ann = shopper(db, 7)
    assert (ann.orders_count, ann.total_spent, ann.stage) == (1, Decimal("40.00"), "first_time")


def test_cancellation_arriving_before_the_paid_webhook_still_wins(client, db, shop, worker):
    post_webhook(client, "orders/cancelled", order(2, cancelled_at=NOW - 4 * DAY))
    worker.work()
    post_webhook(client, "orders/paid", order(2))  # older updated_at: stale
    worker.work()
    assert shopper(db, 7).orders_count == 0


def test_refund_is_subtracted_once_whichever_topic_brings_it(client, db, shop, worker):
    refund = s.refund_payload(90, 1, Decimal("15.00"), NOW - 2 * DAY)
    post_webhook(client, "orders/paid", order(1, total="100.00"))
    post_webhook(client, "refunds/create", refund)
    post_webhook(client, "refunds/create", refund)  # redelivered under a new webhook id
    post_webhook(client, "orders/updated", order(1, total="100.00", refunds=[refund], updated_at=NOW - DAY))
    worker.work()
    assert shopper(db, 7).total_spent == Decimal("85.00")


def test_refund_before_its_order_is_applied_when_the_order_arrives(client, db, shop, worker):
    post_webhook(client, "refunds/create", s.refund_payload(91, 1, Decimal("10.00"), NOW - DAY))
    worker.work()
    post_webhook(client, "orders/paid", order(1, total="50.00"))
    worker.work()
    assert shopper(db, 7).total_spent == Decimal("40.00")


def test_guest_order_is_stored_without_a_profile(client, db, shop, worker):
    post_webhook(
        client, "orders/paid", s.order_payload(5, None, NOW - DAY, Decimal("9.00"), email="g@example.com")
    )
    worker.work()
    with db.session() as session:
        stored = session.scalar(select(Order))
        assert (stored.order_id, stored.customer_id) == (5, None)
        assert session.scalar(select(Shopper)) is None


def test_order_history_keeps_line_items_and_discount_codes(client, db, shop, worker):
    post_webhook(client, "orders/paid", order(1, discount_codes=["WELCOME10"]))
    worker.work()
    with db.session() as session:
        stored = session.scalar(select(Order))
        assert stored.discount_codes == ["WELCOME10"]
        assert stored.line_items[0]["variant_id"] == 8001


def test_old_last_order_makes_at_risk_then_lapsed(client, db, shop, worker):
    post_webhook(client, "orders/paid", order(1, days_ago=100))
    post_webhook(client, "orders/paid", order(2, customer_id=8, days_ago=200))
    worker.work()
    assert shopper(db, 7).stage == "at_risk"
    assert shopper(db, 8).stage == "lapsed"
    assert "No order for 100 days" in shopper(db, 7).stage_reason


def test_checkout_without_order_makes_engaged_and_the_order_completes_it(client, db, shop, worker):
    post_webhook(
        client, "checkouts/create", s.checkout_payload("tok1", 7, "ann@example.com", NOW - DAY, Decimal("30"))
    )
    worker.work()
    ann = shopper(db, 7)
    assert (ann.stage, ann.checkout_open) == ("engaged", True)
    post_webhook(client, "orders/create", order(1, days_ago=0, checkout_token="tok1"))
    worker.work()
    ann = shopper(db, 7)
    assert (ann.stage, ann.checkout_open) == ("first_time", False)


def test_checkout_arriving_after_its_order_is_not_left_open(client, db, shop, worker):
    post_webhook(client, "orders/create", order(1, days_ago=0, checkout_token="tok2"))
    worker.work()
    post_webhook(
        client, "checkouts/update", s.checkout_payload("tok2", 7, "ann@example.com", NOW - DAY, Decimal("30"))
    )
    worker.work()
    assert shopper(db, 7).checkout_open is False


def test_cart_activity_counts_once_a_checkout_links_the_cart(client, db, shop, worker):
    post_webhook(client, "customers/create", s.customer_payload(7, "ann@example.com", NOW - 100 * DAY))
    post_webhook(client, "carts/create", s.cart_payload("cart1", NOW - 50 * DAY))
    post_webhook(
        client,
        "checkouts/create",
        s.checkout_payload("tok3", 7, "ann@example.com", NOW - 45 * DAY, Decimal(5), cart_token="cart1"),
    )
    worker.work()
    assert shopper(db, 7).stage == "prospect"  # all activity older than 30 days
    post_webhook(client, "carts/update", s.cart_payload("cart1", NOW - 2 * DAY))
    worker.work()
    ann = shopper(db, 7)
    assert (ann.stage, ann.last_cart_at) == ("engaged", NOW - 2 * DAY)


def test_new_customer_is_a_prospect_with_identity(client, db, shop, worker):
    post_webhook(client, "customers/create", s.customer_payload(7, "ann@example.com", NOW - DAY, first="Ann"))
    worker.work()
    ann = shopper(db, 7)
    assert (ann.stage, ann.email, ann.first_name) == ("prospect", "ann@example.com", "Ann")


def test_older_customer_update_does_not_overwrite_newer(client, db, shop, worker):
    post_webhook(
        client, "customers/update", s.customer_payload(7, "new@example.com", NOW - 9 * DAY, NOW - DAY)
    )
    post_webhook(
        client, "customers/update", s.customer_payload(7, "old@example.com", NOW - 9 * DAY, NOW - 5 * DAY)
    )
    worker.work()
    assert shopper(db, 7).email == "new@example.com"


def test_consent_withdrawn_stays_withdrawn_when_an_older_grant_arrives_late(client, db, shop, worker):
    post_webhook(
        client,
        "customers_email_marketing_consent/update",
        s.consent_payload(7, "ann@example.com", "unsubscribed", NOW - DAY),
    )
    post_webhook(
        client,
        "customers_email_marketing_consent/update",
        s.consent_payload(7, "ann@example.com", "subscribed", NOW - 3 * DAY),
    )
    worker.work()
    assert shopper(db, 7).consent_state == "unsubscribed"


def test_consent_without_timestamp_is_ordered_by_trigger_time(client, db, shop, worker):
    post_webhook(
        client,
        "customers_email_marketing_consent/update",
        s.consent_payload(7, "ann@example.com", "subscribed", None),
        triggered_at="2026-10-02T00:00:00Z",
    )
    post_webhook(
        client,
        "customers_email_marketing_consent/update",
        s.consent_payload(7, "ann@example.com", "unsubscribed", None),
        triggered_at="2026-10-01T00:00:00Z",
    )
    worker.work()
    assert shopper(db, 7).consent_state == "subscribed"


def test_tags_follow_the_latest_event_per_tag(client, db, shop, worker):
    post_webhook(client, "customer.tags_added", s.tags_payload(7, ["vip", "newsletter"], NOW - 3 * DAY))
    post_webhook(client, "customer.tags_removed", s.tags_payload(7, ["vip"], NOW - DAY))
    post_webhook(client, "customer.tags_added", s.tags_payload(7, ["vip"], NOW - 2 * DAY))  # late, older
    worker.work()
    assert shopper(db, 7).tags == ["newsletter"]


def test_purchasing_summary_is_kept_beside_our_counts(client, db, shop, worker):
    post_webhook(
        client,
        "customers/purchasing_summary",
        s.purchasing_summary_payload(7, 3, Decimal("120.50"), "EUR", NOW - DAY),
    )
    worker.work()
    ann = shopper(db, 7)
    assert (ann.shopify_orders_count, ann.shopify_amount_spent) == (3, Decimal("120.50"))


def test_customer_delete_marks_the_profile(client, db, shop, worker):
    post_webhook(client, "orders/paid", order(1))
    post_webhook(
        client,
        "customers/delete",
        {
            "id": 7,
            "phone": None,
            "addresses": [],
            "tax_exemptions": [],
            "admin_graphql_api_id": "gid://shopify/Customer/7",
        },
    )
    worker.work()
    assert shopper(db, 7).deleted_at is not None


def test_every_stage_change_is_recorded_as_a_transition(client, db, shop, worker):
    post_webhook(
        client, "checkouts/create", s.checkout_payload("t", 7, "a@example.com", NOW - 3 * DAY, Decimal(5))
    )
    worker.work()
    post_webhook(client, "orders/paid", order(1, days_ago=2))
    worker.work()
    post_webhook(client, "orders/paid", order(2, days_ago=1))
    worker.work()
    with db.session() as session:
        moves = [
            (t.from_stage, t.to_stage, t.cause)
            for t in session.scalars(select(StageTransition).order_by("id"))
        ]
    assert moves == [
        (None, "engaged", "checkouts/create"),
        ("engaged", "first_time", "orders/paid"),
        ("first_time", "repeat", "orders/paid"),
    ]


def test_malformed_body_is_quarantined_with_its_reason(client, db, shop, worker):
    post_webhook(client, "orders/paid", None, body=b"{not json", webhook_id="bad-json")
    post_webhook(client, "orders/paid", {"id": "x"}, webhook_id="bad-shape")
    post_webhook(client, "orders/paid", None, body=b"{\xff\xfe garbage", webhook_id="bad-bytes")
    worker.work()
    result = statuses(db)
    assert result["bad-json"][0] == "quarantined" and "not JSON" in result["bad-json"][1]
    assert result["bad-shape"][0] == "quarantined" and "created_at" in result["bad-shape"][1]
    assert result["bad-bytes"][0] == "quarantined"


def test_webhook_for_a_shop_not_installed_is_acked_and_ignored(client, db, shop, worker):
    response = post_webhook(client, "orders/paid", order(1), shop="other.myshopify.com", webhook_id="w")
    worker.work()
    assert response.status_code == 200
    assert statuses(db)["w"] == ("ignored", "shop is not installed")


def test_compliance_topic_is_recorded_even_for_a_shop_not_installed(client, db, worker):
    post_webhook(
        client,
        "customers/redact",
        s.redact_payload("gone.myshopify.com", 7, "a@example.com", [1]),
        shop="gone.myshopify.com",
        webhook_id="c",
    )
    worker.work()
    assert statuses(db)["c"][0] == "processed"


def test_unknown_topic_is_ignored_with_reason(client, db, shop, worker):
    post_webhook(client, "themes/publish", {"id": 1}, webhook_id="th")
    worker.work()
    assert statuses(db)["th"] == ("ignored", "no handler for topic themes/publish")


def test_uninstall_deactivates_the_shop_and_later_webhooks_are_ignored(client, db, shop, worker):
    post_webhook(client, "app/uninstalled", s.shop_payload(shop.domain), webhook_id="u")
    worker.work()
    post_webhook(client, "orders/paid", order(1), webhook_id="after")
    worker.work()
    assert statuses(db)["after"][0] == "ignored"


def test_inventory_level_keeps_the_previous_value(client, db, shop, worker):
    from plugin.store.models import InventoryLevel

    post_webhook(client, "inventory_levels/update", s.inventory_level_payload(11, 22, 0, NOW - 2 * DAY))
    post_webhook(client, "inventory_levels/update", s.inventory_level_payload(11, 22, 5, NOW - DAY))
    worker.work()
    with db.session() as session:
        level = session.scalar(select(InventoryLevel))
        assert (level.previous_available, level.available) == (0, 5)


def test_products_and_bulk_operations_are_recorded(client, db, shop, worker):
    from plugin.store.models import Product, Shop

    post_webhook(client, "products/create", s.product_payload(7001, "Tee", [(8001, 11)], NOW - DAY))
    post_webhook(client, "bulk_operations/finish", s.bulk_finish_payload(55))
    worker.work()
    with db.session() as session:
        assert session.scalar(select(Product)).variants[0]["inventory_item_id"] == 11
        assert session.scalar(select(Shop)).last_bulk_operation["status"] == "completed"


def test_a_handler_error_is_retried_with_backoff_then_marked_failed(
    client, db, shop, worker, redis_connection, monkeypatch
):
    from plugin import handlers
    from plugin.pipeline.deliveries import MAX_ATTEMPTS
    from plugin.pipeline.tick import run_tick

    def broken(ctx, payload):
        raise RuntimeError("boom")

    # given a handler that always raises
    monkeypatch.setitem(handlers.HANDLERS, "orders/paid", broken)
    post_webhook(client, "orders/paid", order(1), webhook_id="f")
    # when the worker tries it, it waits in the ledger for its retry (not retried at once)
    worker.work()
    assert statuses(db)["f"] == ("received", "RuntimeError: boom")
    worker.work()
    with db.session() as session:
        assert session.scalar(select(Delivery.attempts)) == 1
    # and each later tick past the retry time tries once more, until the last attempt marks it failed
    later = NOW
    for _ in range(MAX_ATTEMPTS - 1):
        later += timedelta(hours=1)
        monkeypatch.setenv("LIFECYCLE_NOW", later.isoformat())
        run_tick(db, redis_connection, later, 300)
        worker.work()
    assert statuses(db)["f"] == ("failed", "RuntimeError: boom")
    with db.session() as session:
        assert session.scalar(select(Delivery.attempts)) == MAX_ATTEMPTS


def test_one_failing_delivery_in_a_batch_does_not_hold_back_the_others(client, db, shop, worker, monkeypatch):
    from plugin import handlers

    real = handlers.HANDLERS["orders/paid"]

    def broken_for_order_3(ctx, payload):
        if payload.id == 3:
            raise RuntimeError("order 3 is cursed")
        return real(ctx, payload)

    # given five orders in one drain batch, the third of which makes its handler raise
    monkeypatch.setitem(handlers.HANDLERS, "orders/paid", broken_for_order_3)
    for order_id in range(1, 6):
        post_webhook(client, "orders/paid", order(order_id, days_ago=order_id), webhook_id=f"o{order_id}")
    worker.work()
    # then the four others are processed and counted, the third waits for its retry with the reason
    found = statuses(db)
    assert [found[f"o{i}"][0] for i in range(1, 6)] == ["processed"] * 2 + ["received"] + ["processed"] * 2
    assert found["o3"][1] == "RuntimeError: order 3 is cursed"
    assert shopper(db, 7).orders_count == 4


def test_time_is_read_from_the_one_clock(client, db, shop, worker, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_NOW", (NOW + 95 * DAY).isoformat())
    post_webhook(client, "orders/paid", order(1, days_ago=0))
    worker.work()
    assert shopper(db, 7).stage == "at_risk"


def test_all_topics_in_the_issue_have_schemas():
    from plugin.shopify.payloads import SCHEMAS

    wanted = """customers/create customers/update customers/delete customers_email_marketing_consent/update
    customers/purchasing_summary customer.tags_added customer.tags_removed orders/create orders/updated orders/paid
    orders/cancelled orders/fulfilled refunds/create fulfillments/create fulfillments/update checkouts/create
    checkouts/update carts/create carts/update inventory_levels/update products/create products/update
    app/uninstalled bulk_operations/finish customers/data_request customers/redact shop/redact""".split()
    assert sorted(set(wanted) - set(SCHEMAS)) == []
