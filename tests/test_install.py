"""Install from the app store, driven from outside: a session token minted as Shopify does (HS256 with the
app secret) opens App Home, which exchanges it at the fake store for an expiring offline token; the token
is refreshed by the one clock, once, even under a race; the code grant works for non-embedded installs;
forged, expired, foreign and unsigned requests are refused."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlparse

import jwt
import pytest
import requests
from sqlalchemy import select

from plugin.crypto import decrypt_token
from plugin.shopify import tokens
from plugin.store.models import Shop
from tests.conftest import API_KEY, NOW, PREVIOUS_SECRET, SECRET, SHOP
from tests.test_compliance import every_value


def session_token(shop=SHOP, secret=SECRET, aud=API_KEY, expires_in=60) -> str:
    now = int(time.time())
    claims = {
        "iss": f"https://{shop}/admin",
        "dest": f"https://{shop}",
        "aud": aud,
        "sub": "42",
        "exp": now + expires_in,
        "nbf": now - 5,
        "iat": now - 5,
        "jti": str(uuid.uuid4()),
        "sid": "session-1",
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def open_app_home(client, token=None, shop=SHOP):
    token = token or session_token(shop)
    return client.get(f"/app/?shop={shop}&host=YWRtaW4&embedded=1&id_token={token}")


def installed_shop(db) -> Shop:
    with db.session() as session:
        return session.scalar(select(Shop).where(Shop.domain == SHOP))


def test_opening_app_home_installs_the_shop_with_an_expiring_offline_token(client, db, fake_store, app):
    page = open_app_home(client)
    assert page.status_code == 200
    assert (
        page.headers["Content-Security-Policy"]
        == f"frame-ancestors https://{SHOP} https://admin.shopify.com;"
    )
    assert f'<meta name="shopify-api-key" content="{API_KEY}">' in page.get_data(as_text=True)
    shop = installed_shop(db)
    assert shop.active and shop.scopes
    assert abs((shop.access_token_expires_at - NOW).total_seconds() - 3600) < 5  # an hour, on our clock
    token = decrypt_token(shop.access_token_encrypted, "test-secret-key")
    assert token in fake_store.store.issued
    assert fake_store.store.grants == ["urn:ietf:params:oauth:grant-type:token-exchange"]
    # tokens are stored encrypted: neither appears in any cell of the database
    refresh = decrypt_token(shop.refresh_token_encrypted, "test-secret-key")
    assert not [v for _, v in every_value(db) if token in v or refresh in v]
    # a second visit reuses the stored token
    assert open_app_home(client).status_code == 200
    assert len(fake_store.store.grants) == 1
    # and the data calls of the page answer with the session token
    status = client.get("/app/api/status", headers={"Authorization": f"Bearer {session_token()}"})
    assert status.status_code == 200 and status.json["installed"] is True


def test_app_home_without_a_token_bounces_to_the_patch_page(client):
    answer = client.get(f"/app/?shop={SHOP}&host=YWRtaW4&embedded=1")
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("http://localhost/app/patch-id-token?")
    bounce = client.get(answer.headers["Location"].removeprefix("http://localhost"))
    assert bounce.status_code == 200 and "app-bridge.js" in bounce.get_data(as_text=True)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing session token (Authorization: Bearer …)"),
        (lambda: session_token(secret="not-our-secret"), "invalid_id_token"),
        (lambda: session_token(expires_in=-60), "expired_id_token"),
        (lambda: session_token(aud="someone-elses-app"), "invalid_aud"),
        (lambda: session_token(shop="stranger.myshopify.com"), "the shop has not installed Lifecycle"),
        (lambda: session_token(shop="evil.example.com"), "the session token names no *.myshopify.com shop"),
    ],
)
def test_data_calls_refuse_bad_session_tokens(client, shop, token, reason):
    headers = {"Authorization": f"Bearer {token()}"} if token else {}
    answer = client.get("/app/api/status", headers=headers)
    assert (answer.status_code, answer.json["error"]) == (401, reason)


def test_a_token_of_one_shop_cannot_read_another(client, shop):
    headers = {"Authorization": f"Bearer {session_token()}"}
    answer = client.get("/app/api/status?shop=other-store.myshopify.com", headers=headers)
    assert (answer.status_code, answer.json["error"]) == (401, "the session token belongs to another shop")


def test_rotated_secret_still_verifies_session_tokens(client, shop):
    headers = {"Authorization": f"Bearer {session_token(secret=PREVIOUS_SECRET)}"}
    assert client.get("/app/api/status", headers=headers).status_code == 200


def test_token_is_refreshed_once_before_it_lapses_even_when_workers_race(
    client, db, fake_store, app, monkeypatch
):
    open_app_home(client)
    shop = installed_shop(db)
    first = decrypt_token(shop.access_token_encrypted, "test-secret-key")
    # 50 minutes on, the token is still good: no refresh
    monkeypatch.setenv("LIFECYCLE_NOW", (NOW + timedelta(minutes=50)).isoformat())
    assert tokens.access_token(db, shop.id, app.config) == first
    # 56 minutes on, inside the margin: four workers ask at once, one refresh happens, all get the new token
    monkeypatch.setenv("LIFECYCLE_NOW", (NOW + timedelta(minutes=56)).isoformat())
    got, errors = [], []

    def ask():
        try:
            got.append(tokens.access_token(db, shop.id, app.config))
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert fake_store.store.grants.count("refresh_token") == 1
    assert len(set(got)) == 1 and got[0] != first and fake_store.store.token_valid(got[0])
    # the refreshed token works against the Admin API
    answer = requests.post(
        f"{fake_store.origin}/admin/api/2026-10/graphql.json",
        json={"query": '{ codeDiscountNodeByCode(code: "NONE") { id } }'},
        headers={"X-Shopify-Access-Token": got[0]},
        timeout=5,
    )
    assert answer.status_code == 200


def test_a_shop_row_read_by_the_caller_gives_its_token_and_a_stale_one_refreshes_once(
    client, db, fake_store, app, monkeypatch
):
    """`run_action` hands `access_token` the shop's row it has just read: a token that needs no refresh
    comes from that row (no second read, no refresh); inside the margin the refresh re-reads the row
    under its lock, so a row read before another worker refreshed does not refresh again."""
    open_app_home(client)
    before = installed_shop(db)
    first = decrypt_token(before.access_token_encrypted, "test-secret-key")
    monkeypatch.setenv("LIFECYCLE_NOW", (NOW + timedelta(minutes=50)).isoformat())
    assert tokens.access_token(db, before.id, app.config, loaded=before) == first
    assert fake_store.store.grants.count("refresh_token") == 0
    monkeypatch.setenv("LIFECYCLE_NOW", (NOW + timedelta(minutes=56)).isoformat())
    renewed = tokens.access_token(db, before.id, app.config, loaded=before)
    assert renewed != first and fake_store.store.token_valid(renewed)
    # `before` still holds the old token and its old expiry: the lock's re-read finds the refresh done
    assert tokens.access_token(db, before.id, app.config, loaded=before) == renewed
    assert fake_store.store.grants.count("refresh_token") == 1


def test_code_grant_install_for_non_embedded_installs(client, db, fake_store, app):
    start = client.get("/auth/install?shop=" + SHOP)
    assert start.status_code == 302
    authorize = start.headers["Location"]
    assert authorize.startswith(fake_store.origin + "/admin/oauth/authorize?")
    assert parse_qs(urlparse(authorize).query)["redirect_uri"] == ["http://127.0.0.1:8000/auth/callback"]
    # the merchant approves at Shopify, which redirects back signed
    back = requests.get(authorize, allow_redirects=False, timeout=5).headers["Location"]
    query = urlparse(back).query
    tampered = query.replace(f"shop={SHOP}", "shop=other-store.myshopify.com")
    assert client.get("/auth/callback?" + tampered).status_code == 401
    done = client.get("/auth/callback?" + query)
    assert done.status_code == 302 and done.headers["Location"] == f"https://{SHOP}/admin/apps/{API_KEY}"
    assert installed_shop(db).refresh_token_encrypted
    # the state is single use: replaying the callback is refused
    assert client.get("/auth/callback?" + query).status_code == 403


@pytest.mark.parametrize("shop", ["", "evil.com", "x.myshopify.com.evil.com", "../etc"])
def test_install_refuses_shops_that_are_not_myshopify_domains(client, shop):
    assert client.get("/auth/install?shop=" + shop).status_code == 400


def test_app_configuration_declares_what_the_app_uses():
    import tomllib
    from pathlib import Path

    from plugin import handlers
    from plugin.shopify import payloads

    config = tomllib.loads((Path(__file__).parent.parent / "shopify.app.toml").read_text())
    assert config["access_scopes"]["scopes"] == tokens.SCOPES
    assert config["webhooks"]["api_version"] == "2026-10"
    [regular, compliance] = config["webhooks"]["subscriptions"]
    # every subscribed topic has a handler, and every handled topic is subscribed (compliance ones apart)
    assert set(regular["topics"]) == set(handlers.HANDLERS) - payloads.COMPLIANCE_TOPICS
    assert set(compliance["compliance_topics"]) == payloads.COMPLIANCE_TOPICS


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/app/api/status"),
        ("GET", "/app/api/overview"),
        ("GET", "/app/api/rules"),
        ("PUT", "/app/api/rules/welcome"),
        ("POST", "/app/api/rules/welcome/enabled"),
        ("POST", "/app/api/audience"),
        ("POST", "/app/api/preview"),
        ("POST", "/app/api/test-send"),
        ("GET", "/app/api/templates/welcome/en"),
        ("PUT", "/app/api/templates/welcome/en"),
        ("GET", "/app/api/shoppers"),
        ("GET", "/app/api/shoppers/1"),
        ("POST", "/app/api/shoppers/1/suppress"),
        ("GET", "/app/api/settings"),
        ("PUT", "/app/api/settings"),
    ],
)
def test_every_admin_call_needs_a_valid_session_token(client, shop, method, path):
    for headers in ({}, {"Authorization": f"Bearer {session_token(secret='forged-secret-of-someone-else')}"}):
        answer = client.open(path, method=method, json={}, headers=headers)
        assert answer.status_code == 401, (method, path, headers)


def test_a_sent_message_cannot_be_resent_a_failed_one_can(client, db, shop):
    from plugin.store.models import ActionRun, RunStatus

    with db.session() as session:
        common = dict(
            shop_id=shop.id, play="welcome", action="send_email", trigger="t", created_at=NOW, due_at=NOW
        )
        sent = ActionRun(cycle="a", idempotency_key="a", status=RunStatus.SUCCEEDED, sent_at=NOW, **common)
        failed = ActionRun(
            cycle="b", idempotency_key="b", status=RunStatus.FAILED, skip_reason="SMTP down", **common
        )
        session.add_all([sent, failed])
        session.flush()
        ids = sent.id, failed.id
    headers = {"Authorization": f"Bearer {session_token()}"}
    refused = client.post(f"/app/api/runs/{ids[0]}/resend", headers=headers, json={})
    assert refused.status_code == 409 and "never sends the same message twice" in refused.json["error"]
    assert client.post(f"/app/api/runs/{ids[1]}/resend", headers=headers, json={}).json == {
        "status": "scheduled"
    }
    with db.session() as session:
        assert session.get(ActionRun, ids[1]).status == "scheduled"


@pytest.mark.parametrize("mac", ["é" * 64, "\u202e", "not-hex", "", "%FF%FE"])
def test_a_malformed_callback_hmac_is_refused_not_a_crash(client, db, mac):
    query = urlencode({"code": "c", "shop": SHOP, "state": "s", "timestamp": "1", "hmac": mac})
    assert client.get("/auth/callback?" + query).status_code == 401
    with db.session() as session:
        assert session.scalar(select(Shop)) is None
