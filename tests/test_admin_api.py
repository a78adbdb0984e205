"""The admin's JSON contract, pinned call by call: what each page's calls refuse (422 with the errors by
field, 404, 409) and what they answer, through HTTP with a real session token."""

from __future__ import annotations

import re

import pytest

from plugin.core.rules import TEMPLATES
from tests.test_install import session_token

NOT_A_TEMPLATE = {"template": [f"Must be one of: {', '.join(TEMPLATES)}."]}


@pytest.fixture
def headers(shop):
    return {"Authorization": f"Bearer {session_token()}"}


def test_every_call_under_app_api_needs_the_session_token(app, client, shop):
    # every route the app serves under /app/api, found in its URL map (a page added later included)
    calls = [
        (
            method,
            rule.rule.replace("<key>", "welcome").replace("<template>", "welcome").replace("<locale>", "en"),
        )
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/app/api/")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
    ]
    assert len(calls) >= 18
    for method, path in calls:
        path = re.sub(r"<[^>]*(shopper_id|run_id)>", "1", path)
        answer = client.open(path, method=method, json={})
        assert answer.status_code == 401 and "session token" in answer.get_json()["error"], (method, path)


@pytest.mark.parametrize(
    ("method", "path", "body", "errors"),
    [
        ("PUT", "/app/api/rules/welcome", {"name": ""}, None),
        ("POST", "/app/api/audience", {}, None),
        (
            "PUT",
            "/app/api/templates/welcome/en",
            {"subject": ""},
            {
                "subject": ["Length must be between 1 and 500."],
                "html": ["Missing data for required field."],
                "text": ["Missing data for required field."],
            },
        ),
        ("POST", "/app/api/preview", {"template": "nope"}, NOT_A_TEMPLATE),
        ("POST", "/app/api/test-send", {"template": "nope"}, NOT_A_TEMPLATE),
        (
            "POST",
            "/app/api/settings/impact",
            {"engaged_days": 0},
            {"engaged_days": ["Must be greater than or equal to 1 and less than or equal to 365."]},
        ),
        ("PUT", "/app/api/settings", {"languages": ["it", "it"]}, {"languages": ["Each language once."]}),
        (
            "PUT",
            "/app/api/settings",
            {"lapsed_days": 60, "at_risk_days": 90},
            {"lapsed_days": ["Must be longer than the at-risk period."]},
        ),
    ],
)
def test_invalid_input_is_refused_with_the_errors_by_field(client, headers, method, path, body, errors):
    answer = client.open(path, method=method, json=body, headers=headers)
    assert answer.status_code == 422
    assert list(answer.get_json()) == ["errors"]
    if errors is None:  # the rule schema's own words: a field or more, each with its messages
        assert answer.get_json()["errors"] and all(answer.get_json()["errors"].values())
    else:
        assert answer.get_json() == {"errors": errors}


def test_a_refused_settings_change_saves_nothing(client, headers):
    before = client.get("/app/api/settings", headers=headers).get_json()
    client.put("/app/api/settings", json={"lapsed_days": 60, "at_risk_days": 90}, headers=headers)
    assert client.get("/app/api/settings", headers=headers).get_json() == before
    saved = client.put("/app/api/settings", json={"lapsed_days": 200, "cap_per_day": 2}, headers=headers)
    assert saved.status_code == 200
    assert saved.get_json() == dict(before, lapsed_days=200, cap_per_day=2)


def test_broken_or_unsafe_wording_is_refused_by_field_and_not_saved(client, headers):
    broken = {"subject": "Hi", "html": "<p>Hi</p>", "text": "{% if %}"}
    refused = client.put("/app/api/templates/welcome/en", json=broken, headers=headers)
    assert refused.status_code == 422 and list(refused.get_json()["errors"]) == ["text"]
    unsafe = {"subject": "Hi", "html": "{{ ''.__class__.__mro__ }}", "text": "Hi"}
    preview = client.post("/app/api/preview", json=dict(unsafe, template="welcome"), headers=headers)
    assert preview.status_code == 422 and list(preview.get_json()["errors"]) == ["html"]
    assert client.get("/app/api/templates/welcome/en", headers=headers).get_json()["custom"] is False


