"""Every sentence the kiosk can show is in each complete language's catalogue."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.extract import extract

from local_ui import i18n

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "local_ui" / "static"
OFFLINE = ROOT / "systemd" / "kiosk-offline.html"  # shown while the station does not answer
COMPLETE = ["de", "fr", "nl"]  # languages a driver can walk the whole flow in (tests/browser too)


def kiosk_msgids() -> list[str]:
    """Every msgid of the kiosk: t()/N_() in kiosk.js, data-t in kiosk.html, gettext in
    local_ui/kiosk_receipt.py (what the receipt says)."""
    ids: list[str] = []

    def add(msg: object) -> None:
        m = msg if isinstance(msg, str) else (msg[0] if isinstance(msg, tuple) and msg else None)
        if isinstance(m, str) and m and m not in ids:
            ids.append(m)

    with (STATIC / "kiosk.js").open("rb") as f:
        for _, msg, _, _ in extract("javascript", f, keywords={"t": None, "N_": None}):
            add(msg)
    # Babel's extractor skips calls nested in another call's arguments: t(x ? N_("a") : ...).
    for m in re.finditer(r'\b(?:t|N_)\("((?:[^"\\]|\\.)*)"', (STATIC / "kiosk.js").read_text()):
        add(m.group(1))

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            for k, v in attrs:
                if k == "data-t":
                    add(v)

    Tags().feed((STATIC / "kiosk.html").read_text())
    Tags().feed(OFFLINE.read_text())
    with (ROOT / "local_ui" / "kiosk_receipt.py").open("rb") as f:
        for _, msg, _, _ in extract("python", f):
            add(msg)
    return ids


def test_extraction_finds_the_kiosk_sentences() -> None:
    ids = kiosk_msgids()
    # A sample from each source, so an extraction that finds nothing cannot pass the tests below.
    for want in (
        "Stop charging",
        "Out of order",
        "How should we charge?",
        "Session {id}",
        "To stop, show your QR code to the camera or type your code.",  # nested in t(...)
    ):
        assert want in ids
    assert len(ids) > 100


@pytest.mark.parametrize("lang", COMPLETE)
def test_complete_languages_translate_every_kiosk_sentence(lang: str) -> None:
    assert lang in i18n.LANGUAGES
    assert i18n.missing(lang, kiosk_msgids()) == []


def test_offline_page_says_what_the_catalogues_say() -> None:
    """The page shown while the station does not answer cannot load a catalogue: it holds
    each complete language's sentences itself, and they are the catalogues' translations."""
    found: list[tuple[str, str, str]] = []

    class Texts(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.open: tuple[str, str] | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if a.get("lang") and a.get("data-t"):
                self.open = (str(a["lang"]), str(a["data-t"]))

        def handle_data(self, data: str) -> None:
            if self.open and data.strip():
                found.append((*self.open, data.strip()))
                self.open = None

    Texts().feed(OFFLINE.read_text())
    assert {lang for lang, _, _ in found} == set(COMPLETE)
    assert len(found) == 3 * len(COMPLETE)  # title, starting, not set up
    for lang, msgid, text in found:
        assert text == i18n.translations(lang).gettext(msgid), (lang, msgid)
    script = OFFLINE.read_text()
    for _, msgid, _ in found:
        assert f'"{msgid}"' in script  # the English the page's script shows
