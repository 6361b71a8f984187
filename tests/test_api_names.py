"""The station's and the bays' names in the owner's settings: applied live (the kiosk's words
change without a restart), kept and restored, audited, refused in sentences in the owner's
language (empty, too long, two bays alike)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract

from local_ui import i18n
from local_ui.messages import human
from local_ui.server import default_registry
from tests.test_api_rig import api_client, running_station, setup_owner

ROOT = Path(__file__).resolve().parents[1]


def owner_msgids() -> list[str]:
    with (ROOT / "local_ui" / "name_settings.py").open("rb") as f:
        return [str(m) for _, m, _, _ in extract("python", f) if isinstance(m, str)]


@pytest.mark.parametrize("lang", ["de", "fr", "nl"])
def test_every_refusal_is_translated_with_its_placeholders(lang: str) -> None:
    ids = owner_msgids()
    assert len(ids) == 5 and "Two bays are called “{name}”: give each its own name." in ids
    assert i18n.missing(lang, ids, domain="owner") == []
    for msgid in ids:
        text = i18n.translations(lang, "owner").gettext(msgid)
        assert text != msgid
        assert sorted(re.findall(r"\{\w+\}", text)) == sorted(re.findall(r"\{\w+\}", msgid))


def test_the_browser_language_is_negotiated() -> None:
    assert i18n.negotiate("de-AT,de;q=0.9,en;q=0.8") == "de"
    assert i18n.negotiate("xx, nl;q=0.5, fr;q=0.7") == "fr"
    assert i18n.negotiate("de;q=0, en") == "en"
    assert i18n.negotiate("de;q=oops") == "en"
    assert i18n.negotiate(None) == "en"


# A change, the field refused, the sentence in English and in German.
REFUSALS: list[tuple[dict[str, object], str, str, str]] = [
    (
        {"station_name": "  "},
        "station_name",
        "Give the station a name: drivers see it on the touchscreen and on receipts.",
        "Geben Sie der Station einen Namen: Fahrer sehen ihn auf dem Bildschirm und auf "
        "den Quittungen.",
    ),
    (
        {"station_name": "S" * 61},
        "station_name",
        "The station's name can have at most 60 characters.",
        "Der Name der Station darf höchstens 60 Zeichen haben.",
    ),
    (
        {"bay_names": {"locker1": "Fahrradfach am Hintereingang"}},
        "bay_names.locker1",
        "A bay's name can have at most 24 characters: “Fahrradfach am Hintereingang” is longer.",
        "Der Name eines Ladeplatzes darf höchstens 24 Zeichen haben: „Fahrradfach am "
        "Hintereingang“ ist länger.",
    ),
    (
        {"bay_names": {"bay1": "Platz 1", "locker1": "platz 1 "}},
        "bay_names.locker1",
        "Two bays are called “platz 1”: give each its own name.",
        "Zwei Ladeplätze heißen „platz 1“: Geben Sie jedem einen eigenen Namen.",
    ),
    (
        {"bay_names": {"bay9": "Neu"}},
        "bay_names",
        "The form named a bay this station does not have; reload the page and try again.",
        "Das Formular nennt einen Ladeplatz, den diese Station nicht hat; laden Sie die "
        "Seite neu und versuchen Sie es noch einmal.",
    ),
]


async def test_names_change_live_are_kept_and_audited(tmp_path: Path) -> None:
    """Refused first (in the owner's language, nothing changed), then changed live."""
    async with running_station(tmp_path) as rig:
        owner = await api_client(rig.station)
        await setup_owner(owner)
        sec = (await owner.get("/api/v1/settings/names")).json()
        assert sec["values"] == {
            "station_name": "Test Station",
            "bay_names": {"bay1": "", "locker1": ""},
        }
        assert sec["schema"]["properties"]["station_name"]["title"] == "Station name"
        for patch, field, en, de in REFUSALS:
            r = await owner.patch("/api/v1/settings/names", json=patch)
            assert r.status_code == 422, patch
            assert (r.json()["message"], r.json()["field"]) == (en, field)
            assert human(en)
            german = await owner.post(
                "/api/v1/settings/names/check",
                json=patch,
                headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"},
            )
            assert german.status_code == 422 and german.json()["message"] == de
            assert human(de)
            assert rig.station.cfg.station.name == "Test Station"  # nothing changed
            assert [b.name for b in rig.station.cfg.bays] == ["", ""]
            assert await rig.journal.kv_get("ui.settings.names") is None
        # ?lang= (a page that knows its language) wins over the browser's header.
        r = await owner.post(
            "/api/v1/settings/names/check",
            params={"lang": "nl"},
            json={"station_name": ""},
            headers={"Accept-Language": "de"},
        )
        assert r.json()["message"].startswith("Geef het station een naam")
        r = await owner.patch(
            "/api/v1/settings/names",
            json={"station_name": " Hofladen Nord ", "bay_names": {"bay1": "Platz 1"}},
        )
        assert r.status_code == 200, r.text
        # Only the named bay changes; names are trimmed.
        assert r.json()["values"] == {
            "station_name": "Hofladen Nord",
            "bay_names": {"bay1": "Platz 1", "locker1": ""},
        }
        # Live: what the kiosk reads, without a restart.
        setup = (await owner.get("/api/v1/kiosk/setup", params={"lang": "de"})).json()
        assert setup["station"]["name"] == "Hofladen Nord"
        assert setup["bay_names"] == {"bay1": "Platz 1"}
        assert (await owner.get("/api/v1/kiosk/state")).json()["station"]["name"] == (
            "Hofladen Nord"
        )
        audit = (await owner.get("/api/v1/audit", params={"kind": "settings_changed"})).json()
        assert "Station name Test Station → Hofladen Nord" in audit[0]["text"]
        assert "Bay names: bay1 none → Platz 1" in audit[0]["text"]
        assert human(audit[0]["text"])
        # Kept: a restart (a fresh registry over the same journal) applies them again, even
        # when a bay named then is gone now.
        kept = await rig.journal.kv_get("ui.settings.names")
        assert kept == {
            "station_name": "Hofladen Nord",
            "bay_names": r.json()["values"]["bay_names"],
        }
        await rig.journal.kv_set(
            "ui.settings.names",
            {**kept, "bay_names": {**kept["bay_names"], "removed-bay": "Alt"}},
        )
        rig.station.cfg.station.name = "Test Station"
        rig.station.bays["bay1"].cfg.name = ""
        await default_registry().restore(rig.station)
        assert rig.station.cfg.station.name == "Hofladen Nord"
        assert rig.station.bays["bay1"].cfg.name == "Platz 1"
