"""Every message of the owner forms is a sentence about the person's action (issue 16).

A set of bad inputs per form goes through the real app; each answer must name
the field by its hand-written label, with no field path, validator wording,
internal id or JSON. The settings sections' labels are written by hand too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from local_ui.messages import LABELS, human
from tests.test_api_load import BAYS, SITE
from tests.test_api_rig import Rig, add_user, api_client, running_station, setup_owner


async def _owner(rig: Rig) -> httpx.AsyncClient:
    client = await api_client(rig.station)
    await setup_owner(client)
    return client


def _assert_sentence(r: httpx.Response, *must: str) -> str:
    assert r.status_code in (403, 404, 409, 422), r.text
    msg = str(r.json()["message"])
    assert human(msg), f"not a sentence for a person: {msg!r}"
    for word in must:
        assert word.lower() in msg.lower(), f"{word!r} not in {msg!r}"
    return msg


def test_the_checker_catches_what_the_walk_found() -> None:
    for bad in (
        "per_kwh: Input should be greater than or equal to 0",
        "main_limit_a.2: Field required",
        "site.main_guaranteed_headroom_a: 10.0 A on L1 above main_limit_a 5.0 A",
        "Bay bay1 is already booked then (9f2c4e1a77b04d3c).",
        'Refused: {"cause": "x"}',
    ):
        assert not human(bad), bad
    assert human("The price per kWh cannot be negative.")


SETTINGS_CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("tariff", {"per_kwh": -1}, ("price per kWh", "negative")),
    ("tariff", {"per_kwh": "cheap"}, ("price per kWh", "number")),
    ("tariff", {"currency": "E"}, ("currency",)),
    ("tariff", {"surprise": 1}, ("reload",)),
    ("kiosk", {"idle_timeout_s": 0}, ("idle time", "15")),
    ("kiosk", {"welcome_text": "x" * 200}, ("welcome text", "80")),
    ("site", {"main_limit_a": [1, 2]}, ("main breaker limit", "three numbers")),
    ("site", {"main_limit_a": -1}, ("main breaker limit",)),
    ("site", {"main_guaranteed_headroom_a": 40}, ("guaranteed headroom", "main breaker limit")),
    ("site", {"main_limit_a": 5, "main_guaranteed_headroom_a": 5}, ("minimum",)),
    ("site", {"main_guaranteed_headroom_a": 0}, ("headroom", "safe current")),
    ("site", {"circuits": [{"id": "c1", "limit_a": 10, "parent": "x"}]}, ("“x”",)),
    ("site", {"circuits": [{"id": "main", "limit_a": 10}]}, ("main breaker",)),
    ("load_modes", {"min_on_time_s": 0}, ("minimum on time", "30 s")),
    ("load_modes", {"min_off_time_s": 5}, ("minimum off time", "30 s")),
    ("load_modes", {"eco_current_a": 4}, ("eco current", "6")),
    ("load_modes", {"relay_cycles_per_hour": 0}, ("relay starts",)),
    (
        "load_rules",
        {"rules": [{"id": "x", "kind": "bay_current_cap", "amps": 8, "bays": ["nope"]}]},
        ("rule 1", "“nope”"),
    ),
    (
        "load_rules",
        {"rules": [{"id": "x", "kind": "bay_current_cap", "amps": -3}]},
        ("rule 1", "current limit"),
    ),
    (
        "load_rules",
        {"rules": [{"id": "x", "kind": "bay_current_cap", "amps": 8, "from": "18:00"}]},
        ("start and an end",),
    ),
    (
        "load_rules",
        {"rules": [{"id": "x", "kind": "bay_current_cap", "amps": 8, "days": []}]},
        ("day",),
    ),
]


async def test_settings_forms_answer_bad_input_with_sentences(tmp_path: Path) -> None:
    async with running_station(tmp_path, site=SITE, bays=BAYS) as rig:
        owner = await _owner(rig)
        for section, patch, must in SETTINGS_CASES:
            for how in ("check", "patch"):
                if how == "check":
                    r = await owner.post(f"/api/v1/settings/{section}/check", json=patch)
                else:
                    r = await owner.patch(f"/api/v1/settings/{section}", json=patch)
                assert r.status_code == 422, (section, patch, r.text)
                _assert_sentence(r, *must)
                for d in r.json().get("details", []):
                    assert human(d["msg"]), d  # the details a client may show, too
        viewer = await add_user(owner, "vic", "viewer")
        _assert_sentence(await viewer.patch("/api/v1/settings/tariff", json={"per_kwh": 1}))


async def test_rule_conflict_warnings_read_as_sentences(tmp_path: Path) -> None:
    rules = [
        {"id": "evening", "kind": "bay_current_cap", "amps": 10, "from": "18:00", "to": "06:00"},
        {"id": "vip", "kind": "bay_current_cap", "priority": 5, "amps": 14, "bays": ["bay1"]},
        {"id": "site1", "kind": "site_power_cap", "kw": 1},
    ]
    async with running_station(tmp_path, site=SITE, bays=BAYS) as rig:
        owner = await _owner(rig)
        r = await owner.post("/api/v1/settings/load_rules/check", json={"rules": rules})
        assert r.status_code == 200, r.text
        warnings = r.json()["warnings"]
        assert warnings
        for w in warnings:
            assert human(w["message"]), w["message"]
            assert "'" not in w["message"]  # rule names in quotes a reader knows: “vip”


async def test_every_settings_field_has_a_written_label(tmp_path: Path) -> None:
    async with running_station(tmp_path, site=SITE, bays=BAYS) as rig:
        owner = await _owner(rig)
        sections = (await owner.get("/api/v1/settings")).json()["sections"]
        seen = 0
        for sec in sections.values():
            for key, prop in sec["schema"].get("properties", {}).items():
                seen += 1
                assert key in LABELS, f"{key} has no written label"
                assert prop["title"] == LABELS[key].title
                # A generated title ("Per Kwh", "Idle Timeout S") is the name, capitalized.
                if "_" in key:
                    assert prop["title"] != key.replace("_", " ").title()
        assert seen >= 12
        modes = sections["load_modes"]["schema"]["properties"]
        assert modes["min_on_time_s"]["minimum"] >= 30  # the form cannot offer 0


FORM_CASES: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    ("POST", "/api/v1/holds", {"bay_id": "", "token": "12"}, ("choose a bay",)),
    ("POST", "/api/v1/holds", {"token": "12"}, ("choose a bay",)),
    ("POST", "/api/v1/holds", {"bay_id": "bay1", "token": ""}, ("card or code",)),
    ("POST", "/api/v1/holds", {"bay_id": "bay1", "token": "a b"}, ("card or code",)),
    (
        "POST",
        "/api/v1/holds",
        {"bay_id": "bay1", "token": "1234", "duration_s": 1},
        ("hold time", "60"),
    ),
    ("POST", "/api/v1/bookings", {"token": "12", "start_at": 1}, ("choose a bay",)),
    ("POST", "/api/v1/bookings", {"bay_id": "bay1", "token": "12"}, ("start time",)),
    (
        "POST",
        "/api/v1/bookings",
        {"bay_id": "bay1", "token": "12", "start_at": "soon"},
        ("start time", "number"),
    ),
    ("POST", "/api/v1/users", {"username": "a b", "password": "x" * 12, "role": "viewer"}, ()),
    ("POST", "/api/v1/users", {"username": "ann", "password": "short", "role": "viewer"}, ()),
    ("POST", "/api/v1/users", {"username": "ann", "password": "x" * 12, "role": "boss"}, ()),
    ("POST", "/api/v1/bays/bay1/token", {"token": "1234", "quota_wh": 0}, ("energy limit",)),
    ("POST", "/api/v1/bays/bay1/availability", {"available": "maybe"}, ("available",)),
    ("POST", "/api/v1/auth/password", {"current_password": "x", "new_password": "y"}, ()),
    ("GET", "/api/v1/sessions?limit=0", {}, ("rows",)),
    ("GET", "/api/v1/sessions?since=yesterday", {}, ("start date",)),
    ("GET", "/api/v1/audit?category=everything", {}, ()),
]


@pytest.mark.parametrize(("method", "path", "body", "must"), FORM_CASES)
async def test_forms_answer_bad_input_with_sentences(
    tmp_path: Path, method: str, path: str, body: dict[str, Any], must: tuple[str, ...]
) -> None:
    async with running_station(tmp_path) as rig:
        owner = await _owner(rig)
        r = await owner.request(method, path, json=body if method != "GET" else None)
        assert r.status_code == 422, r.text
        _assert_sentence(r, *must)


async def test_a_booking_overlap_names_the_time_not_an_id(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        owner = await _owner(rig)
        start = rig.station.clock.wall() + 3600
        body = {"bay_id": "bay1", "token": "1234", "start_at": start, "hold_s": 1800}
        assert (await owner.post("/api/v1/bookings", json=body)).status_code == 201
        r = await owner.post("/api/v1/bookings", json={**body, "start_at": start + 600})
        assert r.status_code == 409
        msg = _assert_sentence(r, "already booked")
        assert re.search(r"\d\d:\d\d", msg), msg  # when the other booking is
        booking_id = (await owner.get("/api/v1/bookings")).json()["bookings"][0]["id"]
        assert booking_id not in msg
