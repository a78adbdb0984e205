"""The admin's predictions and proof panels on a demo store, as a PNG for the README.

    .venv/bin/python tools/admin_screenshot.py [--shoppers 600] [--out docs/admin-insights.png]

A store whose shoppers buy as the purchase model assumes (`core.purchase_simulation`, BG/NBD and
Gamma-Gamma, 400 days of history) is posted as the demo's signed webhooks (`plugin.demo.synthetic`)
into a throwaway instance (temporary SQLite, embedded Redis, outbox folder; the demo's fake Admin API
store on loopback) and played through the real pipeline in-process: POST /webhooks, the RQ worker in
burst mode, the tick. Everything up to REPLAY_WEEKS weeks before the end is posted at once; the last
weeks a week at a time with the one clock following, so the tick's stage moves plan win-backs (a share
held out) while the shoppers go on ordering, or not, afterwards. Then the model is fitted, the admin
opens in Debian's headless chromium, and the fit, lift and at-risk cards are saved. The figures the
panels show are printed as JSON. Only loopback is reachable.

(`lifecycle demo`'s own store draws order times uniformly, without the drop-out the model assumes; its
fit runs away, see the report of issue 15.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlparse

import numpy as np
from playwright.sync_api import expect, sync_playwright
from werkzeug.serving import make_server

from plugin import clock, create_app
from plugin.core.purchase_simulation import TrueParameters, simulate_orders
from plugin.demo import synthetic as s
from plugin.demo.command import DEMO_SHOP, DEMO_TOKEN, demo_environment, start_clean
from plugin.demo.fake_store import FakeStore, FakeStoreServer
from plugin.pipeline.tick import tick_app
from plugin.pipeline.worker import run_worker
from plugin.shopify.tokens import development_session_token
from plugin.store import predictions, shops
from plugin.store.models import Rule

log = logging.getLogger("admin_screenshot")
CHROMIUM = os.environ.get("LIFECYCLE_CHROMIUM", "/usr/bin/chromium")
END = "2026-11-01T12:00:00+00:00"  # a fixed end, so the picture is the same on every run
REPLAY_WEEKS = 10
HELD_OUT = {"win_back": 30}  # percent of the play's eligible shoppers held out
HISTORY_DAYS = 400
# Weekly-ish buyers who drop out after a handful of orders, spending about 40 EUR an order.
TRUTH = TrueParameters(r=0.8, alpha=40.0, a=0.6, b=5.0, p=6.0, q=4.0, gamma=22.0)
SUBSCRIBED_SHARE = 0.7
PANELS = ("#model-card", "#lift-card", "#at-risk-card")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shoppers", type=int, default=600)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="docs/admin-insights.png")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    instance = tempfile.mkdtemp(prefix="lifecycle-screenshot-")
    os.environ["LIFECYCLE_INSTANCE_PATH"] = instance
    os.environ.pop("DATABASE_URL", None)  # the throwaway instance's own SQLite and embedded Redis
    os.environ.pop("REDIS_URL", None)
    demo_environment()
    with FakeStoreServer(FakeStore(access_token=DEMO_TOKEN)) as fake:
        os.environ["SHOPIFY_ADMIN_ORIGIN"] = fake.origin
        end = clock.parse_instant(END)
        clock.pin(end - timedelta(weeks=REPLAY_WEEKS))
        app = create_app()
        build_store(app, args.shoppers, args.seed, end)
        figures = panel_figures(app)
        take_screenshot(app, args.out)
    log.warning("saved %s (instance %s)", args.out, instance)
    print(json.dumps(figures, indent=2))  # noqa: T201 (the figures for the README)


def store_events(shopper_count: int, seed: int, end: datetime) -> list[tuple[datetime, str, dict]]:
    """Every webhook of the simulated store, as (when, topic, payload), in time order."""
    rng = np.random.default_rng(seed)
    end_day = (end.date() - datetime(1970, 1, 1, tzinfo=UTC).date()).days - 1
    orders = simulate_orders(
        rng,
        TRUTH,
        shoppers=shopper_count,
        first_day=end_day - HISTORY_DAYS,
        acquisition_days=HISTORY_DAYS - 60,
        end_day=end_day,
        cancelled_share=0.04,
    )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    events, seen = [], set()
    for n, (shopper, day, net, kept) in enumerate(
        zip(
            orders.shopper.tolist(),
            orders.day.tolist(),
            orders.net.tolist(),
            orders.kept.tolist(),
            strict=True,
        )
    ):
        customer_id, email = 7_000_000_000 + shopper, f"buyer{shopper}@example.com"
        placed = epoch + timedelta(
            days=day, hours=9 + int(rng.integers(0, 11)), minutes=int(rng.integers(0, 60))
        )
        if shopper not in seen:
            seen.add(shopper)
            joined = placed - timedelta(hours=1)
            state = "subscribed" if rng.random() < SUBSCRIBED_SHARE else "not_subscribed"
            events.append((joined, "customers/create", s.customer_payload(customer_id, email, joined)))
            events.append(
                (
                    joined,
                    "customers_email_marketing_consent/update",
                    s.consent_payload(customer_id, email, state, joined),
                )
            )
        total = Decimal(f"{max(net, 1.0):.2f}")
        cancelled = None if kept else placed + timedelta(hours=2)
        body = s.order_payload(
            customer_id * 1000 + n, customer_id, placed, total, email=email, cancelled_at=cancelled
        )
        events.append((placed, "orders/paid", body))
    return sorted(events, key=lambda event: event[0])


def build_store(app, shopper_count: int, seed: int, end: datetime) -> None:
    """Post the store, the last weeks a week at a time with the clock following; then fit."""
    db = app.extensions["lifecycle.db"]
    start_clean(db, app.config["OUTBOX"], app.config["SECRET_KEY"])
    with db.session() as session:
        shop = shops.get_shop(session, DEMO_SHOP)
        for rule in session.query(Rule).filter(Rule.shop_id == shop.id, Rule.key.in_(HELD_OUT)):
            rule.definition = dict(rule.definition, holdout_percent=HELD_OUT[rule.key])
        shop_id = shop.id
    events = store_events(shopper_count, seed, end)
    client, secret = app.test_client(), os.environ["SHOPIFY_API_SECRET"]
    posted = 0
    for week in range(REPLAY_WEEKS + 1):
        now = end - timedelta(weeks=REPLAY_WEEKS - week)
        clock.pin(now)
        due = [event for event in events[posted:] if event[0] <= now]
        for number, (at, topic, payload) in enumerate(due, start=posted):
            body = s.encode(payload)
            headers = s.webhook_headers(
                topic, DEMO_SHOP, f"shot-{number}", body, secret, triggered_at=s.iso(at)
            )
            assert client.post("/webhooks", data=body, headers=headers).status_code == 200
        posted += len(due)
        started = time.monotonic()
        run_worker(app, burst=True)
        worked = time.monotonic()
        tick_app(app)
        run_worker(app, burst=True)
        log.warning(
            "%s: %d webhooks; worker %.1f s, tick and worker %.1f s",
            now.date(),
            len(due),
            worked - started,
            time.monotonic() - worked,
        )
    predictions.fit_shop(db, shop_id, clock.now())


def panel_figures(app) -> dict:
    """What the panels show, from the admin's own call."""
    token = development_session_token(app.config, DEMO_SHOP)
    answer = app.test_client().get(
        "/app/api/overview/predictions", headers={"Authorization": f"Bearer {token}"}
    )
    body = answer.get_json()
    body["model"].get("holdout", {}).pop("weeks", None)
    return body


