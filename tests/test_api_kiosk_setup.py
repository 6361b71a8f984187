"""The kiosk's words from the config (language, names, contact, hours), its QR codes at the
station's public address, and the receipt a driver keeps (in their language)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.core.config import ConfigError, config_warnings, load_config
from local_ui.charts import qr_svg
from tests.test_api_rig import api_client, make_cfg, running_station

LAN_URL = "http://192.168.1.20:8080"
STATION = {
    "id": "ui-test",
    "name": "Hofladen Müller",
    "data_dir": "",
    "language": "de",
    "contact": "Tel. 030 1234567",
    "opening_hours": "Mo–Sa 7–20 Uhr",
}


def _station(tmp: Path, **over: Any) -> dict[str, Any]:
    return {**STATION, "data_dir": str(tmp), **over}


def _bays_named() -> list[dict[str, Any]]:
    cfg = make_cfg(Path("/tmp"))
    bays = [b.model_dump(mode="json", exclude={"node_id"}) for b in cfg.bays]
    bays[0]["name"] = "Platz 1"
    bays[1]["name"] = "Fach A"
    return bays


async def test_bay_qr_holds_the_public_url(tmp_path: Path) -> None:
    http = {"host": "0.0.0.0", "port": 0, "public_url": LAN_URL + "/"}
    async with running_station(tmp_path, http=http) as rig:
        kiosk = await api_client(rig.station)
        qr = await kiosk.get("/api/v1/kiosk/bays/bay1/qr.svg")
        assert qr.status_code == 200
        assert qr.text == qr_svg(LAN_URL + "/kiosk?bay=bay1", scale=5)  # not the loopback


async def test_without_public_url_the_qr_holds_the_address_asked_for(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        kiosk = await api_client(rig.station)
        qr = await kiosk.get("/api/v1/kiosk/bays/bay1/qr.svg")
        assert qr.text == qr_svg("http://station.test/kiosk?bay=bay1", scale=5)


async def test_setup_speaks_the_configured_language(tmp_path: Path) -> None:
    async with running_station(tmp_path, station=_station(tmp_path), bays=_bays_named()) as rig:
        kiosk = await api_client(rig.station)
        d = (await kiosk.get("/api/v1/kiosk/setup")).json()
        assert d["lang"] == "de" and d["default_language"] == "de"
        assert d["messages"]["Stop charging"] == "Laden beenden"
        assert {"code": "de", "name": "Deutsch"} in d["languages"]
        assert {"code": "en", "name": "English"} in d["languages"]
        assert d["station"] == {
            "name": "Hofladen Müller",
            "contact": "Tel. 030 1234567",
            "opening_hours": "Mo–Sa 7–20 Uhr",
        }
        assert d["bay_names"] == {"bay1": "Platz 1", "locker1": "Fach A"}
        en = (await kiosk.get("/api/v1/kiosk/setup", params={"lang": "en-GB"})).json()
        assert en["lang"] == "en" and en["messages"] == {}  # English: the msgids themselves
        other = (await kiosk.get("/api/v1/kiosk/setup", params={"lang": "tlh"})).json()
        assert other["lang"] == "de"  # no catalogue: the station's language
        bad = await kiosk.get("/api/v1/kiosk/setup", params={"lang": "<script>"})
        assert bad.status_code == 422


async def _locker_session(kiosk: Any, rig: Any) -> tuple[str, str]:
    r = await kiosk.post("/api/v1/kiosk/bays/locker1/token", json={"token": "1234"})
    assert r.status_code == 200, r.text
    sid, key = r.json()["session_id"], r.json()["key"]
    rig.hub.plug("locker1")
    await rig.until(lambda: rig.status("locker1") == "Charging")
    await rig.until(lambda: (rig.station.bays["locker1"].state.session.energy_wh or 0) > 0, 20)
    r = await kiosk.post("/api/v1/kiosk/bays/locker1/stop", json={"session_id": sid, "key": key})
    assert r.status_code == 200, r.text
    return sid, key


async def test_receipt_in_german_with_wh_tariff_and_operator(tmp_path: Path) -> None:
    async with running_station(tmp_path, station=_station(tmp_path), bays=_bays_named()) as rig:
        kiosk = await api_client(rig.station)
        sid, key = await _locker_session(kiosk, rig)
        r = (await kiosk.get(f"/api/v1/kiosk/sessions/{sid}/receipt", params={"key": key})).json()
        t = r["text"]
        assert r["lang"] == "de"
        assert re.fullmatch(r"[1-9]\d* Wh", t["energy"]), t  # an e-bike: Wh, never "0,00 kWh"
        assert t["energy"] == f"{r['energy_wh']} Wh"
        assert t["tariff"] == "0,30\xa0€ pro kWh"
        assert re.fullmatch(r"\d+,\d\d\xa0€", t["cost"]), t
        assert "Hofladen Müller, Fach A" in t["meta"] and f"Ladevorgang {sid}" in t["meta"]
        assert "Betreiber: Tel. 030 1234567" in t["meta"]
        assert r["qr_url"] is None  # no public address: the QR holds the receipt as text
        assert r["qr_svg"].startswith("<svg")
        en = (
            await kiosk.get(
                f"/api/v1/kiosk/sessions/{sid}/receipt", params={"key": key, "lang": "en"}
            )
        ).json()
        assert en["text"]["tariff"] == "€0.30 per kWh" and "Operator: " in en["text"]["meta"]


async def test_receipt_qr_links_to_the_receipt_page(tmp_path: Path) -> None:
    http = {"host": "0.0.0.0", "port": 0, "public_url": LAN_URL}
    async with running_station(
        tmp_path, station=_station(tmp_path), bays=_bays_named(), http=http
    ) as rig:
        kiosk = await api_client(rig.station)
        sid, key = await _locker_session(kiosk, rig)
        r = (await kiosk.get(f"/api/v1/kiosk/sessions/{sid}/receipt", params={"key": key})).json()
        url = f"{LAN_URL}/api/v1/kiosk/sessions/{sid}/receipt.html?key={key}&lang=de"
        assert r["qr_url"] == url
        assert r["qr_svg"] == qr_svg(url, scale=4)
        page = await kiosk.get(url.removeprefix(LAN_URL))
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<h1>Quittung</h1>" in page.text and sid in page.text and "Wh" in page.text
        wrong = await kiosk.get(url.removeprefix(LAN_URL).replace(key, "0" * len(key)))
        assert wrong.status_code == 404 and sid not in wrong.text


# ----------------------------------------------------------------------------- config

BASE = """
[station]
id = "s1"
data_dir = "state"
{station}

