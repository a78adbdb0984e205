"""A database error never carries the row's personal values: not in the delivery's stored reason, not in the
log. Provoked for real: a unique index on shoppers' email (added for this test only) makes a second
customer with the same address fail its insert, on both backends."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, text

from plugin.demo import synthetic as s
from plugin.store.models import Delivery
from tests.conftest import NOW
from tests.webhook_client import post_webhook

EMAIL, FIRST, LAST = "zelda.unique@example.org", "Zeldarine", "Oxbridgeworth"


def test_a_failed_insert_stores_and_logs_no_email_or_name(client, db, shop, worker, caplog):
    with db.engine.begin() as connection:
        connection.execute(text("CREATE UNIQUE INDEX test_only_shopper_email ON shoppers (email)"))
    try:
        for customer_id in (7001, 7002):
            customer = s.customer_payload(customer_id, EMAIL, NOW - timedelta(days=3), first=FIRST, last=LAST)
            assert post_webhook(client, "customers/create", customer).status_code == 200
        with caplog.at_level(logging.INFO):
            worker.work()
    finally:
        with db.engine.begin() as connection:
            connection.execute(text("DROP INDEX test_only_shopper_email"))

    with db.session() as session:
        reasons = [d.reason or "" for d in session.scalars(select(Delivery).order_by(Delivery.id))]
    failed = [r for r in reasons if "IntegrityError" in r]
    assert failed, reasons  # the second insert did fail, and its reason was stored
    logged = caplog.text
    assert "IntegrityError" in logged  # and it was logged, traceback included
    for value in (EMAIL, FIRST, LAST):
        assert value.lower() not in failed[0].lower()
        assert value.lower() not in logged.lower()
