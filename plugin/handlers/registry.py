"""The handler table: one handler per topic, named by Shopify's topic strings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plugin.handlers.context import HandlerContext

Handler = Callable[[HandlerContext, Any], None]
HANDLERS: dict[str, Handler] = {}


def handles(*topics: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of each topic."""

    def register(function: Handler) -> Handler:
        for topic in topics:
            if topic in HANDLERS:
                raise ValueError(f"two handlers for {topic}")
            HANDLERS[topic] = function
        return function

    return register


class NoHandlerError(LookupError):
    """No handler is registered for the topic."""


def dispatch(ctx: HandlerContext, payload: Any) -> str | None:
    """Run the handler of ctx.topic; return the note it leaves on the delivery, if any."""
    handler = HANDLERS.get(ctx.topic)
    if handler is None:
        raise NoHandlerError(ctx.topic)
    return handler(ctx, payload)
