"""The period a backtest replays: two dates as a merchant gives them (whole days in the shop's time zone,
the last included), or the last 90 days up to now. Bounded, so a replay's work is too: from no earlier
than five years ago and not in the future, to no later than tomorrow, at most 400 days long."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_PERIOD = timedelta(days=90)
MAX_PERIOD = timedelta(days=400)
EARLIEST = timedelta(days=5 * 365)  # `from` no earlier than this before now
LATEST = timedelta(days=1)  # `to` no later than this after now


class PeriodError(ValueError):
    """The dates asked for are not dates, out of bounds, or `from` comes after `to`."""


def period(start: str | None, end: str | None, now: datetime, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) from two dates YYYY-MM-DD (whole days in the shop's timezone, `end` included); without
    them, the DEFAULT_PERIOD up to `now`.

    Raises:
        PeriodError: a date that is not YYYY-MM-DD, `from` before five years ago or after now, `to` after
            tomorrow, `start` after `end`, or a period longer than MAX_PERIOD.
    """
    zone = shop_zone(timezone)
    # the dates are bounded before any arithmetic, so no date (0001-01-01, 9999-12-31) can overflow
    stop = _midnight(_day(end, "to", now), zone) + timedelta(days=1) if end else now
    begin = _midnight(_day(start, "from", now), zone) if start else stop - DEFAULT_PERIOD
    if begin >= stop:
        raise PeriodError(f"from ({start}) must not come after to ({end or 'now'})")
    if begin > now:
        raise PeriodError(f"from ({start}) is in the future: there is no history to replay yet")
    if stop - begin > MAX_PERIOD:
        raise PeriodError(
            f"the period is {(stop - begin).days} days long; at most {MAX_PERIOD.days}: choose a later from "
            "or an earlier to"
        )
    return begin, stop


def _day(text, name: str, now: datetime) -> date:
    if isinstance(text, str) and len(text) == 10:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            pass
        else:
            earliest, latest = (now - EARLIEST).date(), (now + LATEST).date()
            if not earliest <= day <= latest:
                raise PeriodError(f"{name} must be between {earliest} and {latest} (got {text})")
            return day
    raise PeriodError(f"{name} must be a date, YYYY-MM-DD (got {text!r})")


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def shop_zone(name: str | None) -> ZoneInfo:
    """The named time zone, or UTC when it is missing or unknown (as quiet hours read it)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")
