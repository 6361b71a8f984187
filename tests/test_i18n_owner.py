"""The owner and member pages' new sentences (invitations, usage per member) are in the
``owner`` catalogue: German complete, French and Dutch too; placeholders survive."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from local_ui import api_invites, i18n

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "local_ui" / "static"
PAGES = ("invite.html", "owner.html", "member.html")
SCRIPTS = ("invite.js", "members.js", "member.js")
COMPLETE = ["de", "fr", "nl"]


def owner_msgids() -> list[str]:
    """data-t in the pages, T("…") in their scripts, and the invitation API's sentences."""
    ids: list[str] = []

    def add(m: str) -> None:
        if m and m not in ids:
            ids.append(m)

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            for k, v in attrs:
                if k == "data-t" and v:
                    add(v)

    for page in PAGES:
        Tags().feed((STATIC / page).read_text())
    for script in SCRIPTS:
        for m in re.finditer(r'\bT\("((?:[^"\\]|\\.)*)"', (STATIC / script).read_text()):
            add(m.group(1).replace('\\"', '"'))
    for msg in (*api_invites.REFUSALS.values(), api_invites.TOO_SHORT, api_invites.TOO_EASY):
        add(msg)
    return ids


def test_extraction_finds_the_sentences() -> None:
    ids = owner_msgids()
    for want in (
        "Invite a member",  # owner.html
        "Join and log in",  # invite.html
        "My usage",  # member.html
        "Cards of no member",  # members.js
        "Welcome, {name}",  # invite.js
        api_invites.REFUSALS["expired"],  # the API
    ):
        assert want in ids
    assert len(ids) > 30


@pytest.mark.parametrize("lang", COMPLETE)
def test_every_sentence_is_translated(lang: str) -> None:
    assert i18n.missing(lang, owner_msgids(), domain=api_invites.DOMAIN) == []


@pytest.mark.parametrize("lang", COMPLETE)
def test_translations_keep_their_placeholders(lang: str) -> None:
    table = i18n.catalogue(lang, api_invites.DOMAIN)
    assert table
    for msgid, text in table.items():
        want = sorted(re.findall(r"\{\w+\}", msgid))
        assert sorted(re.findall(r"\{\w+\}", text)) == want, (lang, msgid, text)
