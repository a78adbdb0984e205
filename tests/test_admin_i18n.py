"""The admin's UI catalogs: every language has every string the page asks for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from admin import i18n
from admin.api.settings import SETTINGS
from plugin.store.models import Stage

APP_JS = Path(i18n.__file__).parent / "static" / "admin" / "app.js"


def keys_the_page_asks_for() -> set[str]:
    literal = set(re.findall(r'\bT\("([a-z_]+)"\)', APP_JS.read_text(encoding="utf-8")))
    return literal | set(SETTINGS) | {stage.value for stage in Stage}


def test_english_has_every_string_the_page_asks_for():
    assert keys_the_page_asks_for() - set(i18n.EN) == set()


@pytest.mark.parametrize("locale", ["it", "pl", "ru"])
def test_each_catalog_is_complete_and_translated(locale):
    catalog = i18n.CATALOGS[locale]
    assert set(catalog) == set(i18n.EN)
    same = [k for k in catalog if catalog[k] == i18n.EN[k] and k not in ("operator",)]
    assert len(same) <= 2, same  # words that are the same in both languages are rare


def test_merchants_locale_picks_the_catalog():
    assert i18n.pick("it-IT") == "it"
    assert i18n.pick("de") == "en"
    assert i18n.strings("pl")["save"] == "Zapisz"