def take_screenshot(app, out: str) -> None:
    """Open the admin in headless chromium and save the fit, lift and at-risk cards."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = development_session_token(app.config, DEMO_SHOP)
    url = f"http://127.0.0.1:{server.server_port}/app/?shop={DEMO_SHOP}&host=ZGVtbw&id_token={token}"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
            page.route("**/*", only_loopback)
            page.goto(url)
            expect(page.locator("#fit-chart circle").first).to_be_visible()
            expect(page.locator("#lift-card table")).to_be_visible()
            page.evaluate(  # only the three panels in the picture
                "ids => document.querySelectorAll('.card')"
                ".forEach(c => { c.hidden = !ids.includes('#' + c.id); })",
                list(PANELS),
            )
            boxes = [page.locator(panel).bounding_box() for panel in PANELS]
            left, top = min(b["x"] for b in boxes), min(b["y"] for b in boxes)
            right = max(b["x"] + b["width"] for b in boxes)
            bottom = max(b["y"] + b["height"] for b in boxes)
            os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
            page.screenshot(
                path=out,
                full_page=True,
                clip={"x": left - 8, "y": top - 8, "width": right - left + 16, "height": bottom - top + 16},
            )
            browser.close()
    finally:
        server.shutdown()


def only_loopback(route) -> None:
    """Loopback only; App Bridge's script (not needed outside the Shopify admin) is answered empty."""
    host = urlparse(route.request.url).hostname
    if host in ("127.0.0.1", "localhost"):
        route.continue_()
    elif host == "cdn.shopify.com":
        route.fulfill(status=200, content_type="text/javascript", body="")
    else:
        route.abort()


if __name__ == "__main__":
    main()
