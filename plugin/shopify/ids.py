"""Shopify's identifiers and enums as the Admin API spells them, read into ours."""

from __future__ import annotations

# GraphQL's EmailMarketingState → the webhook payloads' lower-case states (which we store).
CONSENT_STATES = {
    "SUBSCRIBED": "subscribed",
    "NOT_SUBSCRIBED": "not_subscribed",
    "UNSUBSCRIBED": "unsubscribed",
}


def gid_number(gid: str | int | None) -> int | None:
    """The number of a GraphQL id (`gid://shopify/Customer/7?x=1` → 7; a bare number stays), or None."""
    if gid is None or isinstance(gid, bool):
        return None
    if isinstance(gid, int):
        return gid
    tail = gid.rsplit("/", 1)[-1].split("?", 1)[0]
    return int(tail) if tail.isdigit() else None


def consent_state(graphql_state: str | None) -> str | None:
    """The stored consent state of a GraphQL `marketingState` (unknown ones lower-cased as they come)."""
    if not graphql_state:
        return None
    return CONSENT_STATES.get(graphql_state, graphql_state.lower())
