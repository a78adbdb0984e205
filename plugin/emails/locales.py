"""The languages emails are written in: the shop's choice, the shopper's locale, the message catalogs,
and money and dates in the reader's language (Babel)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path

from babel.dates import format_date
from babel.numbers import format_currency

TEMPLATES = Path(__file__).parent.parent / "templates" / "emails"
LOCALES = ("en", "it", "pl", "ru")
DEFAULT_LOCALE = "en"


def shop_languages(chosen: list[str] | None) -> list[str]:
    """The languages a shop writes in, in order (the first for everybody else): its choice in settings,
    or, without one, every shipped language, English first."""
    return [lang for lang in (chosen or LOCALES) if lang in LOCALES] or [DEFAULT_LOCALE]


def pick_locale(locale: str | None, chosen: list[str] | None = None) -> str:
    """The language a shopper is written in: their `customer_locale` (e.g. `it-IT` → `it`) when the shop
    writes in it, otherwise the shop's first language (see shop_languages)."""
    languages = shop_languages(chosen)
    base = (locale or "").replace("_", "-").split("-")[0].lower()
    return base if base in languages else languages[0]


@cache
def catalog(locale: str) -> dict:
    return json.loads((TEMPLATES / "i18n" / f"{locale}.json").read_text(encoding="utf-8"))


@cache
def default_template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def money(amount, currency: str | None, locale: str) -> str:
    if amount is None:
        return ""
    return format_currency(Decimal(str(amount)), currency or "USD", locale=locale)


def long_date(value: datetime | None, locale: str) -> str:
    return format_date(value, format="long", locale=locale) if value else ""