def test_templates_are_saved_read_back_and_reset(client, headers):
    mine = {"subject": "Ciao {{ first_name }}", "html": "<p>Ciao</p>", "text": "Ciao"}
    assert client.put("/app/api/templates/welcome/it", json=mine, headers=headers).get_json() == dict(
        mine, custom=True
    )
    assert client.get("/app/api/templates/welcome/it", headers=headers).get_json() == dict(mine, custom=True)
    preview = client.post("/app/api/preview", json={"template": "welcome", "locale": "it"}, headers=headers)
    assert preview.get_json()["subject"] == "Ciao Ann"
    assert client.delete("/app/api/templates/welcome/it", headers=headers).get_json() == {"custom": False}
    assert client.get("/app/api/templates/welcome/it", headers=headers).get_json()["custom"] is False
    for method in ("GET", "PUT"):
        unknown = client.open("/app/api/templates/welcome/xx", method=method, json=mine, headers=headers)
        assert unknown.status_code == 404 and unknown.get_json() == {"error": "unknown template or locale"}


def test_a_test_send_goes_only_to_the_shops_own_addresses(app, client, headers, smtp):
    # given a shop whose addresses in Shopify are merchant@ and support@example.com (the fake store's)
    # when the merchant asks for a test send to anyone else
    answer = client.post(
        "/app/api/test-send", json={"template": "welcome", "to": "victim@example.org"}, headers=headers
    )
    # then it is refused by the field, naming the addresses it may go to, and nothing is sent
    assert answer.status_code == 422
    assert answer.get_json() == {
        "errors": {
            "to": [
                "Test emails go only to the shop's own addresses in Shopify "
                "(support@example.com or merchant@example.com)."
            ]
        }
    }
    assert smtp.to("victim@example.org") == []
    # and without an address it goes to the shop's contact address
    sent = client.post("/app/api/test-send", json={"template": "welcome"}, headers=headers)
    assert sent.get_json() == {"sent_to": "support@example.com"}
    [mail] = smtp.to("support@example.com")
    # from the app's own sender, as the shop's real emails go (never an address the merchant typed)
    assert mail["From"].addresses[0].addr_spec == app.config["MAIL_FROM"]


def test_test_sends_are_limited_per_shop_and_hour(client, headers, smtp):
    # given ten test sends this hour
    for _ in range(10):
        assert (
            client.post("/app/api/test-send", json={"template": "welcome"}, headers=headers).status_code
            == 200
        )
    # when the merchant asks for an eleventh, then it is refused until the hour is over
    eleventh = client.post("/app/api/test-send", json={"template": "welcome"}, headers=headers)
    assert eleventh.status_code == 429
    assert len(smtp.to("support@example.com")) == 10


def test_unknown_rows_are_404(client, headers):
    switched = client.post("/app/api/rules/nope/enabled", json={"enabled": True}, headers=headers)
    assert switched.status_code == 404 and switched.get_json() == {"error": "no rule nope"}
    assert client.get("/app/api/shoppers/999999", headers=headers).status_code == 404
    assert client.post("/app/api/shoppers/999999/suppress", headers=headers).status_code == 404
    assert client.post("/app/api/runs/999999/resend", headers=headers).status_code == 404


def test_the_admins_data_is_never_cached(client, headers):
    # given a shop's session token, when the admin reads its overview and rules
    for path in ("/app/api/overview", "/app/api/rules"):
        answer = client.get(path, headers=headers)
        # then the answer carries one shop's data and says so: no cache, no sniffing
        assert answer.status_code == 200
        assert answer.headers["Cache-Control"] == "no-store", path
        assert answer.headers["X-Content-Type-Options"] == "nosniff", path
