"""The sending policy as tables: still applies, may be mailed, may be mailed now, and the order of the checks.

`decide` reads a PolicySnapshot and any object with a run's fields; here a SimpleNamespace stands for the run.
NOW is 12:00 UTC on Sunday 1 November 2026: the day Los Angeles leaves summer time (at 09:00 UTC).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from plugin.core.policy import GO, Decision, PolicySnapshot, decide
from tests.conftest import NOW

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
# A subscribed shopper in the at_risk stage, in a shop in UTC with the default cap (1 a day, 3 a week) and
# quiet hours (21:00-08:00): at NOW nothing stands in the way.
SHOPPER = PolicySnapshot(
    shopper_exists=True,
    shopper_stage="at_risk",
    shopper_email="ada@example.com",
    shopper_consents=True,
    shop_timezone="UTC",
)


def run(**fields):
    """A marketing email of a stage play, as `decide` reads an ActionRun."""
    defaults = dict(
        action="send_email",
        play="win_back",
        trigger="tick",
        play_stage="at_risk",
        marketing=True,
        context={},
        recipient_email=None,
    )
    return SimpleNamespace(**{**defaults, **fields})


def snapshot(**changes):
    return replace(SHOPPER, **changes)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def test_nothing_in_the_way_means_go():
    assert decide(SHOPPER, run(), NOW) == GO == Decision(skip=None, defer_until=None, why=None)


# --- still applies ------------------------------------------------------------------------------------

CHECKOUT = {"checkout_token": "tok-1", "at": (NOW - 5 * HOUR).isoformat()}


@pytest.mark.parametrize(
    ("changes", "fields", "skip"),
    [
        ({"shopper_deleted": True}, {}, "the customer was deleted in Shopify"),
        ({"shopper_deleted": True}, {"action": "tag_customer"}, "the customer was deleted in Shopify"),
        ({"shopper_deleted": True}, {"marketing": False}, "the customer was deleted in Shopify"),
        # a stage play applies while the shopper is still in that stage
        ({"shopper_stage": "loyal"}, {}, "no longer at_risk (now loyal)"),
        ({"shopper_stage": "lapsed"}, {"action": "tag_customer"}, "no longer at_risk (now lapsed)"),
        ({"shopper_stage": "loyal"}, {"play": "stage_sync"}, None),  # writes the stage back, whatever it is
        ({"shopper_stage": "loyal"}, {"trigger": "manual"}, None),  # the merchant asked for it
        ({"shopper_stage": "loyal"}, {"play_stage": None}, None),  # not a stage play
        ({"shopper_stage": "loyal", "shopper_exists": False}, {"recipient_email": "a@b.c"}, None),
        # an abandoned checkout applies while the checkout is open and no order came after it
        ({"checkout_completed": True}, {"context": CHECKOUT}, "the checkout was completed"),
        ({"checkout_closed": True}, {"context": CHECKOUT}, "the checkout was closed"),
        (
            {"last_order_at": NOW - HOUR},
            {"context": CHECKOUT},
            "the shopper ordered after starting the checkout",
        ),
        (
            {"last_order_at": NOW - 5 * HOUR},
            {"context": CHECKOUT},
            "the shopper ordered after starting the checkout",
        ),
        ({"last_order_at": NOW - 5 * HOUR - SECOND}, {"context": CHECKOUT}, None),
        ({"last_order_at": NOW - HOUR}, {"context": {"checkout_token": "tok-1"}}, None),  # start unknown
        ({"checkout_completed": True}, {"context": {}}, None),  # not about a checkout
        # an order's email applies while the order stands
        ({"order_cancelled": True}, {"context": {"order_id": 5}}, "the order was cancelled"),
        ({"order_refunded": True}, {"context": {"order_id": 5}}, "the order was refunded"),
        ({"order_cancelled": True}, {"context": {}}, None),
        # a back-in-stock alert applies while the subscription waits
        (
            {"subscription_open": False},
            {"context": {"subscription_id": 41}},
            "the alert was cancelled or already sent",
        ),
        (
            {"subscription_open": None},
            {"context": {"subscription_id": 41}},
            "the alert was cancelled or already sent",
        ),
        ({"subscription_open": True}, {"context": {"subscription_id": 41}}, None),
        # the first reason found is the one given
        ({"shopper_deleted": True, "shopper_stage": "loyal"}, {}, "the customer was deleted in Shopify"),
        (
            {"shopper_stage": "loyal", "checkout_completed": True},
            {"context": CHECKOUT},
            "no longer at_risk (now loyal)",
        ),
        (
            {"checkout_completed": True, "checkout_closed": True},
            {"context": CHECKOUT},
            "the checkout was completed",
        ),
        (
            {"order_cancelled": True, "order_refunded": True},
            {"context": {"order_id": 5}},
            "the order was cancelled",
        ),
    ],
)
def test_a_run_is_skipped_once_its_play_no_longer_applies(changes, fields, skip):
    assert decide(snapshot(**changes), run(**fields), NOW) == (Decision(skip=skip) if skip else GO)


def test_a_run_without_context_is_read_as_empty():
    assert decide(SHOPPER, run(context=None), NOW) == GO


# --- may be mailed: address, consent, suppression -----------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "fields", "skip"),
    [
        ({"shopper_email": None}, {}, "no email address"),
        ({"shopper_email": None}, {"marketing": False}, "no email address"),
        ({"shopper_email": None, "shopper_exists": False}, {"recipient_email": "cy@example.com"}, None),
        ({"shopper_consents": False}, {}, "no email marketing consent"),
        ({"suppressed": True}, {}, "the address unsubscribed"),
        ({"shopper_consents": False, "suppressed": True}, {}, "no email marketing consent"),
        # transactional mail (the shopper asked for it) needs neither consent nor a subscribed address
        ({"shopper_consents": False}, {"marketing": False}, None),
        ({"suppressed": True}, {"marketing": False}, None),
        ({"shopper_consents": False, "suppressed": True}, {"marketing": False}, None),
        # tagging a customer is not mail
        (
            {"shopper_email": None, "shopper_consents": False, "suppressed": True},
            {"action": "tag_customer"},
            None,
        ),
    ],
)
def test_consent_and_suppression_stop_marketing_only(changes, fields, skip):
    assert decide(snapshot(**changes), run(**fields), NOW) == (Decision(skip=skip) if skip else GO)


# --- may be mailed now: the frequency cap -------------------------------------------------------------

PER_DAY = "frequency cap: at most {} marketing email(s) per 24 h"
PER_WEEK = "frequency cap: at most {} marketing email(s) per 7 days"


@pytest.mark.parametrize(
    ("sent_ago", "caps", "defer_until", "why"),
    [
        ((), (1, 3), None, None),
        ((3 * HOUR,), (1, 3), NOW + 21 * HOUR, PER_DAY.format(1)),
        ((DAY - SECOND,), (1, 3), NOW + SECOND, PER_DAY.format(1)),
        ((DAY,), (1, 3), None, None),  # exactly 24 h ago has left the window
        ((25 * HOUR,), (1, 3), None, None),
        ((HOUR,), (2, 3), None, None),
        ((HOUR, 5 * HOUR), (2, 3), NOW + 19 * HOUR, PER_DAY.format(2)),
        (
            (HOUR, 5 * HOUR, 10 * HOUR),
            (2, 5),
            NOW + 19 * HOUR,
            PER_DAY.format(2),
        ),  # when all but one have left
        ((2 * DAY, 4 * DAY), (1, 3), None, None),
        ((2 * DAY, 4 * DAY, 6 * DAY), (1, 3), NOW + DAY, PER_WEEK.format(3)),
        ((2 * DAY, 6 * DAY, 4 * DAY), (1, 3), NOW + DAY, PER_WEEK.format(3)),  # in any order
        ((2 * DAY, 4 * DAY, 7 * DAY - SECOND), (1, 3), NOW + SECOND, PER_WEEK.format(3)),
        ((2 * DAY, 4 * DAY, 7 * DAY), (1, 3), None, None),  # exactly 7 days ago has left the window
        ((2 * DAY, 4 * DAY, 6 * DAY, 6 * DAY + 12 * HOUR), (1, 3), NOW + DAY, PER_WEEK.format(3)),
        ((2 * DAY, 5 * DAY), (1, 2), NOW + 2 * DAY, PER_WEEK.format(2)),
        ((30 * DAY, 60 * DAY), (1, 3), None, None),
    ],
)
def test_the_frequency_cap_defers_until_the_oldest_counted_send_leaves_the_window(
    sent_ago, caps, defer_until, why
):
    shopper = snapshot(
        recent_sends=tuple(NOW - ago for ago in sent_ago), cap_per_day=caps[0], cap_per_week=caps[1]
    )
    assert decide(shopper, run(), NOW) == (Decision(defer_until=defer_until, why=why) if why else GO)


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({}, {"marketing": False}),  # transactional mail is not capped
        ({"shopper_exists": False}, {"recipient_email": "cy@example.com", "play_stage": None}),
        ({}, {"action": "tag_customer"}),
    ],
)
def test_the_cap_counts_marketing_email_to_known_shoppers_only(changes, fields):
    shopper = snapshot(
        recent_sends=(NOW - HOUR, NOW - 2 * HOUR, NOW - 3 * HOUR), higher_priority_due=2, **changes
    )
    assert decide(shopper, run(**fields), NOW) == GO


def test_a_higher_priority_message_goes_first():
    decision = decide(snapshot(higher_priority_due=1), run(), NOW)
    assert decision == Decision(
        defer_until=NOW + timedelta(minutes=10), why="a higher-priority message goes first"
    )


def test_the_cap_is_told_before_the_queue():
    decision = decide(snapshot(higher_priority_due=1, recent_sends=(NOW - HOUR,)), run(), NOW)
    assert decision == Decision(defer_until=NOW + 23 * HOUR, why=PER_DAY.format(1))


# --- may be mailed now: quiet hours -------------------------------------------------------------------


def quiet(start, end, zone):
    return f"quiet hours {start:02d}:00–{end:02d}:00 ({zone}); sent in the morning"


@pytest.mark.parametrize(
    ("shopper_zone", "shop_zone", "hours", "defer_until", "why"),
    [
        # 12:00 UTC is midday in London and Rome, evening in Tokyo, night in Los Angeles and Auckland
        (None, "UTC", (21, 8), None, None),
        (None, None, (21, 8), None, None),
        (None, "Europe/Rome", (21, 8), None, None),
        (None, "Asia/Kolkata", (21, 8), None, None),  # 17:30
        (None, "Asia/Tokyo", (21, 8), utc(2026, 11, 1, 23), quiet(21, 8, "Asia/Tokyo")),  # 21:00 JST
        (None, "Asia/Tokyo", (22, 8), None, None),  # 21:00 is before a 22:00 start
        # 04:00 PST, an hour after the clocks went back: 08:00 PST is 16:00 UTC (not 15:00, as in PDT)
        (None, "America/Los_Angeles", (21, 8), utc(2026, 11, 1, 16), quiet(21, 8, "America/Los_Angeles")),
        (
            None,
            "Pacific/Auckland",
            (21, 8),
            utc(2026, 11, 1, 19),
            quiet(21, 8, "Pacific/Auckland"),
        ),  # 01:00 NZDT
        # the shopper's zone wins over the shop's
        ("Asia/Tokyo", "UTC", (21, 8), utc(2026, 11, 1, 23), quiet(21, 8, "Asia/Tokyo")),
        ("Europe/London", "Asia/Tokyo", (21, 8), None, None),
        ("UTC", "America/Los_Angeles", (21, 8), None, None),
        # an unknown zone is UTC
        ("Mars/Olympus_Mons", None, (21, 8), None, None),
        ("Mars/Olympus_Mons", "Asia/Tokyo", (10, 14), utc(2026, 11, 1, 14), quiet(10, 14, "UTC")),
        (None, "Not a zone", (10, 14), utc(2026, 11, 1, 14), quiet(10, 14, "UTC")),
        ("../../etc/passwd", None, (10, 14), utc(2026, 11, 1, 14), quiet(10, 14, "UTC")),
        ("", "", (10, 14), utc(2026, 11, 1, 14), quiet(10, 14, "UTC")),
        # a window within a day: from its start hour (included) to its end hour (excluded)
        (None, "UTC", (10, 14), utc(2026, 11, 1, 14), quiet(10, 14, "UTC")),
        (None, "UTC", (12, 14), utc(2026, 11, 1, 14), quiet(12, 14, "UTC")),
        (None, "UTC", (13, 14), None, None),
        (None, "UTC", (9, 12), None, None),
        (None, "UTC", (0, 13), utc(2026, 11, 1, 13), quiet(0, 13, "UTC")),
        # a window across midnight: quiet from start to midnight and from midnight to end
        (None, "UTC", (11, 3), utc(2026, 11, 2, 3), quiet(11, 3, "UTC")),
        (None, "UTC", (12, 11), utc(2026, 11, 2, 11), quiet(12, 11, "UTC")),
        (None, "UTC", (13, 12), None, None),
        (None, "UTC", (23, 13), utc(2026, 11, 1, 13), quiet(23, 13, "UTC")),
        # start == end: no quiet hours at all
        (None, "UTC", (12, 12), None, None),
        (None, "UTC", (0, 0), None, None),
        (None, "Asia/Tokyo", (21, 21), None, None),
    ],
)
def test_quiet_hours_defer_to_the_next_local_morning(shopper_zone, shop_zone, hours, defer_until, why):
    shopper = snapshot(
        shopper_timezone=shopper_zone,
        shop_timezone=shop_zone,
        quiet_start_hour=hours[0],
        quiet_end_hour=hours[1],
    )
    assert decide(shopper, run(), NOW) == (Decision(defer_until=defer_until, why=why) if why else GO)


@pytest.mark.parametrize(
    ("now", "zone", "defer_until"),
    [
        (utc(2026, 11, 1, 23, 59, 59), "UTC", utc(2026, 11, 2, 8)),
        (utc(2026, 11, 2, 0, 0, 0), "UTC", utc(2026, 11, 2, 8)),
        (utc(2026, 11, 2, 7, 59, 59), "UTC", utc(2026, 11, 2, 8)),
        (utc(2026, 11, 1, 21, 30, 12), "Europe/Rome", utc(2026, 11, 2, 7)),  # 22:30 CET → 08:00 CET
        (
            utc(2026, 3, 28, 22, 0),
            "Europe/Rome",
            utc(2026, 3, 29, 6),
        ),  # 23:00 CET → 08:00 CEST, clocks forward
        (
            utc(2026, 10, 24, 22, 0),
            "Europe/Rome",
            utc(2026, 10, 25, 7),
        ),  # 00:00 CEST → 08:00 CET, clocks back
    ],
)
def test_the_morning_is_the_quiet_end_hour_on_the_hour(now, zone, defer_until):
    decision = decide(snapshot(shop_timezone=zone), run(), now)
    assert (decision.defer_until, decision.defer_until.utcoffset()) == (defer_until, timedelta(0))


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({}, {"marketing": False}),
        (
            {"shopper_exists": False},
            {"marketing": False, "recipient_email": "cy@example.com", "play_stage": None},
        ),
    ],
)
def test_quiet_hours_hold_transactional_mail_too(changes, fields):
    decision = decide(snapshot(shop_timezone="Asia/Tokyo", **changes), run(**fields), NOW)
    assert decision == Decision(defer_until=utc(2026, 11, 1, 23), why=quiet(21, 8, "Asia/Tokyo"))


def test_quiet_hours_do_not_hold_a_tag():
    assert decide(snapshot(shop_timezone="Asia/Tokyo"), run(action="tag_customer"), NOW) == GO


# --- the order of the checks --------------------------------------------------------------------------

CAPPED_AT_NIGHT = {"shop_timezone": "Asia/Tokyo", "recent_sends": (NOW - HOUR,), "higher_priority_due": 1}


@pytest.mark.parametrize(
    ("changes", "fields", "expected"),
    [
        # a skip wins over every deferral
        (
            {"shopper_deleted": True, "shopper_consents": False},
            {},
            Decision(skip="the customer was deleted in Shopify"),
        ),
        ({"shopper_stage": "loyal", "suppressed": True}, {}, Decision(skip="no longer at_risk (now loyal)")),
        ({"shopper_consents": False}, {}, Decision(skip="no email marketing consent")),
        ({"suppressed": True}, {}, Decision(skip="the address unsubscribed")),
        ({"order_refunded": True}, {"context": {"order_id": 5}}, Decision(skip="the order was refunded")),
        # then the cap, then a higher priority, then quiet hours
        ({}, {}, Decision(defer_until=NOW + 23 * HOUR, why=PER_DAY.format(1))),
        (
            {"recent_sends": ()},
            {},
            Decision(defer_until=NOW + timedelta(minutes=10), why="a higher-priority message goes first"),
        ),
        (
            {"recent_sends": (), "higher_priority_due": 0},
            {},
            Decision(defer_until=utc(2026, 11, 1, 23), why=quiet(21, 8, "Asia/Tokyo")),
        ),
        (
            {},
            {"marketing": False},
            Decision(defer_until=utc(2026, 11, 1, 23), why=quiet(21, 8, "Asia/Tokyo")),
        ),
    ],
)
def test_skip_before_defer_and_the_cap_before_quiet_hours(changes, fields, expected):
    assert decide(snapshot(**{**CAPPED_AT_NIGHT, **changes}), run(**fields), NOW) == expected


@pytest.mark.parametrize(
    ("caps", "recent", "label"),
    [((0, 3), (), "per 24 h"), ((1, 0), (), "per 7 days"), ((0, 0), (NOW - HOUR,), "per 24 h")],
)
def test_a_cap_of_zero_means_no_marketing_email(caps, recent, label):
    shopper = snapshot(cap_per_day=caps[0], cap_per_week=caps[1], recent_sends=recent)
    assert decide(shopper, run(), NOW) == Decision(
        skip=f"frequency cap: no marketing email (the cap {label} is 0)"
    )
    assert decide(shopper, run(marketing=False), NOW) == GO  # a receipt or an alert still goes
