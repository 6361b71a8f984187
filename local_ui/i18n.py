"""Translations and locale formatting for the pages: gettext catalogues read with Babel.

Owns ``local_ui/locale/<lang>/LC_MESSAGES/<domain>.po``. English is the source language
(its msgids are the English sentences); every other language is a catalogue. The ``.po``
files are compiled in memory the first time a language is asked for, so a fresh checkout
runs without a build step. A sentence a catalogue lacks falls back to English (tests
guard that the complete languages lack none).

The API, small on purpose (the owner UI may reuse it with its own domain):

- ``LANGUAGES``: the languages that have a catalogue, English first.
- ``pick(wanted, default)``: the supported language for a tag such as ``"de-AT"``.
- ``negotiate(accept_language)``: the supported language a browser's header asks for.
- ``translations(lang, domain)``: a :class:`gettext.NullTranslations` for server-side text.
- ``catalogue(lang, domain)``: every msgid -> translated text, for a page's script.
- ``missing(lang, domain, msgids)``: the msgids a catalogue does not translate.
- ``native_name(lang)``: the language's own name ("Deutsch"), for a language button.
- ``money``, ``decimal``, ``when``: numbers, amounts and times formatted per language (CLDR).

Messages may hold ``{name}`` placeholders, filled in after translation.
"""

from __future__ import annotations

import datetime as dt
import functools
import gettext
import io
from collections.abc import Iterable
from pathlib import Path

from babel import Locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal

LOCALE_DIR = Path(__file__).parent / "locale"
SOURCE = "en"
DEFAULT_DOMAIN = "kiosk"


def _available() -> tuple[str, ...]:
    found = sorted(p.name for p in LOCALE_DIR.iterdir() if (p / "LC_MESSAGES").is_dir())
    return (SOURCE, *[lang for lang in found if lang != SOURCE])


LANGUAGES: tuple[str, ...] = _available()


def pick(wanted: str | None, default: str = SOURCE) -> str:
    """The supported language for ``wanted`` ("de", "de-AT", "de_DE"), else ``default``."""
    if wanted:
        base = wanted.replace("_", "-").split("-", 1)[0].lower()
        if base in LANGUAGES:
            return base
    return default if default in LANGUAGES else SOURCE


def negotiate(accept_language: str | None, default: str = SOURCE) -> str:
    """The language to answer in for an ``Accept-Language`` header ("de-AT,de;q=0.9,en;q=0.8"):
    the most wanted one that has a catalogue, else ``default``."""
    wanted: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")[:32]):
        tag, _, param = part.strip().partition(";")
        q = 1.0
        if param.strip().startswith("q="):
            try:
                q = float(param.strip()[2:])
            except ValueError:
                q = 0.0
        if tag.strip() and q > 0:
            wanted.append((-q, i, tag.strip()))
    for _, _, tag in sorted(wanted):
        base = tag.replace("_", "-").split("-", 1)[0].lower()
        if base in LANGUAGES:
            return base
    return default if default in LANGUAGES else SOURCE


@functools.cache
def _compiled(lang: str, domain: str) -> tuple[gettext.NullTranslations, dict[str, str]]:
    po = LOCALE_DIR / lang / "LC_MESSAGES" / f"{domain}.po"
    if lang == SOURCE or not po.is_file():
        return gettext.NullTranslations(), {}
    with po.open("rb") as f:
        cat = read_po(f, locale=lang, domain=domain)
    table = {
        str(m.id): str(m.string)
        for m in cat
        if m.id and isinstance(m.id, str) and isinstance(m.string, str) and m.string
        if not m.fuzzy
    }
    buf = io.BytesIO()
    write_mo(buf, cat)
    buf.seek(0)
    return gettext.GNUTranslations(buf), table


def translations(lang: str, domain: str = DEFAULT_DOMAIN) -> gettext.NullTranslations:
    """gettext translations for ``lang`` (English: the msgids themselves)."""
    return _compiled(pick(lang), domain)[0]


def catalogue(lang: str, domain: str = DEFAULT_DOMAIN) -> dict[str, str]:
    """Every translated msgid of ``lang``'s catalogue (empty for English: msgids are English)."""
    return dict(_compiled(pick(lang), domain)[1])


def missing(lang: str, msgids: Iterable[str], domain: str = DEFAULT_DOMAIN) -> list[str]:
    """The msgids ``lang`` has no translation for (none for the source language)."""
    if lang == SOURCE:
        return []
    table = _compiled(lang, domain)[1]
    return [m for m in msgids if not table.get(m)]


def native_name(lang: str) -> str:
    """The language's name in itself, capitalised ("Deutsch", "Français")."""
    name = Locale.parse(lang).get_display_name(lang) or lang
    return name[:1].upper() + name[1:]


def money(value: float | None, currency: str, lang: str) -> str:
    """An amount as ``lang`` writes it ("1,50 €" in German, "€1.50" in English)."""
    if value is None:
        return "–"
    return str(format_currency(value, currency, locale=pick(lang)))


def decimal(value: float, lang: str, digits: int = 2) -> str:
    """A number with exactly ``digits`` decimals, in ``lang``'s notation."""
    fmt = "#,##0" + ("." + "0" * digits if digits > 0 else "")
    return str(format_decimal(value, format=fmt, locale=pick(lang)))


def when(ts: float | None, lang: str, tz: dt.tzinfo | None = None) -> str:
    """A wall-clock time (Unix seconds) as a medium date and short time in ``lang``."""
    if ts is None:
        return "–"
    moment = dt.datetime.fromtimestamp(ts, tz or dt.UTC).astimezone(tz)
    return str(format_datetime(moment, "medium", tzinfo=moment.tzinfo, locale=pick(lang)))
