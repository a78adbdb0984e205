"""What a backtest must say beside its figures: what the history could not replay, what it assumed
(consent as it is now, the current tags and locale, paid by the current status), and where the runs it
counted went besides being sent. Pure: reads a finished `core.backtest.Replay` and its counted runs.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from plugin.core.backtest_timeline import NOT_REPLAYABLE
from plugin.core.rules import is_marketing

NOW_ONLY_FIELDS = ("tags", "locale", "accepts_marketing")


def notes(replay, counted: list, attribution: timedelta) -> list[str]:
    """The sentences the merchant reads with the figures, most important first."""
    rule = next(rule for _, rule in replay.rules if rule["key"] == replay.key)
    said = _not_replayable(rule, replay)
    said.append(_consent(replay))
    said += _assumptions(rule, replay)
    said += _outcomes(counted, replay, attribution)
    return said


def _not_replayable(rule: dict, replay) -> list[str]:
    said = []
    why = NOT_REPLAYABLE.get(rule["trigger"])
    if why:
        said.append(
            f"This rule's trigger ({rule['trigger']}) cannot be replayed: {why}. The figures are zero "
            "because nothing could be replayed, not because no one would have been reached."
        )
    others = sorted(
        f"{other['key']} ({other['trigger']})"
        for _, other in replay.rules
        if other["key"] != replay.key and other["trigger"] in NOT_REPLAYABLE and is_marketing(other)
    )  # a transactional play (the back-in-stock alert asked for) is not capped
    if others:
        said.append(
            "The frequency cap counts the other enabled rules' simulated messages, except those of "
            f"{', '.join(others)}, whose triggers cannot be replayed: the cap may let more through here "
            "than it would have."
        )
    if rule["trigger"] == "checkout_started" or any(
        r["trigger"] == "checkout_started" for _, r in replay.rules
    ):
        said.append(_checkouts(replay))
    return said


def _checkouts(replay) -> str:
    stored = [c.updated_at for h in replay.histories.values() for c in h.checkouts]
    if not any(replay.start <= at < replay.end for at in stored):
        return "No checkouts are stored for this period: abandoned checkouts in it cannot be replayed."
    first = min(stored)
    since = f" Checkouts are stored from {first.date().isoformat()} only." if first > replay.start else ""
    return f"A checkout keeps only its last update time; it stands in for when the checkout started.{since}"


def _consent(replay) -> str:
    with_address = [h for h in replay.histories.values() if h.email and not h.deleted]
    consenting = sum(1 for h in with_address if h.consents and not h.suppressed)
    installed = replay.policy.installed_at
    since = f" (installed {installed.date().isoformat()})" if installed else ""
    return (
        f"Consent is taken as it is now for the whole period: {consenting} of {len(with_address)} shoppers "
        "with an address may be mailed today. Consent before the app was installed"
        f"{since} is not known, so some of them may not have consented then, and some who have "
        "withdrawn since may have."
    )


def _assumptions(rule: dict, replay) -> list[str]:
    said = []
    fields = sorted({c["field"] for c in rule["conditions"]} & set(NOW_ONLY_FIELDS))
    if fields:
        said.append(
            f"Conditions on {', '.join(fields)} read each shopper's current value (no history is kept)."
        )
    if rule["trigger"] == "order_paid":
        said.append("An order counts as paid by its current financial status.")
    if replay.policy.thresholds.personal:
        said.append(
            "Personal stages are on, but past forecasts are not stored: stages are replayed with the fixed "
            "thresholds."
        )
    held = sum(1 for run in replay.runs if run.outcome == "held_out")
    if held:
        said.append(
            f"{held} message(s) of the other rules fell in their hold-out group: never sent, they take no "
            "room in the frequency cap."
        )
    if rule.get("holdout_percent"):
        said.append(
            f"{rule['holdout_percent']} % of these messages would be held out as the control group; the "
            "figures count every eligible shopper."
        )
    if not replay.target_was_enabled:
        said.append("The rule is off: it is replayed as if it were on.")
    return said


def _outcomes(counted: list, replay, attribution: timedelta) -> list[str]:
    said = []
    outcomes = Counter(run.outcome for run in counted)
    if outcomes["excluded"]:
        said.append(
            f"{outcomes['excluded']} message(s) left out: the shopper does not consent now, has no address, "
            "unsubscribed or was deleted."
        )
    if outcomes["skipped"] + outcomes["superseded"]:
        said.append(
            f"{outcomes['skipped'] + outcomes['superseded']} message(s) no longer applied when due (the "
            "shopper ordered, moved stage, or completed the checkout first)."
        )
    later = sum(1 for run in counted if run.capped and run.outcome == "sent")
    if later:
        said.append(f"{later} message(s) were held back by the frequency cap for a while and sent later.")
    if outcomes[None]:
        said.append(
            f"{outcomes[None]} message(s) were still waiting when the history ends ({_day(replay.now)})."
        )
    young = sum(1 for run in counted if run.sent_at and run.due_at + attribution > replay.now)
    if young:
        said.append(
            f"{young} message(s) were due less than {attribution.days} days before the history ends: their "
            "attribution window is still open, so the baseline leaves them out (as the rule lift does)."
        )
    return said


def _day(at: datetime) -> str:
    return at.date().isoformat()
