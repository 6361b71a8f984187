"""JSON API against a real Station and Journal (httpx ASGITransport, self-driving fake nodes)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx

from tests.test_api_rig import PASSWORD, Rig, add_user, api_client, running_station, setup_owner


async def _owner(rig: Rig) -> httpx.AsyncClient:
    client = await api_client(rig.station)
    await setup_owner(client)
    return client


async def test_everything_needs_login_but_kiosk_and_schema(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        client = await api_client(rig.station)
        for path in ("/api/v1/bays", "/api/v1/sessions", "/api/v1/settings", "/api/v1/diagnostics"):
            r = await client.get(path)
            assert r.status_code == 401 and r.json()["error"] == "login_required", path
        assert (await client.get("/api/v1/kiosk/state")).status_code == 200
        assert (await client.get("/api/v1/openapi.json")).status_code == 200
        r = await client.get("/owner", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
        r = await client.get("/login", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/setup"


async def test_bays_token_flow_stop_and_detail(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        client = await _owner(rig)
        bays = (await client.get("/api/v1/bays")).json()
        assert [b["id"] for b in bays] == ["bay1", "locker1"]
        assert all(b["status"] == "Available" for b in bays)
        r = await client.post("/api/v1/bays/bay1/token", json={"token": "1234"})
        assert r.status_code == 200, r.text
        sid = r.json()["session_id"]
        assert r.json()["ok"] and r.json()["code"] == "started"
        rig.hub.plug("bay1")
        await rig.until(lambda: rig.status("bay1") == "Charging")
        await rig.until(lambda: (rig.station.bays["bay1"].state.session or _Z).energy_wh > 0)
        detail = (await client.get("/api/v1/bays/bay1")).json()
        assert detail["session"]["id"] == sid and detail["config"]["kind"] == "evse"
        assert detail["session"]["token"] == "…"  # masked everywhere, short tokens too (issue 16)
        r = await client.post(f"/api/v1/sessions/{sid}/stop")
        assert r.status_code == 200 and r.json()["code"] == "stopped"
        r = await client.post(f"/api/v1/sessions/{sid}/stop")
        assert r.status_code == 409 and r.json()["error"] == "not_running"
        assert (await client.post("/api/v1/sessions/nope/stop")).status_code == 404
        s = (await client.get(f"/api/v1/sessions/{sid}")).json()
        assert s["state"] == "closed" and s["stop_reason"] == "Owner" and s["energy_wh"] > 0
        assert s["outcome"] == "success"
        assert {e["kind"] for e in s["events"]} >= {"token_presented"} or s["events"]


class _Z:
    energy_wh = 0


async def test_token_refusals_are_409_with_code(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        client = await _owner(rig)
        r = await client.post("/api/v1/bays/bay1/token", json={"token": "9999"})
        assert r.status_code == 409 and r.json()["error"] == "not_authorized"
        r = await client.post("/api/v1/bays/nope/token", json={"token": "1234"})
        assert r.status_code == 404 and r.json()["error"] == "unknown_bay"
        r = await client.post("/api/v1/bays/bay1/token", json={"token": "1234", "mode": "boost"})
        assert r.status_code == 409 and r.json()["error"] == "confirm_boost"
        assert "demand" in r.json()["message"]
        r = await client.post("/api/v1/bays/bay1/token", json={"token": "1234", "mode": "solar"})
        assert r.status_code == 409 and r.json()["error"] == "solar_unavailable"
        r = await client.post(
            "/api/v1/bays/bay1/token",
            json={"token": "1234", "mode": "boost", "boost_confirmed": True},
        )
        assert r.status_code == 200
        row = await rig.journal.session(r.json()["session_id"])
        assert row is not None and row["mode"] == "boost"
        r = await client.post("/api/v1/bays/bay1/token", json={"token": "5678"})
        assert r.status_code == 409 and r.json()["error"] == "bay_in_use"
        r = await client.post("/api/v1/bays/bay1/token", json={"token": "1234"})
        assert r.status_code == 200 and r.json()["code"] == "stopped"


async def test_holds_create_list_cancel_and_reserved_refusal(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        client = await _owner(rig)
        r = await client.post("/api/v1/holds", json={"bay_id": "locker1", "token": "5678"})
        assert r.status_code == 201, r.text
        hold_id = r.json()["data"]["hold_id"]
        holds = (await client.get("/api/v1/holds")).json()
        assert [h["id"] for h in holds["active"]] == [hold_id]
        r = await client.post("/api/v1/holds", json={"bay_id": "locker1", "token": "2468"})
        assert r.status_code == 409
        kiosk = await api_client(rig.station)
        r = await kiosk.post("/api/v1/kiosk/bays/locker1/token", json={"token": "1234"})
        assert r.status_code == 409 and r.json()["error"] == "bay_reserved"
        assert (await client.delete(f"/api/v1/holds/{hold_id}")).status_code == 200
        assert (await client.delete(f"/api/v1/holds/{hold_id}")).status_code == 404
        assert rig.status("locker1") == "Available"
        audit = (await client.get("/api/v1/audit")).json()
        assert any(a["kind"] == "owner_created" for a in audit)


async def test_bookings_calendar_create_list_cancel(tmp_path: Path) -> None:
    import time

    async with running_station(tmp_path) as rig:
        client = await _owner(rig)
        start = time.time() + 3600
        body = {"bay_id": "locker1", "token": "5678", "start_at": start, "hold_s": 1800}
        r = await client.post("/api/v1/bookings", json=body)
        assert r.status_code == 201, r.text
        booking_id = r.json()["data"]["booking_id"]
        clash = await client.post("/api/v1/bookings", json={**body, "start_at": start + 600})
        assert clash.status_code == 409 and clash.json()["error"] == "booking_overlap"
        listed = (await client.get("/api/v1/bookings")).json()["bookings"]
        assert [(b["id"], b["state"], b["token"]) for b in listed] == [
            (booking_id, "scheduled", "…")
        ]
        assert (await client.delete(f"/api/v1/bookings/{booking_id}")).status_code == 200
        assert (await client.delete("/api/v1/bookings/nope")).status_code == 404
        again = (await client.get("/api/v1/bookings")).json()["bookings"]
        assert again[0]["state"] == "cancelled"
        bad = await client.post("/api/v1/bookings", json={**body, "start_at": "tomorrow"})
        assert bad.status_code == 422


async def test_sessions_filters_pagination_csv_and_stats(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        client = await _owner(rig)
        rig.hub.plug("bay1")
        ids = []
        for token, mode in (("1234", "standard"), ("5678", "eco"), ("2468", "standard")):
            r = await client.post("/api/v1/bays/bay1/token", json={"token": token, "mode": mode})
            assert r.status_code == 200, r.text
            await rig.until(lambda: (rig.station.bays["bay1"].state.session or _Z).energy_wh > 0)
            ids.append(r.json()["session_id"])
            assert (await client.post(f"/api/v1/sessions/{ids[-1]}/stop")).status_code == 200
            rig.hub.plug("bay1", False)  # the EV leaves: the bay is free again
            await rig.until(lambda: rig.status("bay1") == "Available")
            rig.hub.plug("bay1")
        page = (await client.get("/api/v1/sessions", params={"limit": 2})).json()
        assert page["total"] == 3 and len(page["items"]) == 2
        assert page["items"][0]["id"] == ids[-1]  # newest first
        page2 = (await client.get("/api/v1/sessions", params={"limit": 2, "offset": 2})).json()
        assert [s["id"] for s in page2["items"]] == [ids[0]]
        eco = (await client.get("/api/v1/sessions", params={"mode": "eco"})).json()
        assert [s["id"] for s in eco["items"]] == [ids[1]]
        by_bay = (await client.get("/api/v1/sessions", params={"bay_id": "locker1"})).json()
        assert by_bay["total"] == 0
        ok = (await client.get("/api/v1/sessions", params={"outcome": "success"})).json()
        assert ok["total"] == 3
        err = (await client.get("/api/v1/sessions", params={"outcome": "error"})).json()
        assert err["total"] == 0
        future = (await client.get("/api/v1/sessions", params={"since": "2099-01-01"})).json()
        assert future["total"] == 0
        r = await client.get(
            "/api/v1/sessions", params={"since": "2026-02-01", "until": "2026-01-01"}
        )
        assert r.status_code == 422
        r = await client.get("/api/v1/sessions.csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(r.content.decode("utf-8"))))
        assert rows[0][:3] == ["session_id", "bay_id", "connector"]
        assert [row[0] for row in rows[1:]] == ids  # oldest first
        assert all(float(row[6]) > 0 for row in rows[1:])
        stats = (await client.get("/api/v1/stats/monthly", params={"months": 3})).json()
        assert len(stats["months"]) == 3 and stats["totals"]["sessions"] == 3
        kwh = sum(float(row[6]) for row in rows[1:])
        assert abs(stats["totals"]["energy_kwh"] - kwh) < 0.01
        assert stats["totals"]["cost"] is not None
        svg = await client.get("/api/v1/stats/monthly.svg")
        assert svg.headers["content-type"].startswith("image/svg+xml") and b"<rect" in svg.content


async def test_settings_change_is_validated_applied_and_audited(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        client = await _owner(rig)
        s = (await client.get("/api/v1/settings")).json()
        assert set(s["sections"]) >= {"tariff", "kiosk"}
        r = await client.patch("/api/v1/settings/tariff", json={"per_kwh": -1})
        assert r.status_code == 422 and "price per kWh" in r.json()["message"]
        r = await client.patch("/api/v1/settings/tariff", json={"bogus": 1})
        assert r.status_code == 422
        r = await client.patch("/api/v1/settings/tariff", json={"per_kwh": 0.45})
        assert r.status_code == 200 and r.json()["values"]["per_kwh"] == 0.45
        assert rig.station.cfg.tariff.per_kwh == 0.45
        assert (await client.get("/api/v1/station")).json()["tariff"]["per_kwh"] == 0.45
        assert await rig.journal.kv_get("ui.settings.tariff") == rig.station.cfg.tariff.model_dump()
        audit = (await client.get("/api/v1/audit", params={"kind": "settings_changed"})).json()
        assert audit[0]["detail"]["changes"]["per_kwh"] == {"old": 0.3, "new": 0.45}
        assert audit[0]["actor"] == "user:owner"
        assert (await client.patch("/api/v1/settings/nope", json={})).status_code == 404


async def test_roles(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        owner = await _owner(rig)
        viewer = await add_user(owner, "vic", "viewer")
        installer = await add_user(owner, "ian", "installer")
        assert (await viewer.get("/api/v1/bays")).status_code == 200
        r = await viewer.post("/api/v1/bays/bay1/token", json={"token": "1234"})
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        assert (
            await viewer.patch("/api/v1/settings/tariff", json={"per_kwh": 1})
        ).status_code == 403
        assert (
            await installer.patch("/api/v1/settings/tariff", json={"per_kwh": 1})
        ).status_code == 403
        assert (
            await installer.patch("/api/v1/settings/kiosk", json={"idle_timeout_s": 90})
        ).status_code == 200
        assert (await installer.get("/api/v1/users")).status_code == 403
        r = await owner.post("/api/v1/diagnostics/bays/locker1/test", json={"action": "unlock"})
        assert r.status_code == 403
        r = await installer.post("/api/v1/diagnostics/bays/locker1/test", json={"action": "unlock"})
        assert r.status_code == 200, r.text
        assert rig.hub.nodes["locker1"].locked is False
        r = await installer.post(
            "/api/v1/diagnostics/bays/bay1/test", json={"action": "ramp", "hold_s": 0.1}
        )
        assert r.status_code == 202 and len(r.json()["plan_a"]) >= 3  # runs in the background
        r = await installer.post("/api/v1/diagnostics/bays/bay1/test", json={"action": "lock"})
        assert r.status_code == 409 and r.json()["error"] == "not_supported"
        assert (await owner.delete("/api/v1/users/vic")).status_code == 200
        assert (await viewer.get("/api/v1/bays")).status_code == 401  # its login ended
        assert (await owner.delete("/api/v1/users/owner")).status_code == 409


async def test_diagnostics_and_station(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        client = await _owner(rig)
        d = (await client.get("/api/v1/diagnostics")).json()
        node = d["nodes"][0]
        assert node["online"] and node["firmware"] == "fake-1.2.3"
        assert 0 <= node["heartbeat_age_s"] < 5 and node["link"]["frames_rx"] > 0
        assert d["ocpp"] == {"connected": None, "outbox_depth": 0}
        assert not d["meters"] and d["load"] is None  # no meter, no load manager here
        st = (await client.get("/api/v1/station")).json()
        assert st["accepting_sessions"] is True and st["pv_available"] is False
        await rig.station.safety.emergency_stop(True)
        st = (await client.get("/api/v1/station")).json()
        assert st["accepting_sessions"] is False and "emergency_stop" in st["blocked"]
        r = await client.post("/api/v1/bays/bay1/token", json={"token": "1234"})
        assert r.status_code == 409 and r.json()["error"] == "blocked_emergency_stop"
        r = await client.post("/api/v1/station/blockers/emergency_stop/clear")
        assert r.status_code == 409 and r.json()["error"] == "still_pressed"
        await rig.station.safety.emergency_stop(False)
        assert "emergency_stop" in rig.station.safety.blockers  # latched
        r = await client.post("/api/v1/station/blockers/emergency_stop/clear")
        assert r.status_code == 200 and r.json()["accepting_sessions"] is True
        assert not rig.station.safety.blockers


async def test_load_bar_appears_when_a_load_manager_reports(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        client = await _owner(rig)
        rig.station.load_status = lambda: {  # type: ignore[method-assign]
            "limit_a": 32,
            "building_a": [20, 31, 10],
            "chargers_a": [8, 8, 8],
        }
        load = (await client.get("/api/v1/station")).json()["load"]
        assert [p["level"] for p in load["phases"]] == ["ok", "high", "ok"]
        assert load["phases"][0]["other_a"] == 12


async def test_login_rate_limit_and_logout(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        client = await _owner(rig)
        other = await api_client(rig.station)
        other.headers["X-CSRF-Token"] = other.cookies["es_csrf"]
        for _ in range(4):
            r = await other.post(
                "/api/v1/auth/login", json={"username": "owner", "password": "wrong!"}
            )
            assert r.status_code == 401
        r = await other.post("/api/v1/auth/login", json={"username": "owner", "password": "wrong!"})
        assert r.status_code == 401
        r = await other.post("/api/v1/auth/login", json={"username": "owner", "password": PASSWORD})
        assert r.status_code == 429 and "Retry-After" in r.headers
        assert (await client.post("/api/v1/auth/logout")).status_code == 200
        assert (await client.get("/api/v1/bays")).status_code == 401


async def test_csrf_and_setup_code(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        client = await api_client(rig.station)
        r = await client.post(
            "/api/v1/auth/setup", json={"code": "WRONG", "username": "o", "password": PASSWORD}
        )
        assert r.status_code == 403 and r.json()["error"] == "wrong_setup_code"
        del client.headers["X-CSRF-Token"]
        r = await client.post("/api/v1/auth/login", json={"username": "o", "password": PASSWORD})
        assert r.status_code == 403 and r.json()["error"] == "csrf"
        client.headers["X-CSRF-Token"] = "forged"
        r = await client.post("/api/v1/auth/login", json={"username": "o", "password": PASSWORD})
        assert r.status_code == 403 and r.json()["error"] == "csrf"
        client.headers["X-CSRF-Token"] = client.cookies["es_csrf"]
        await setup_owner(client)
        r = await client.post(
            "/api/v1/auth/setup", json={"code": "X", "username": "o2", "password": PASSWORD}
        )
        assert r.status_code in (403, 409)
        row = await rig.journal.query("SELECT password_hash FROM ui_users")
        assert row[0]["password_hash"].startswith("$argon2id$")
        r = await client.get("/kiosk")
        assert "default-src 'self'" in r.headers["content-security-policy"]
        session_cookie = next(c for c in client.cookies.jar if c.name == "es_session")
        assert session_cookie.has_nonstandard_attr("HttpOnly")


async def test_load_bar_shows_freshness_and_rule_conflicts(tmp_path: Path) -> None:
    status = {
        "limit_a": [25, 25, 25],
        "building_a": [24, 10, 5],
        "chargers_a": [0, 0, 0],
        "freshness": "stale",
        "conflicts": ["rule a vs rule b"],
    }
    async with running_station(tmp_path) as rig:
        client = await _owner(rig)
        assert (await client.get("/api/v1/station")).json()["load"] is None  # no [site]
        rig.station.load_status = lambda: status  # type: ignore[method-assign]
        load = (await client.get("/api/v1/station")).json()["load"]
        assert load["phases"][0]["level"] == "high" and load["freshness"] == "stale"
        assert load["conflicts"] == ["rule a vs rule b"]
