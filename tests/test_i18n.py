"""The catalogues and formatting of local_ui.i18n: placeholders survive translation, the
catalogues compile at load time, and numbers, amounts and times follow the language."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from local_ui import i18n

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("lang", [lang for lang in i18n.LANGUAGES if lang != i18n.SOURCE])
def test_translations_keep_their_placeholders(lang: str) -> None:
    for msgid, text in i18n.catalogue(lang).items():
        want = sorted(re.findall(r"\{\w+\}", msgid))
        assert sorted(re.findall(r"\{\w+\}", text)) == want, (lang, msgid, text)


def test_missing_reports_what_a_catalogue_lacks() -> None:
    assert i18n.missing("de", ["Stop charging", "A sentence nobody translated"]) == [
        "A sentence nobody translated"
    ]
    assert i18n.missing("en", ["anything"]) == []  # the source language needs no catalogue


def test_catalogues_compile_at_load_time_without_a_build_step() -> None:
    assert not list((ROOT / "local_ui" / "locale").rglob("*.mo"))  # nothing compiled is kept
    assert i18n.translations("de").gettext("Stop charging") == "Laden beenden"
    assert i18n.translations("en").gettext("Stop charging") == "Stop charging"


def test_pick_a_language() -> None:
    assert i18n.pick("de-AT") == "de"
    assert i18n.pick("de_DE") == "de"
    assert i18n.pick("xx", "de") == "de"
    assert i18n.pick(None) == "en"
    assert i18n.pick("", "zz") == "en"
    assert i18n.native_name("de") == "Deutsch"


def test_numbers_money_and_times_per_language() -> None:
    assert i18n.money(1.5, "EUR", "de") == "1,50\xa0€"
    assert i18n.money(1.5, "EUR", "en") == "€1.50"
    assert i18n.money(None, "EUR", "de") == "–"
    assert i18n.decimal(1234.5, "de", 2) == "1.234,50"
    assert i18n.decimal(1234.5, "en", 0) == "1,234"
    assert "2023" in i18n.when(1_700_000_000, "de") and "Nov" in i18n.when(1_700_000_000, "en")
