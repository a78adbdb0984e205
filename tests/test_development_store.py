"""A development store mails only the shop's own addresses (anyone can open one for free)."""

from __future__ import annotations

from sqlalchemy import select

from plugin.demo import synthetic as s
from plugin.store.models import ActionRun
from tests.conftest import NOW
from tests.webhook_client import post_webhook


def signup(client, customer_id: int, email: str) -> None:
    post_webhook(client, "customers/create", s.customer_payload(customer_id, email, NOW))
    post_webhook(
        client,
        "customers_email_marketing_consent/update",
        s.consent_payload(customer_id, email, "subscribed", NOW),
    )


def test_a_development_store_mails_only_its_own_addresses(client, shop, worker, smtp, db, fake_store):
    # given a development store (Shopify's plan says so) whose own addresses are merchant@ and support@
    fake_store.store.shop["plan"]["partnerDevelopment"] = True
    # when a stranger and the shop's owner both sign up with consent
    signup(client, 501, "stranger@example.org")
    signup(client, 502, "merchant@example.com")
    worker.work()
    # then only the owner gets the welcome; the stranger's run fails and says why
    assert smtp.to("stranger@example.org") == []
    assert len(smtp.to("merchant@example.com")) == 1
    with db.session() as session:
        welcomes = {
            r.status: r.skip_reason
            for r in session.scalars(select(ActionRun).where(ActionRun.play == "welcome"))
        }
    assert welcomes == {
        "succeeded": None,
        "failed": "a development store emails only the shop's own addresses",
    }


def test_a_live_store_mails_its_consenting_shoppers(client, shop, worker, smtp):
    # given an ordinary (paying) store, when a shopper signs up with consent, then the welcome goes out
    signup(client, 503, "stranger@example.org")
    worker.work()
    assert len(smtp.to("stranger@example.org")) == 1
