"""Screenshots of the embedded admin for docs/, taken from a running demo store.

    lifecycle demo                      # in another terminal; it prints the admin URL
    .venv/bin/python tools/screenshots.py 'http://127.0.0.1:8000/app/?shop=…&id_token=…' [--out docs]

Debian's chromium through Playwright, as the browser tests drive it; only loopback is reachable.
"""

from __future__ import annotations

import argparse
import os
from urllib.parse import urlparse

from playwright.sync_api import expect, sync_playwright

CHROMIUM = os.environ.get("LIFECYCLE_CHROMIUM", "/usr/bin/chromium")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", help="the admin URL `lifecycle demo` prints")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--search", default="", help="a shopper to open in the timeline (email or name)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    def shot(page, name):
        page.wait_for_timeout(300)
        page.screenshot(path=os.path.join(args.out, f"admin-{name}.png"), full_page=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost")
                else route.fulfill(status=200, content_type="text/javascript", body="")
            ),
        )
        page.goto(args.url)
        expect(page.locator("#stage-chart rect")).to_have_count(7)
        shot(page, "overview")

        page.get_by_role("tab", name="Rules").click()
        page.get_by_role("button", name="Edit Win-back", exact=True).click()
        expect(page.locator("#audience")).to_contain_text("would reach")
        expect(page.locator("#preview-subject")).not_to_be_empty()
        shot(page, "rule-editor")

        page.get_by_role("tab", name="Shoppers").click()
        page.fill("#shopper-search", args.search or "@")
        page.locator("#shopper-results button").first.click()
        expect(page.locator("#timeline li").first).to_be_visible()
        shot(page, "shopper-timeline")

        page.get_by_role("tab", name="Settings").click()
        expect(page.locator("#setting-cap_per_day")).to_be_visible()
        page.fill("#setting-loyal_orders", "3")
        expect(page.locator("#settings-impact")).to_contain_text("would move")
        shot(page, "settings")
        browser.close()


if __name__ == "__main__":
    main()
