"""The embedded admin in real headless Chromium (Debian's, driven by Playwright): the overview's chart, a
rule edited with a validation error shown by the field, saved, its audience count changing, a test email
arriving at the SMTP server, and a shopper's timeline. With LIFECYCLE_SCREENSHOTS=DIR it also saves a
screenshot of each page there (docs/ holds the committed ones)."""

from __future__ import annotations

import os
import re
import threading
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlparse

import pytest
from werkzeug.serving import make_server

from plugin.demo import synthetic as s
from tests.conftest import NOW, SHOP
from tests.test_install import session_token
from tests.webhook_client import post_webhook

CHROMIUM = os.environ.get("LIFECYCLE_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("LIFECYCLE_SCREENSHOTS")


@pytest.fixture
def served(app):
    """The app on a real port, as the browser needs."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def browser_page():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Debian's chromium is needed at {CHROMIUM} (apt-get install chromium; .ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def only_loopback(route):
            host = urlparse(route.request.url).hostname
            if host == "cdn.shopify.com":  # App Bridge: not reachable here, and not needed outside the admin
                return route.fulfill(status=200, content_type="text/javascript", body="")
            return route.continue_() if host == "127.0.0.1" else route.abort()

        page.route("**/*", only_loopback)
        yield page
        browser.close()


def shop_with_shoppers(client, worker):
    """Three consenting shoppers with 1, 2 and 3 orders."""
    for customer_id, email, orders in (
        (1, "ann@example.com", 1),
        (2, "bruno@example.com", 2),
        (3, "chiara@example.com", 3),
    ):
        post_webhook(
            client, "customers/create", s.customer_payload(customer_id, email, NOW - timedelta(days=200))
        )
        post_webhook(
            client,
            "customers_email_marketing_consent/update",
            s.consent_payload(customer_id, email, "subscribed", NOW - timedelta(days=200)),
        )
        for n in range(orders):
            order = s.order_payload(
                customer_id * 100 + n,
                customer_id,
                NOW - timedelta(days=20 + n * 30),
                Decimal(60),
                email=email,
            )
            post_webhook(client, "orders/paid", order)
    worker.work()


def shot(page, name: str) -> None:
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SHOTS, f"admin-{name}.png"), full_page=True)


def test_merchant_tunes_a_rule_and_reads_a_timeline(served, browser_page, client, shop, worker, smtp):
    from playwright.sync_api import expect

    shop_with_shoppers(client, worker)
    page = browser_page
    token = session_token(expires_in=3600)
    page.goto(f"{served}/app/?shop={SHOP}&host=YWRtaW4&embedded=1&id_token={token}")

    # the overview: shoppers per stage as a chart, one bar per stage
    expect(page.locator("#stage-chart rect")).to_have_count(7)
    assert page.locator('#stage-chart rect[data-stage="repeat"]').count() == 1
    assert "First-time 1, Repeat 2" in page.locator("#stage-chart").get_attribute(
        "aria-label"
    )  # read out to screen readers
    # stage moves per week as stacked columns, one segment per stage moved into
    assert page.locator("#flow-chart rect[data-week]").count() >= 2
    assert "into Repeat" in page.locator("#flow-chart").get_attribute("aria-label")
    shot(page, "overview")

    # rules: open the thank-you rule; the audience is every consenting shopper
    page.get_by_role("tab", name="Rules").click()
    page.get_by_role("button", name="Edit Thank you").click()
    expect(page.locator("#audience")).to_contain_text("would reach 3 shoppers")

    # a discount above 90 % is refused, and the error shows by the field
    page.fill("#rule-percent", "95")
    page.fill("#rule-days", "14")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#rule-percent-error")).to_contain_text("90")
    expect(page.locator("#rule-saved")).to_have_text("")

    # a valid one saves; limiting to shoppers with 2+ orders changes the audience
    page.fill("#rule-percent", "25")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#rule-saved")).to_have_text("Saved.")
    page.fill("#rule-min-orders", "2")
    expect(page.locator("#audience")).to_contain_text("would reach 2 shoppers")
    # any condition of the vocabulary: and who spent 150 or more → only Chiara (180)
    page.click("#add-condition")
    condition = page.locator("#condition-rows .condition").last
    condition.locator(".c-field").select_option("total_spent")
    condition.locator(".c-op").select_option(">=")
    condition.locator(".c-value").fill("150")
    expect(page.locator("#audience")).to_contain_text("would reach 1 shoppers")
    expect(page.locator("#preview-subject")).to_contain_text("Thank you for your order")
    expect(page.frame_locator("#preview-frame").locator("body")).to_contain_text(
        "25% off"
    )  # the draft's code

    # the merchant's own wording, in Italian, previewed by the real (sandboxed) renderer, then saved
    page.select_option("#preview-locale", "it")
    page.locator("#template-editor summary").click()
    expect(page.locator("#tpl-html")).to_have_value(re.compile(r"\{\{ body \}\}"))  # starts from our layout
    page.fill("#tpl-subject", "Grazie {{ first_name }}!")
    expect(page.locator("#preview-subject")).to_have_text("Grazie Ann!")
    page.fill("#tpl-text", "{{ body }} {{ cycler.__init__.__globals__ }}")  # the sandbox refuses this
    page.click("#tpl-save")
    expect(page.locator("#tpl-saved")).to_have_text("")
    page.fill("#tpl-text", "{{ body }}")
    page.click("#tpl-save")
    expect(page.locator("#tpl-saved")).to_have_text("Saved.")
    shot(page, "rule-editor")

    # a test send reaches the merchant through the real SMTP server
    page.fill("#test-to", "merchant@example.com")
    page.click("#test-send")
    expect(page.locator("#test-result")).to_have_text("Test sent to merchant@example.com")
    [mail] = smtp.to("merchant@example.com")
    assert mail["Subject"] == "[Test] Grazie Ann!"  # the locale and the wording just saved

    # shoppers: search, then a timeline with orders and stage moves with reasons
    page.get_by_role("tab", name="Shoppers").click()
    page.fill("#shopper-search", "chiara")
    page.get_by_role("button", name="Timeline: chiara@example.com").click()
    timeline = page.locator("#timeline li")
    expect(timeline.first).to_be_visible()
    assert timeline.count() >= 5  # 3 orders, stage moves, messages
    expect(page.locator("#timeline")).to_contain_text("first_time → repeat")
    shot(page, "shopper-timeline")

    page.get_by_role("tab", name="Settings").click()
    expect(page.locator("#setting-cap_per_day")).to_have_value("1")
    # loyal from 3 orders instead of 4: the shopper with 3 orders would move, and the page says so first
    page.fill("#setting-loyal_orders", "3")
    expect(page.locator("#settings-impact")).to_contain_text("would move 1 shoppers now: repeat→loyal 1")
    # emails in Italian and English only, Italian for everybody else
    page.get_by_label("Polski").uncheck()
    page.get_by_label("Русский").uncheck()
    page.select_option("#setting-primary-language", "it")
    page.fill("#setting-loyal_orders", "4")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#settings-saved")).to_have_text("Saved.")
    headers = {"Authorization": f"Bearer {session_token()}"}
    assert client.get("/app/api/settings", headers=headers).get_json()["languages"] == ["it", "en"]
    shot(page, "settings")


def test_the_page_refuses_a_forged_token(served, browser_page, shop):
    page = browser_page
    forged = session_token(secret="not-our-secret")
    answer = page.goto(f"{served}/app/?shop={SHOP}&host=YWRtaW4&embedded=1&id_token={forged}")
    # a document request with a bad token is bounced to Shopify's patch page (never the app's data)
    assert "patch-id-token" in page.url
    assert answer.status == 200


def test_merchant_reads_predictions_and_proof(served, browser_page, app, client, db, shop, redis_connection):
    from playwright.sync_api import expect

    from plugin.pipeline.tick import run_tick
    from plugin.store import predictions
    from tests.test_admin_insights import held_out_runs, simulated_store

    # given: a store with a fitted model, stages from the tick, and a win-back with a hold-out group
    simulated_store(db, shop.id, 900)
    predictions.fit_shop(db, shop.id, NOW)
    run_tick(db, redis_connection, NOW, 300)
    held_out_runs(db, shop.id, "win_back", 30, 400, NOW - timedelta(days=40))
    headers = {"Authorization": f"Bearer {session_token()}"}
    api = client.get("/app/api/overview/predictions", headers=headers).get_json()
    page = browser_page
    page.goto(f"{served}/app/?shop={SHOP}&host=YWRtaW4&embedded=1&id_token={session_token(expires_in=3600)}")

    # the overview: the fit plotted week by week, with the holdout totals and the parameters of the API
    holdout = api["model"]["holdout"]
    weeks = [w for w in holdout["weeks"] if w["days"] == 7]  # a last, shorter period is not plotted
    expect(page.locator("#fit-chart circle")).to_have_count(len(weeks))
    last = weeks[-1]
    assert page.locator("#fit-chart circle").last.get_attribute("data-actual") == str(last["actual"])
    expect(page.locator("#holdout-totals")).to_contain_text(
        f"Forecast {holdout['forecast_repeat_orders']}, Actual {holdout['actual_repeat_orders']}"
    )
    expect(page.locator("#bg-nbd")).to_contain_text(f"r {api['model']['bg_nbd']['r']:.3f}")
    # lift per rule with its interval, as a merchant reads it
    win_back = next(row for row in api["lift"] if row["rule"] == "win_back")["lift"]
    lift = f"{'+' if win_back['absolute_lift'] >= 0 else '−'}{abs(win_back['absolute_lift'] * 100):.1f} %"
    expect(page.locator('#lift-card [data-rule="win_back"]')).to_have_text(lift)
    expect(page.locator("#lift-card")).to_contain_text(f"{win_back['incremental_revenue']:.2f}")
    # the predicted value of the at-risk stage
    at_risk = api["at_risk"]
    currency = f" {at_risk['currency']}" if at_risk["currency"] else ""
    assert at_risk["predicted_clv_365d"] > 0
    expect(page.locator("#at-risk-value")).to_have_text(f"{at_risk['predicted_clv_365d']:.2f}{currency}")
    expect(page.locator("#at-risk-count")).to_contain_text(f"{at_risk['shoppers']} At risk")
    shot(page, "insights")

    # a shopper's forecast and the reason for the stage, in words
    page.get_by_role("tab", name="Shoppers").click()
    page.locator("#shopper-results button").first.click()
    expect(page.locator("#prediction")).to_be_visible()
    shopper_id = client.get("/app/api/shoppers?q=", headers=headers).get_json()[0]["id"]
    shopper = client.get(f"/app/api/shoppers/{shopper_id}", headers=headers).get_json()
    expect(page.locator('#prediction [data-field="p_alive"]')).to_have_text(
        f"{round(shopper['p_alive'] * 100)} %"
    )
    expect(page.locator('#prediction [data-field="expected_orders_90d"]')).to_have_text(
        f"{shopper['expected_orders_90d']:.2f}"
    )
    expect(page.locator("#stage-reason")).to_contain_text(shopper["stage_reason"])

    # settings: personal stages off; ticking it says first how many would move
    page.get_by_role("tab", name="Settings").click()
    expect(page.locator("#setting-personal_stages")).not_to_be_checked()
    impact = client.post(
        "/app/api/settings/impact", json={"personal_stages": True}, headers=headers
    ).get_json()
    page.check("#setting-personal_stages")
    expect(page.locator("#settings-impact")).to_contain_text(
        f"would move {impact['would_move']} shoppers now"
    )

    # the rule editor's backtest: the draft rule and the dates go out, the figures and notes come back
    page.get_by_role("tab", name="Rules").click()
    page.get_by_role("button", name="Edit Win-back", exact=True).click()
    expect(page.locator("#backtest-to")).to_have_value("2026-11-01")  # the one clock's day
    page.fill("#rule-delay", "120")
    with page.expect_response(lambda r: r.url.endswith("/app/api/rules/win_back/backtest")) as answered:
        page.get_by_role("button", name="Backtest").click()
    sent, answer = answered.value.request.post_data_json, answered.value.json()
    assert answered.value.status == 200
    assert sent["to"] == "2026-11-01" and sent["rule"]["key"] == "win_back"
    assert sent["rule"]["delay_minutes"] == 120  # the unsaved draft is what is replayed
    assert answered.value.request.headers["authorization"].startswith("Bearer ")
    for figure in ("shoppers_reached", "messages_allowed", "messages_capped"):
        expect(page.locator(f'#backtest-result [data-figure="{figure}"]')).to_have_text(str(answer[figure]))
    expect(page.locator("#backtest-notes")).to_contain_text(answer["notes"][0])
    # an error is shown plainly
    page.fill("#backtest-from", "2026-12-01")
    with page.expect_response(lambda r: r.url.endswith("/backtest")) as refused:
        page.get_by_role("button", name="Backtest").click()
    assert refused.value.status == 422
    expect(page.locator("#backtest-error")).to_have_text(refused.value.json()["error"])
