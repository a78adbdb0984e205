"""Effects written into the store through the Admin API: tags, the stage metafield, consent, and unique
discount codes. Each is safe to repeat: tags and metafields are set, not added to, and a code's name is
derived from its run, so a retry finds the code the first try created instead of making a second one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta

from plugin.actions.base import ActionContext, PermanentActionError
from plugin.shopify.client import ShopifyClient, ShopifyUserErrors, aliased_document
from plugin.store.models import ActionRun, RunStatus, Stage

STAGE_TAG = "lifecycle:{stage}"
METAFIELD = {"namespace": "lifecycle", "key": "stage", "type": "single_line_text_field"}


def tag_customer(ctx: ActionContext) -> None:
    """Add the rule's tags to the customer."""
    tags = ctx.run.params.get("tags") or []
    if tags and ctx.customer_gid:
        ctx.require_client().execute("TagsAdd", {"id": ctx.customer_gid, "tags": tags})


def stale_tags(stage: str) -> list[str]:
    """Our stage tags other than this stage's: removed when the stage is written."""
    return [STAGE_TAG.format(stage=s.value) for s in Stage if s.value != stage]


def sync_stage(ctx: ActionContext) -> None:
    """Write the shopper's current stage to Shopify: tag lifecycle:<stage> (others removed), metafield.

    One run at a time, three calls: the path of a run sent through run_action. Due stage write-backs go
    to the shop's bulk job instead (`plugin/actions/stage_writeback.py`, 25 customers a call).
    """
    shopper = ctx.shopper
    if shopper is None or shopper.synced_stage == shopper.stage:
        return
    client, gid = ctx.require_client(), ctx.customer_gid
    client.execute("TagsRemove", {"id": gid, "tags": stale_tags(shopper.stage)})
    client.execute("TagsAdd", {"id": gid, "tags": [STAGE_TAG.format(stage=shopper.stage)]})
    client.execute("MetafieldsSet", {"metafields": [dict(METAFIELD, ownerId=gid, value=shopper.stage)]})
    shopper.synced_stage = shopper.stage


STAGES_PER_CALL = 25  # metafieldsSet takes 25 owners a call; with 2 tag mutations each, ~510 cost points
WRITTEN, RETRY = "written", "retry"


def write_stages(client: ShopifyClient, stages: list[tuple[str, str]]) -> list[str]:
    """Write (customer gid, stage) pairs, at most STAGES_PER_CALL, in one call (StageWriteBack).

    Returns one outcome per pair, in order: WRITTEN; RETRY when only another customer's refusal kept its
    metafield out (metafieldsSet sets all or none); else the reason Shopify refused it (userErrors).
    Raises the client's errors when the call as a whole fails (throttled, transient, auth, rejected).
    """
    if not 0 < len(stages) <= STAGES_PER_CALL:
        raise ValueError(f"1 to {STAGES_PER_CALL} stages a call, not {len(stages)}")
    variables: dict = {"metafields": [dict(METAFIELD, ownerId=gid, value=stage) for gid, stage in stages]}
    for i, (gid, stage) in enumerate(stages):
        variables |= {
            f"id_{i}": gid,
            f"stale_{i}": stale_tags(stage),
            f"stage_{i}": [STAGE_TAG.format(stage=stage)],
        }
    text = aliased_document("StageWriteBack", len(stages))
    data = client.execute("StageWriteBack", variables, text=text, user_errors=False)
    refused = _metafield_refusals(data, len(stages))
    outcomes = []
    for i in range(len(stages)):
        errors = [
            e
            for alias in (f"remove_{i}", f"add_{i}")
            for e in (data.get(alias) or {}).get("userErrors") or []
        ]
        reason = "; ".join(str(e.get("message")) for e in errors) or refused.get(i)
        outcomes.append(reason or (RETRY if refused else WRITTEN))
    return outcomes


def _metafield_refusals(data: dict, count: int) -> dict[int, str]:
    """metafieldsSet's userErrors by the customer they name (field ["metafields", "<index>", ...]); one
    naming none is everyone's."""
    refused: dict[int, str] = {}
    for error in (data.get("metafieldsSet") or {}).get("userErrors") or []:
        field = error.get("field") or []
        index = field[1] if len(field) > 1 else None
        message = f"metafield refused: {error.get('message')}"
        if index is not None and str(index).isdigit() and int(index) < count:
            refused.setdefault(int(index), message)
        else:
            refused.update({i: message for i in range(count)} | refused)
    return refused


def sync_consent(ctx: ActionContext) -> None:
    """Tell Shopify the shopper unsubscribed (after our one-click unsubscribe)."""
    if ctx.customer_gid is None:
        return
    consent = {"marketingState": "UNSUBSCRIBED", "consentUpdatedAt": ctx.now.isoformat()}
    ctx.require_client().execute(
        "CustomerEmailMarketingConsentUpdate",
        {"input": {"customerId": ctx.customer_gid, "emailMarketingConsent": consent}},
    )


def code_for(run: ActionRun, secret: str) -> str:
    """The run's discount code: readable prefix + a keyed digest of its idempotency key (same every try)."""
    digest = hmac.new(secret.encode(), run.idempotency_key.encode(), hashlib.sha256).digest()
    tail = base64.b32encode(digest).decode()[:10]
    return f"{run.play.replace('_', '').upper()[:10]}-{tail}"


def issue_discount(ctx: ActionContext) -> None:
    """Give the shopper a unique, single-use, expiring code for this run (or their active one of the play)."""
    run, discount = ctx.run, ctx.run.params.get("discount")
    if not discount or run.discount_code or ctx.customer_gid is None:
        return
    active = (
        ctx.session.query(ActionRun)
        .filter(
            ActionRun.shopper_id == run.shopper_id,
            ActionRun.play == run.play,
            ActionRun.id != run.id,
            ActionRun.discount_code.is_not(None),
            ActionRun.discount_expires_at > ctx.now,
            ActionRun.status == RunStatus.SUCCEEDED,
        )
        .first()
    )
    if active is not None:  # one active code per play: reuse it rather than hand out a second
        run.discount_code, run.discount_expires_at = active.discount_code, active.discount_expires_at
        return
    code = code_for(run, ctx.settings["SECRET_KEY"])
    expires = ctx.now + timedelta(days=discount["valid_days"])
    variables = {
        "basicCodeDiscount": {
            "title": f"Lifecycle {run.play} #{run.id}",
            "code": code,
            "startsAt": ctx.now.isoformat(),
            "endsAt": expires.isoformat(),
            "context": {"customers": {"add": [ctx.customer_gid]}},
            "customerGets": {"value": {"percentage": discount["percent"] / 100}, "items": {"all": True}},
            "appliesOncePerCustomer": True,
            "usageLimit": 1,
        }
    }
    client = ctx.require_client()
    try:
        client.execute("DiscountCodeBasicCreate", variables)
    except ShopifyUserErrors as error:
        # An earlier try of this run created it (the code is ours: derived from the run), then crashed.
        if "TAKEN" not in error.codes or not client.execute("CodeDiscountNodeByCode", {"code": code}).get(
            "codeDiscountNodeByCode"
        ):
            raise PermanentActionError(f"discount refused: {error}") from None
    run.discount_code, run.discount_expires_at = code, expires
    ctx.commit_progress()
