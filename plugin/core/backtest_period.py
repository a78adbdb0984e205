"""The period a backtest replays: two dates as a merchant gives them (whole days in the shop's time zone,
the last included), or the last 90 days up to now."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_PERIOD = timedelta(days=90)


class PeriodError(ValueError):
    """The dates asked for are not dates, or `from` comes after `to`."""


def period(start: str | None, end: str | None, now: datetime, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) from two dates YYYY-MM-DD (whole days in the shop's timezone, `end` included); without
    them, the DEFAULT_PERIOD up to `now`.

    Raises:
        PeriodError: a date that is not YYYY-MM-DD, or `start` after `end`.
    """
    zone = shop_zone(timezone)
    stop = _midnight(_day(end, "to"), zone) + timedelta(days=1) if end else now
    begin = _midnight(_day(start, "from"), zone) if start else stop - DEFAULT_PERIOD
    if begin >= stop:
        raise PeriodError(f"from ({start}) must not come after to ({end or 'now'})")
    return begin, stop


def _day(text, name: str) -> date:
    if isinstance(text, str) and len(text) == 10:
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise PeriodError(f"{name} must be a date, YYYY-MM-DD (got {text!r})")


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def shop_zone(name: str | None) -> ZoneInfo:
    """The named time zone, or UTC when it is missing or unknown (as quiet hours read it)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")
