"""Actions: what a run does. BY_NAME maps an action name to a function `(ctx) -> None` that raises one of
the errors in `base` (or of the Shopify client's tree) when it cannot finish."""

from __future__ import annotations

from plugin.actions import send_email, shopify_effects
from plugin.actions.base import ActionContext

BY_NAME = {
    "send_email": send_email.run,
    "tag_customer": shopify_effects.tag_customer,
    "sync_stage": shopify_effects.sync_stage,
    "sync_consent": shopify_effects.sync_consent,
}

__all__ = ["BY_NAME", "ActionContext"]
