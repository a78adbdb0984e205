"""The one clock: every time-dependent decision reads `now()` from here.

`LIFECYCLE_NOW` (ISO 8601) pins the clock for every process started with it, and `tick --now` /
`worker --now` set it for their own process, so a time rule is tested by moving the clock, not by sleeping.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

ENV_NAME = "LIFECYCLE_NOW"


class ClockError(ValueError):
    """Raised when LIFECYCLE_NOW (or --now) is not an ISO 8601 timestamp."""


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 timestamp (a naive one is taken as UTC) into an aware UTC datetime."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ClockError(f"not an ISO 8601 timestamp: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def now() -> datetime:
    """Return the current instant in UTC, or the pinned one when LIFECYCLE_NOW is set."""
    pinned = os.environ.get(ENV_NAME)
    if pinned:
        return parse_instant(pinned)
    return datetime.now(UTC)


def pin(instant: datetime | str | None) -> None:
    """Pin this process's clock (and its children's) to `instant`; None leaves the clock as it is."""
    if instant is None:
        return
    value = parse_instant(instant) if isinstance(instant, str) else instant.astimezone(UTC)
    os.environ[ENV_NAME] = value.isoformat()


def aware(value: datetime | str | None) -> datetime | None:
    """A stored instant as an aware UTC datetime (SQLite's aggregates come back naive, or as text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def iso(value: datetime | None) -> str | None:
    """ISO 8601 text of an instant, or None."""
    return value.isoformat() if value else None