[http]
host = "{host}"
{http}

[[buses]]
id = "b"
port = "/dev/null"

[[bays]]
id = "bay1"
connector = 1
bus = "b"
{bay}
"""


def _cfg(
    tmp: Path, *, station: str = "", host: str = "127.0.0.1", http: str = "", bay: str = ""
) -> Path:
    p = tmp / "station.toml"
    p.write_text(BASE.format(station=station, host=host, http=http, bay=bay), encoding="utf-8")
    return p


def test_defaults_keep_todays_kiosk(tmp_path: Path) -> None:
    cfg = load_config(_cfg(tmp_path))
    assert cfg.http.public_url == "" and cfg.station.language == "en"
    assert cfg.station.contact == "" and cfg.station.opening_hours == ""
    assert cfg.bays[0].name == ""
    assert config_warnings(cfg) == []  # the UI listens on loopback only: no phone needs it


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"http": 'public_url = "ftp://x"'}, "http.public_url: 'ftp://x' is not a web address"),
        ({"http": 'public_url = "192.168.1.20"'}, "http.public_url: '192.168.1.20' is not"),
        (
            {"station": 'language = "xx"'},
            "station.language: Input should be 'en', 'de', 'fr' or 'nl'",
        ),
        ({"bay": f'name = "{"x" * 25}"'}, "bays[0].name: String should have at most 24"),
        ({"station": 'name = ""'}, "station.name: String should have at least 1"),
    ],
)
def test_bad_kiosk_settings_name_the_key(tmp_path: Path, kw: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_cfg(tmp_path, **kw))
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_check_config_warns_of_a_loopback_public_url_on_a_lan_ui(tmp_path: Path) -> None:
    loop = load_config(_cfg(tmp_path, host="0.0.0.0", http='public_url = "http://127.0.0.1:8080"'))
    (w,) = config_warnings(loop)
    assert w.startswith("http.public_url: http://127.0.0.1:8080 is this machine's own loopback")
    unset = load_config(_cfg(tmp_path, host="0.0.0.0"))
    (w,) = config_warnings(unset)
    assert w.startswith("http.public_url: not set")
    lan = load_config(_cfg(tmp_path, host="0.0.0.0", http=f'public_url = "{LAN_URL}"'))
    assert config_warnings(lan) == []
    local = load_config(_cfg(tmp_path, http='public_url = "http://localhost:8080"'))
    assert config_warnings(local) == []  # the UI is not on the LAN: nobody scans from a phone
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller.cli.main",
            "check-config",
            str(_cfg(tmp_path, host="0.0.0.0", http='public_url = "http://[::1]:8080"')),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert (
        "warning: http.public_url: http://[::1]:8080 is this machine's own loopback" in out.stderr
    )
