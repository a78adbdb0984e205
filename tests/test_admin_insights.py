"""The admin's predictions and proof through HTTP with a real session token, on a simulated store of real
rows: the model's fit with its holdout check (the numbers `lifecycle predict` prints, computed once per
fit), lift per rule (as `lifecycle lift --json`), the at-risk stage's predicted value, a shopper's
forecast (as `lifecycle customers --json`), and the personal-stages setting whose preview the tick keeps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import delete, func, insert, select, update

from admin.forecasts import holdout_key
from plugin.core.purchase_simulation import simulate_orders
from plugin.core.rules import is_held_out
from plugin.pipeline.tick import run_tick
from plugin.store import predictions
from plugin.store.models import ActionRun, Order, Rule, RunStatus, Shop, Shopper, ShopperPrediction
from tests.conftest import NOW, SHOP
from tests.test_install import session_token
from tests.test_predictions import TRUTH, store_orders

YESTERDAY = (NOW.date() - predictions.EPOCH).days - 1  # the cutoff day of a fit at NOW


@pytest.fixture
def headers(shop):
    return {"Authorization": f"Bearer {session_token()}"}


def simulated_store(db, shop_id: int, shoppers: int, seed: int = 3) -> None:
    """A shop's orders drawn from BG/NBD + Gamma-Gamma over 400 days to yesterday, its shoppers' facts
    recounted from them in one pass (as the pipeline keeps them)."""
    orders = simulate_orders(
        np.random.default_rng(seed),
        TRUTH,
        shoppers=shoppers,
        first_day=YESTERDAY - 400,
        acquisition_days=250,
        end_day=YESTERDAY,
        cancelled_share=0.05,
    )
    store_orders(db, shop_id, orders)
    with db.session() as session:
        facts = session.execute(
            select(
                Order.customer_id,
                func.count(Order.id),
                func.sum(Order.total_price - Order.refunded),
                func.min(Order.placed_at),
                func.max(Order.placed_at),
            )
            .where(Order.shop_id == shop_id, Order.cancelled_at.is_(None))
            .group_by(Order.customer_id)
        ).all()
        ids = dict(
            session.execute(select(Shopper.customer_id, Shopper.id).where(Shopper.shop_id == shop_id)).all()
        )
        session.execute(
            update(Shopper),
            [
                {
                    "id": ids[customer],
                    "orders_count": count,
                    "total_spent": spent,
                    "currency": "EUR",
                    "first_order_at": first,
                    "last_order_at": last,
                }
                for customer, count, spent, first, last in facts
            ],
        )


@pytest.fixture
def fitted(db, shop, redis_connection):
    """A store of 900 simulated shoppers, fitted at NOW, staged by the tick (fixed thresholds)."""
    simulated_store(db, shop.id, 900)
    fit = predictions.fit_shop(db, shop.id, NOW)
    assert fit.reason is None
    run_tick(db, redis_connection, NOW, 300)
    return fit


def held_out_runs(db, shop_id: int, key: str, percent: int, runs: int, due_at: datetime) -> None:
    """Past runs of rule `key` (given `percent` % held out) for the shop's first `runs` buyers, the split
    made as `core.rules` makes it (by idempotency key)."""
    with db.session() as session:
        rule = session.scalar(select(Rule).where(Rule.shop_id == shop_id, Rule.key == key))
        rule.definition = dict(rule.definition, holdout_percent=percent)
        shoppers = session.scalars(
            select(Shopper.id)
            .where(Shopper.shop_id == shop_id, Shopper.orders_count > 0)
            .order_by(Shopper.id)
        ).all()[:runs]
        rows = []
        for shopper_id in shoppers:
            idempotency = f"{key}:{shopper_id}:backfilled"
            held = is_held_out(idempotency, percent)
            rows.append(
                {
                    "shop_id": shop_id, "rule_id": rule.id, "play": key, "action": "send_email",
                    "shopper_id": shopper_id, "cycle": "1", "idempotency_key": idempotency,
                    "trigger": "stage:at_risk", "context": {}, "params": {},
                    "status": RunStatus.HELD_OUT if held else RunStatus.SUCCEEDED,
                    "created_at": due_at, "due_at": due_at, "sent_at": None if held else due_at,
                }
            )  # fmt: skip
        session.execute(insert(ActionRun), rows)


def test_overview_shows_the_fit_and_the_holdout_check_lifecycle_predict_prints(client, headers, fitted, run):
    # given: the fit `lifecycle predict` makes now, and its holdout check
    printed = json.loads(run("predict", "--shop", SHOP, "--json"))
    # when
    answer = client.get("/app/api/overview/predictions", headers=headers)
    # then: the same parameters and holdout totals, and the weeks the plot draws add up to them
    assert answer.status_code == 200
    model = answer.get_json()["model"]
    holdout = model.pop("holdout")
    weeks = holdout.pop("weeks")
    assert model == {k: v for k, v in printed.items() if k != "holdout"}
    assert holdout == printed["holdout"]
    assert model["fitted"] and model["repeat_buyers"] >= 100
    held = [w for w in weeks if w["holdout"]]
    assert held and sum(w["actual"] for w in held) == holdout["actual_repeat_orders"]
    assert all(w["week_end"] > holdout["calibration_end_day"] for w in held)
    assert sum(w["forecast"] for w in weeks) > 0


def test_the_holdout_check_is_computed_once_per_fit(client, headers, db, shop, fitted, redis_connection):
    # given: the overview was opened once after the fit
    first = client.get("/app/api/overview/predictions", headers=headers).get_json()["model"]
    assert redis_connection.get(holdout_key(fitted.id)) is not None
    # when: the orders change under it (as they would not, but a recomputation would show it)
    with db.session() as session:
        session.execute(delete(Order).where(Order.shop_id == shop.id))
    again = client.get("/app/api/overview/predictions", headers=headers).get_json()["model"]
    # then: the check is the one kept with the fit, not refitted on this page load
    assert again["holdout"] == first["holdout"]
    # and a new fit is reported as it is (here: no orders left, so not fitted, and no check)
    refit = predictions.fit_shop(db, shop.id, NOW)
    newest = client.get("/app/api/overview/predictions", headers=headers).get_json()["model"]
    assert refit.id != fitted.id and "holdout" not in newest
    assert newest["reason"] == refit.reason == "0 days of order history, the model needs at least 90"


def test_lift_per_rule_is_what_lifecycle_lift_says(client, headers, db, shop, fitted, run):
    # given: the win-back ran 40 days ago for 400 buyers, 30 % held out; the thank-you for 20
    held_out_runs(db, shop.id, "win_back", 30, 400, NOW - timedelta(days=40))
    held_out_runs(db, shop.id, "thank_you", 50, 20, NOW - timedelta(days=40))
    # when
    lift = client.get("/app/api/overview/predictions", headers=headers).get_json()["lift"]
    # then: the CLI's JSON, rule by rule, with an interval for the win-back and "not yet" for the other
    assert lift == json.loads(run("lift", "--shop", SHOP, "--json"))
    by_rule = {row["rule"]: row for row in lift}
    win_back = by_rule["win_back"]
    assert win_back["sent"]["runs"] + win_back["held_out"]["runs"] == 400
    assert win_back["lift"]["low"] <= win_back["lift"]["absolute_lift"] <= win_back["lift"]["high"]
    assert by_rule["thank_you"]["lift"] is None
    assert by_rule["thank_you"]["reason"].startswith("not enough data yet")


def test_the_at_risk_stage_is_valued_by_its_shoppers_forecasts(client, headers, db, shop, fitted):
    # given: the shoppers the tick put at risk, and their stored forecasts
    with db.session() as session:
        values = session.scalars(
            select(ShopperPrediction.predicted_clv_365d)
            .join(Shopper, Shopper.id == ShopperPrediction.shopper_id)
            .where(Shopper.shop_id == shop.id, Shopper.stage == "at_risk")
        ).all()
        at_risk = session.scalar(
            select(func.count(Shopper.id)).where(Shopper.shop_id == shop.id, Shopper.stage == "at_risk")
        )
    # when
    answer = client.get("/app/api/overview/predictions", headers=headers).get_json()["at_risk"]
    # then
    assert at_risk > 0 and answer["shoppers"] == at_risk and answer["with_forecast"] == len(values)
    assert answer["predicted_clv_365d"] == pytest.approx(sum(v or 0 for v in values), abs=0.01)
    assert answer["predicted_clv_365d"] > 0


def test_a_shoppers_forecast_is_the_one_lifecycle_customers_prints(client, headers, db, shop, fitted, run):
    # given: a repeat buyer with a forecast
    with db.session() as session:
        shopper = session.scalars(
            select(Shopper).where(Shopper.shop_id == shop.id, Shopper.orders_count >= 3).order_by(Shopper.id)
        ).first()
    printed = {row["id"]: row for row in json.loads(run("customers", "--shop", SHOP, "--json"))}
    # when
    answer = client.get(f"/app/api/shoppers/{shopper.id}", headers=headers).get_json()
    # then: the four forecast fields under the same names, and the stage's reason in words
    expected = printed[shopper.customer_id]
    for name in ("p_alive", "expected_orders_90d", "predicted_next_order_at", "predicted_clv_365d"):
        assert answer[name] == expected[name], name
    assert answer["p_alive"] is not None and answer["forecast_missing"] is None
    assert answer["stage_reason"] == expected["stage_reason"] and "order" in answer["stage_reason"]


def test_a_thin_shop_says_why_it_has_no_forecasts(client, headers, db, shop):
    # given: no fit at all yet
    assert client.get("/app/api/overview/predictions", headers=headers).get_json()["model"] == {
        "fitted": False,
        "reason": "not fitted yet: the model is fitted once a day, from the stored orders",
    }
    # when: 60 shoppers are fitted, too few repeat buyers for the model
    simulated_store(db, shop.id, 60)
    predictions.fit_shop(db, shop.id, NOW)
    model = client.get("/app/api/overview/predictions", headers=headers).get_json()["model"]
    with db.session() as session:
        shopper_id = session.scalars(select(Shopper.id).where(Shopper.shop_id == shop.id)).first()
    shopper = client.get(f"/app/api/shoppers/{shopper_id}", headers=headers).get_json()
    # then: the overview and the shopper both say why, in the model's words
    assert not model["fitted"] and "repeat buyers, the model needs at least 100" in model["reason"]
    assert shopper["p_alive"] is None
    assert shopper["forecast_missing"] == f"not fitted: {model['reason']}"


def test_personal_stages_are_off_by_default_and_the_preview_is_what_the_tick_moves(
    client, headers, db, shop, fitted, redis_connection
):
    # given: the setting as installed
    assert client.get("/app/api/settings", headers=headers).get_json()["personal_stages"] is False
    # when: the merchant ticks it, before saving
    preview = client.post("/app/api/settings/impact", json={"personal_stages": True}, headers=headers)
    # then: the page can say how many would move, and where to
    impact = preview.get_json()
    assert impact["personal"] == {"on": True, "applies": True, "reason": None}
    assert impact["would_move"] > 0
    # and once saved, the tick moves exactly those
    assert client.put("/app/api/settings", json={"personal_stages": True}, headers=headers).status_code == 200
    moved = run_tick(db, redis_connection, NOW, 300).moves
    assert moved == {m["move"]: m["count"] for m in impact["moves"]}
    with db.session() as session:
        assert session.get(Shop, shop.id).personal_stages is True
    assert client.post("/app/api/settings/impact", json={}, headers=headers).get_json()["would_move"] == 0


def test_personal_stages_without_a_fit_say_the_fixed_thresholds_stay(client, headers, db, shop):
    # given: a shop with a few buyers and no fitted model
    simulated_store(db, shop.id, 40)
    predictions.fit_shop(db, shop.id, NOW)
    # when
    impact = client.post("/app/api/settings/impact", json={"personal_stages": True}, headers=headers)
    # then
    personal = impact.get_json()["personal"]
    assert personal["on"] and not personal["applies"]
    assert "repeat buyers, the model needs at least 100" in personal["reason"]


def test_a_fit_whose_orders_have_gone_is_still_shown_as_it_was(client, headers, db, shop, fitted):
    # a fit is stored with its cutoff: the overview reports it even once the history changed
    with db.session() as session:
        session.execute(delete(ShopperPrediction).where(ShopperPrediction.shop_id == shop.id))
    model = client.get("/app/api/overview/predictions", headers=headers).get_json()["model"]
    assert model["cutoff_day"] == (NOW - timedelta(days=1)).date().isoformat()
    assert model["bg_nbd"]["r"] == pytest.approx(fitted.r)
    assert datetime.fromisoformat(model["holdout"]["end_day"]).replace(tzinfo=UTC) < NOW
