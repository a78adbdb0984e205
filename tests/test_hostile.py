"""10,000 generated hostile requests against every door of the app: POST /webhooks, the app proxy, the
unsubscribe links and the admin API. No answer is a 500, nothing unsigned is stored, and every signed,
well-formed delivery is processed (the bad ones quarantined with a reason; the worker never crashes).

Seeded, so a failure replays; Flask's test client, so it runs in seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from datetime import timedelta
from decimal import Decimal
from urllib.parse import quote, urlencode

from sqlalchemy import select

from plugin.demo import synthetic as s
from plugin.demo.synthetic import encode, sign, webhook_headers
from plugin.store.models import Delivery
from tests.conftest import NOW, SECRET, SHOP
from tests.test_install import session_token

SEED, REQUESTS = 20261101, 10_000

ODD_TEXT = [
    "",
    "\u0000",
    "a\u0000b",
    "\ud800",
    "\u202eevil",
    "𝕳𝖔𝖘𝖙𝖎𝖑𝖊",
    "é" * 300,
    "💥" * 50,
    "'; DROP TABLE shops; --",
    "%s%s%n",
    "{{ 7*7 }}",
    "x" * 5000,
    " ",
    "\r\n",
]
ODD_NUMBERS = [
    0,
    -1,
    2**63,
    2**64,
    -(2**63),
    10**30,
    1e308,
    -1e-308,
    True,
    False,
    None,
    "12",
    "²",
    "١٢٣",
    "9" * 5000,
]
ODD_INSTANTS = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-13-45", "yesterday", 1, None]
RAW_NUMBERS = [b"1e999999", b"-1e999999", b"9" * 5000, b"NaN", b"Infinity", b"-0", b"1E+400"]


def hostile_value(rng: random.Random):
    """One value of a wrong type, out of range, or in odd Unicode."""
    pool = rng.choice((ODD_TEXT, ODD_NUMBERS, ODD_INSTANTS, [[], {}, [[[]]], {"a": {"b": None}}]))
    return rng.choice(pool)


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(6 if depth < 4 else 3)
    if kind == 0:
        return hostile_value(rng)
    if kind == 1:
        return rng.randint(-(10**20), 10**20)
    if kind == 2:
        return rng.choice(ODD_TEXT)
    if kind == 3:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        rng.choice(ODD_TEXT + ["id", "shop_domain", "customer"]): random_json(rng, depth + 1)
        for _ in range(3)
    }


def real_payloads(rng: random.Random) -> list[tuple[str, dict]]:
    """Well-formed bodies of the installed shop (never a destructive one: those are tested elsewhere)."""
    n = rng.randrange(1, 10**6)
    at = NOW - timedelta(days=rng.randrange(1, 400))
    email = f"shopper{n}@example.com"
    return [
        ("customers/create", s.customer_payload(n, email, at)),
        ("customers_email_marketing_consent/update", s.consent_payload(n, email, "subscribed", at)),
        ("orders/paid", s.order_payload(n, n % 500 + 1, at, Decimal("19.90"), email=email)),
        ("orders/create", s.order_payload(n, n % 500 + 1, at, Decimal("5.00"), email=email)),
        ("checkouts/create", s.checkout_payload(f"tok-{n}", n % 500 + 1, email, at, Decimal(25))),
        ("inventory_levels/update", s.inventory_level_payload(n, 1, rng.randrange(0, 9), at)),
        ("products/update", s.product_payload(n, "Linen shirt", [(n, n + 1)], at)),
        ("customers/data_request", dict(s.redact_payload(SHOP, n, email, []), data_request={"id": n})),
    ]


def mutate(rng: random.Random, payload):
    """Replace one value somewhere in the payload with a hostile one (the body still fits its topic's
    shape more or less: right keys, wrong values)."""
    if isinstance(payload, dict) and payload:
        key = rng.choice(list(payload))
        if isinstance(payload[key], dict | list) and rng.random() < 0.5:
            return {**payload, key: mutate(rng, payload[key])}
        return {**payload, key: hostile_value(rng)}
    if isinstance(payload, list) and payload:
        index = rng.randrange(len(payload))
        return [*payload[:index], mutate(rng, payload[index]), *payload[index + 1 :]]
    return hostile_value(rng)


def hostile_body(rng: random.Random) -> bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return encode(random_json(rng))
    if kind == 1:  # truncated JSON
        whole = encode(rng.choice(real_payloads(rng))[1])
        return whole[: rng.randrange(len(whole))]
    if kind == 2:  # deep nesting, now and then 100,000 levels
        depth = 100_000 if rng.random() < 0.05 else rng.randrange(100, 3000)
        return b'{"id":' + b"[" * depth + b"]" * depth + b"}"
    if kind == 3:  # huge and special numbers, as raw JSON
        return b'{"id": %s, "created_at": "2026-10-01T00:00:00Z"}' % rng.choice(RAW_NUMBERS)
    if kind == 4:  # bytes that are not UTF-8, or not JSON at all
        return rng.choice(
            [b"{\xff\xfe}", b"\x00\x01", b"[]", b"null", bytes(rng.randrange(256) for _ in range(40))]
        )
    if kind == 5:  # duplicated keys: the last one wins in the parser
        return b'{"id": 1, "id": "gid://shopify/Order/x", "created_at": "2026-10-01T00:00:00Z"}'
    return encode(mutate(rng, rng.choice(real_payloads(rng))[1]))


def bad_signature(rng: random.Random, body: bytes) -> str:
    good = sign(body, SECRET)
    return rng.choice(
        [
            "é" * 44,
            good[:-4],
            good.lower(),
            hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),  # hex, not base64
            sign(body, "someone-elses-secret"),
            good + "==",
            " " + good,
            "\u202e" + good[1:],
            "",
        ]
    )


def post_webhook_request(rng: random.Random, client, n: int, ledger: dict) -> int:
    """One webhook: signed and well-formed, signed and hostile, or unsigned/forged, with odd headers."""
    webhook_id = f"hostile-{n}"
    roll = rng.random()
    if roll < 0.25:
        topic, payload = rng.choice(real_payloads(rng))
        body, signed, clean = encode(payload), True, True
    elif roll < 0.6:
        topic = rng.choice(
            ["orders/paid", "customers/update", "checkouts/update", "customers/redact", "themes/x"]
        )
        body, signed, clean = hostile_body(rng), True, False
    else:
        topic = rng.choice(["orders/paid", "app/uninstalled", "shop/redact", "customers/redact"])
        body, signed, clean = hostile_body(rng), False, False
    headers = webhook_headers(topic, SHOP, webhook_id, body, SECRET)
    if not signed:
        headers["X-Shopify-Hmac-Sha256"] = bad_signature(rng, body)
    pairs = list(headers.items())
    if rng.random() < 0.1:  # a header missing
        pairs.pop(rng.randrange(len(pairs)))
        clean = False
    if rng.random() < 0.1:  # a header twice, with another value
        name, _ = rng.choice(pairs)
        pairs.append((name, rng.choice(ODD_TEXT[4:8])))
        clean = False
    if not clean and signed and rng.random() < 0.1:  # headers with odd values
        pairs = [(k, rng.choice(ODD_TEXT[4:8]) if k == "X-Shopify-Triggered-At" else v) for k, v in pairs]
    response = client.post("/webhooks", data=body, headers=pairs)
    ledger[webhook_id] = (signed, clean and response.status_code == 200)
    return response.status_code


def proxy_request(rng: random.Random, client, n: int) -> int:
    params = {
        "shop": rng.choice([SHOP, "other.myshopify.com", "é.myshopify.com"]),
        "logged_in_customer_id": str(rng.choice(ODD_NUMBERS)),
        "path_prefix": "/apps/lifecycle",
        "timestamp": str(int(time.time())),
    }
    message = "".join(f"{k}={v}" for k, v in sorted(params.items()))
    good = hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()
    params["signature"] = good if rng.random() < 0.5 else rng.choice(["é" * 64, good.upper(), good[:10], ""])
    form = rng.choice(
        [
            {"email": rng.choice(ODD_TEXT + ["zoe@example.com"]), "variant_id": rng.choice(ODD_NUMBERS)},
            random_json(rng),
        ]
    )
    body = encode(form) if rng.random() < 0.8 else hostile_body(rng)
    ip = f"198.51.{n % 250}.{rng.randrange(250)}"
    return client.post(
        "/proxy/back-in-stock?" + urlencode(params),
        data=body,
        headers={"Content-Type": "application/json", "X-Forwarded-For": ip},
    ).status_code


def unsubscribe_request(rng: random.Random, client) -> int:
    token = rng.choice(ODD_TEXT[5:] + ["x.y", "eyJhIjoxfQ.abc", "..", "%00", "a" * 3000]) or "x"
    method = rng.choice(["GET", "POST"])
    return client.open("/unsubscribe/" + quote(token, safe=""), method=method).status_code


ADMIN_CALLS = [
    ("GET", "/app/api/overview"),
    ("GET", "/app/api/rules"),
    ("PUT", "/app/api/rules/welcome"),
    ("PUT", "/app/api/rules/{odd}"),
    ("POST", "/app/api/rules/welcome/enabled"),
    ("POST", "/app/api/audience"),
    ("POST", "/app/api/preview"),
    ("GET", "/app/api/templates/welcome/en"),
    ("PUT", "/app/api/templates/welcome/{odd}"),
    ("GET", "/app/api/shoppers?q={odd}"),
    ("GET", "/app/api/shoppers/{number}"),
    ("POST", "/app/api/shoppers/{number}/suppress"),
    ("POST", "/app/api/runs/{number}/resend"),
    ("GET", "/app/api/settings"),
    ("POST", "/app/api/settings/impact"),
    ("PUT", "/app/api/settings"),
]


def admin_request(rng: random.Random, client, token: str | None) -> int:
    method, path = rng.choice(ADMIN_CALLS)
    path = path.format(
        odd=quote(rng.choice(ODD_TEXT[4:10]), safe=""),
        number=rng.choice(["1", "0", str(2**64), "99999999999999999999"]),
    )
    headers = {}
    choice = rng.random()
    if token and choice < 0.7:
        headers["Authorization"] = f"Bearer {token}"
    elif choice < 0.85:
        headers["Authorization"] = rng.choice(["Bearer é", "Bearer " + "a" * 5000, "Basic x", "Bearer a.b.c"])
    body = encode(mutate(rng, {"enabled": True, "delay_hours": 2, "cap_per_day": 1, "text": "x"}))
    if rng.random() < 0.3:
        body = hostile_body(rng)
    return client.open(
        path, method=method, data=body, headers={**headers, "Content-Type": "application/json"}
    ).status_code


def answer(n, rng, client, ledger, token, door) -> tuple[str, int | str]:
    """(door, status), or (door, the exception's name) when the app raised: a 500 in production."""
    name = "webhook" if door < 0.5 else "proxy" if door < 0.65 else "unsubscribe" if door < 0.75 else "admin"
    try:
        if name == "webhook":
            return name, post_webhook_request(rng, client, n, ledger)
        if name == "proxy":
            return name, proxy_request(rng, client, n)
        if name == "unsubscribe":
            return name, unsubscribe_request(rng, client)
        return name, admin_request(rng, client, token)
    except Exception as error:  # noqa: BLE001 - the test reports every crash at once
        return name, f"{type(error).__name__}: {str(error)[:120]}"


def test_hostile_requests_get_no_500_store_nothing_unsigned_and_process_every_signed_one(
    client, db, shop, worker, fake_store
):
    # the fake store's cost bucket is made deep: the runs the deliveries plan (stage write-backs) then
    # run at once instead of waiting out a real store's throttle
    fake_store.store.control({"maximum": 10**9, "available": 10**9, "restore_rate": 10**9})
    rng = random.Random(SEED)
    ledger: dict[str, tuple[bool, bool]] = {}
    token = None  # with a valid session token: test_hostile_admin_calls_with_a_session_token below
    answers: list[tuple[str, int]] = []
    for n in range(REQUESTS):
        door = rng.random()
        answers.append(answer(n, rng, client, ledger, token, door))
    # then no door answered 500 (the test client re-raises what would have been one: counted as 500)
    crashes = sorted(
        {(door, status) for door, status in answers if not isinstance(status, int) or status >= 500}
    )
    assert crashes == [], "\n".join(map(str, crashes))
    # and nothing unsigned was stored
    worker.work()
    with db.session() as session:
        stored = {d.webhook_id: (d.status, d.reason) for d in session.scalars(select(Delivery))}
    unsigned = [webhook_id for webhook_id in stored if not ledger.get(webhook_id, (False, False))[0]]
    assert unsigned == []
    # and every signed, well-formed delivery was processed; the rest settled (quarantined with a reason)
    clean = [webhook_id for webhook_id, (_, ok) in ledger.items() if ok]
    assert len(clean) > 500
    assert {
        webhook_id: stored[webhook_id] for webhook_id in clean if stored[webhook_id][0] != "processed"
    } == {}
    unsettled = {k: v for k, v in stored.items() if v[0] not in ("processed", "ignored", "quarantined")}
    assert unsettled == {}
    assert all(reason for status, reason in stored.values() if status == "quarantined")
    assert json.dumps(sorted({status for status, _ in stored.values()}))


def test_hostile_admin_calls_with_a_session_token_get_no_500(client, db, shop):
    rng, token = random.Random(SEED + 1), session_token(expires_in=3600)
    answers = [answer(n, rng, client, {}, token, 0.9) for n in range(2000)]
    crashes = sorted({status for _, status in answers if not isinstance(status, int) or status >= 500})
    assert crashes == [], "\n".join(crashes)
