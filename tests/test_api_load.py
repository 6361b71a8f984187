"""Load-manager settings (site limits, modes, rules) and installer tests through the JSON API.

A real Station + Journal + LoadLoop (``[site]`` in the config) with self-driving
fake nodes; grid readings are fed with ``station.meters.on_reading``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from controller.ports import Freshness, MeterReading, MeterSample
from tests.test_api_rig import Rig, add_user, api_client, running_station, setup_owner

SITE: dict[str, Any] = {
    "main_limit_a": 32,
    "main_guaranteed_headroom_a": 6,
    "min_on_time_s": 30,
    "min_off_time_s": 30,
    "increase_delay_s": 1,
    "ramp_step_a": 16,
    "grid_meter_timeout_s": 600,
}
BAYS: list[dict[str, Any]] = [
    {
        "id": "bay1",
        "connector": 1,
        "kind": "evse",
        "bus": "bus1",
        "address": 1,
        "safe_current_a": 6,
    },
    {
        "id": "locker1",
        "connector": 2,
        "kind": "locker",
        "bus": "bus1",
        "address": 2,
        "phases": 1,
        "phase": "L1",
        "max_current_a": 10,
    },
]


def grid(amps: float) -> MeterReading:
    now = time.monotonic()
    return MeterReading("grid", now, Freshness.FRESH, MeterSample(at=now, current_a=(amps,) * 3))


async def _owner(rig: Rig) -> httpx.AsyncClient:
    client = await api_client(rig.station)
    await setup_owner(client)
    return client


def _feed(rig: Rig, building_a: float) -> None:
    """The grid meter sees the building plus what the chargers draw now."""
    ev = sum(rt.telemetry.current_a[0] for rt in rig.station.bays.values() if rt.telemetry)
    rig.station.meters.on_reading(grid(building_a + ev), role="grid")


@contextlib.asynccontextmanager
async def grid_meter(rig: Rig, building_a: float = 2.0) -> AsyncIterator[None]:
    async def run() -> None:
        while True:
            _feed(rig, building_a)
            await asyncio.sleep(0.05)  # a meter polls on its own period

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _charging(rig: Rig, client: httpx.AsyncClient) -> None:
    """bay1 charges at its maximum (16 A)."""
    r = await client.post("/api/v1/bays/bay1/token", json={"token": "1234"})
    assert r.status_code == 200, r.text
    rig.hub.plug("bay1")
    await rig.until(lambda: rig.hub.nodes["bay1"].setpoint_a == 16.0)


async def test_site_limit_change_is_applied_live_audited_and_kept(tmp_path: Path) -> None:
    async with running_station(tmp_path, site=SITE, bays=BAYS) as rig:
        owner = await _owner(rig)
        s = (await owner.get("/api/v1/settings")).json()["sections"]
        assert {"site", "load_modes", "load_rules"} <= set(s)
        assert s["site"]["available"] and s["site"]["values"]["main_limit_a"] == [32, 32, 32]
        assert s["site"]["roles"] == ["installer", "owner"] and s["load_rules"]["roles"] == [
            "owner"
        ]
        load = rig.station.load
        assert load is not None
        async with grid_meter(rig):
            await _charging(rig, owner)
            await _limit_live(rig, owner)
        # Raising a limit does not jump: the new controller starts from the old setpoints.
        before = dict(load.ctl.setpoints_a)
        load.reconfigure(load.config.model_copy())
        assert load.ctl.setpoints_a == before
        # Modes: Eco current and relay protection.
        r = await owner.patch(
            "/api/v1/settings/load_modes", json={"eco_current_a": 8, "relay_cycles_per_hour": 6}
        )
        assert r.status_code == 200, r.text
        assert load.config.site.eco_current_a == 8 and load.config.site.relay_cycles_per_hour == 6


async def _limit_live(rig: Rig, owner: httpx.AsyncClient) -> None:
    load = rig.station.load
    assert load is not None
    old_ctl = load.ctl
    r = await owner.patch("/api/v1/settings/site", json={"main_limit_a": [12, 12, 12]})
    assert r.status_code == 200, r.text
    assert r.json()["values"]["main_limit_a"] == [12, 12, 12]
    # The running load manager took the new config (a new controller, seeded from the old).
    assert load.config.site.main_limit_a == (12, 12, 12)
    assert load.ctl is not old_ctl and load.ctl.config is load.config
    assert rig.station.cfg.site is not None and rig.station.cfg.site.main_limit_a[0] == 12
    _feed(rig, 2.0)
    res = await load.step()
    assert 6 <= res.setpoints_a["bay1"] <= 12 - 2  # the building keeps its 2 A
    await rig.until(lambda: 0 < rig.hub.nodes["bay1"].setpoint_a <= 10)
    assert (await rig.journal.kv_get("ui.settings.site"))["main_limit_a"] == [12, 12, 12]
    audit = (await owner.get("/api/v1/audit", params={"kind": "settings_changed"})).json()
    assert audit[0]["actor"] == "user:owner" and audit[0]["detail"]["section"] == "site"
    assert audit[0]["detail"]["changes"]["main_limit_a"] == {
        "old": [32, 32, 32],
        "new": [12, 12, 12],
    }
    r = await owner.patch("/api/v1/settings/site", json={"main_limit_a": 32})
    assert r.status_code == 200


async def test_invalid_changes_are_refused_with_the_field_named(tmp_path: Path) -> None:
    async with running_station(tmp_path, site=SITE, bays=BAYS) as rig:
        owner = await _owner(rig)
        load = rig.station.load
        assert load is not None
        before = load.config
        r = await owner.patch(
            "/api/v1/settings/site", json={"main_limit_a": 5, "main_guaranteed_headroom_a": 5}
        )
        assert r.status_code == 422 and r.json()["error"] == "invalid_setting"
        body = r.json()
        assert "main breaker limit" in body["message"] and "minimum current" in body["message"]
        assert body["field"] == "bays[0].min_current_a"
        # The lease proof: bay1's safe share (6 A) must fit the guaranteed headroom.
        r = await owner.patch("/api/v1/settings/site", json={"main_guaranteed_headroom_a": 0})
        assert r.status_code == 422 and "guaranteed headroom" in r.json()["message"]
        r = await owner.patch(
            "/api/v1/settings/site", json={"circuits": [{"id": "c1", "limit_a": 10, "parent": "x"}]}
        )
        assert r.status_code == 422 and "Circuit 1 is connected to “x”" in r.json()["message"]
        r = await owner.patch("/api/v1/settings/site", json={"main_limit_a": -1})
        assert r.status_code == 422 and r.json()["field"].startswith("main_limit_a")
        r = await owner.patch("/api/v1/settings/load_modes", json={"eco_current_a": 4})
        assert r.status_code == 422 and "Eco current" in r.json()["message"]
        r = await owner.patch(
            "/api/v1/settings/load_rules",
            json={"rules": [{"id": "x", "kind": "bay_current_cap", "amps": 8, "bays": ["nope"]}]},
        )
        assert r.status_code == 422 and "Rule 1 names the bay “nope”" in r.json()["message"]
        assert load.config is before  # nothing applied
        assert await rig.journal.kv_get("ui.settings.site") is None
        # A circuit that fits is fine, and the installer may change site limits.
        installer = await add_user(owner, "ian", "installer")
        viewer = await add_user(owner, "vic", "viewer")
        circuits = [{"id": "garage", "limit_a": 20, "guaranteed_headroom_a": 0}]
        r = await installer.patch("/api/v1/settings/site", json={"circuits": circuits})
        assert r.status_code == 200, r.text
        assert load.config.site.circuits[0].id == "garage"
        assert (
            await viewer.patch("/api/v1/settings/site", json={"main_limit_a": 20})
        ).status_code == 403
        r = await viewer.post("/api/v1/settings/load_rules/check", json={"rules": []})
        assert r.status_code == 403
        r = await installer.patch("/api/v1/settings/load_rules", json={"rules": []})
        assert r.status_code == 403
        r = await installer.patch("/api/v1/settings/load_modes", json={"eco_current_a": 8})
        assert r.status_code == 403


async def test_rule_conflicts_are_warned_before_and_after_saving(tmp_path: Path) -> None:
    rules = [
        {"id": "evening", "kind": "bay_current_cap", "amps": 10, "from": "18:00", "to": "06:00"},
        {
            "id": "vip",
            "kind": "bay_current_cap",
            "priority": 5,
            "amps": 14,
            "bays": ["bay1"],
            "from": "20:00",
            "to": "22:00",
            "days": ["sat", "sun"],
        },
        {"id": "tiny", "kind": "bay_current_cap", "amps": 3, "bays": ["locker1"]},
        {"id": "site11", "kind": "site_power_cap", "kw": 11},
        {"id": "site1", "kind": "site_power_cap", "kw": 1},
    ]
    async with running_station(tmp_path, site=SITE, bays=BAYS) as rig:
        owner = await _owner(rig)
        load = rig.station.load
        assert load is not None
        unchanged = load.config
        r = await owner.post("/api/v1/settings/load_rules/check", json={"rules": rules})
        assert r.status_code == 200, r.text
        warnings = r.json()["warnings"]
        kinds = {(w["kind"], w["applied"]) for w in warnings}
        assert ("contradiction", "evening") in kinds and ("below_min", "tiny") in kinds
        vip = next(w for w in warnings if w["applied"] == "evening")
        assert vip["overridden"] == ["vip"] and vip["targets"] == ["bay1"]
        assert vip["when"] == ["sat 20:00–22:00", "sun 20:00–22:00"]
        assert "sat 20:00–22:00" in vip["message"]
        site = next(w for w in warnings if w["applied"] == "site1" and w["kind"] == "below_min")
        assert site["targets"] == ["site"] and "no bay can charge" in site["message"]
        assert load.config is unchanged  # a check applies nothing
        r = await owner.patch("/api/v1/settings/load_rules", json={"rules": rules})
        assert r.status_code == 200, r.text
        assert len(r.json()["warnings"]) == len(warnings)  # saved anyway: the lower limit wins
        assert [x.id for x in load.config.rules] == ["evening", "vip", "tiny", "site11", "site1"]
        assert r.json()["values"]["rules"][0]["from"] == "18:00:00"
        described = (await owner.get("/api/v1/settings/load_rules")).json()
        assert len(described["warnings"]) == len(warnings)
        audit = (await owner.get("/api/v1/audit", params={"kind": "settings_changed"})).json()
        assert audit[0]["detail"]["section"] == "load_rules" and audit[0]["detail"]["warnings"]
        # "Limit to 8 A" at all times: the next step respects it.
        async with grid_meter(rig):
            r = await owner.patch("/api/v1/settings/load_rules", json={"rules": []})
            await _charging(rig, owner)
            always = [{"id": "eight", "kind": "bay_current_cap", "amps": 8}]
            r = await owner.patch("/api/v1/settings/load_rules", json={"rules": always})
            assert r.status_code == 200 and r.json()["warnings"] == []
            res = await load.step()
            assert res.setpoints_a["bay1"] == 8
            await rig.until(lambda: rig.hub.nodes["bay1"].setpoint_a == 8)
            await rig.until(lambda: rig.station.bays["bay1"].state.setpoint_a == 8)
            bay = (await owner.get("/api/v1/bays/bay1")).json()
            assert bay["limited_by_site"] and bay["limit_reason"] == "owner rule"


async def test_settings_survive_a_restart(tmp_path: Path) -> None:
    async with running_station(tmp_path, site=SITE, bays=BAYS) as rig:
        owner = await _owner(rig)
        r = await owner.patch("/api/v1/settings/site", json={"main_limit_a": 20})
        assert r.status_code == 200
    async with running_station(tmp_path, site=SITE, bays=BAYS) as rig:
        client = await api_client(rig.station)
        await client._transport.app.state.ui.ensure_ready()  # type: ignore[attr-defined]
        assert rig.station.load is not None
        assert rig.station.load.config.site.main_limit_a == (20, 20, 20)


async def test_no_load_manager_says_so(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        owner = await _owner(rig)
        sec = (await owner.get("/api/v1/settings/site")).json()
        assert sec["available"] is False and "no load manager" in sec["note"]
        r = await owner.patch("/api/v1/settings/site", json={"main_limit_a": 20})
        assert r.status_code == 409 and r.json()["error"] == "unavailable"
        r = await owner.patch("/api/v1/settings/load_rules", json={"rules": []})
        assert r.status_code == 409


async def _result(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            run = (await client.get(f"/api/v1/diagnostics/tests/{run_id}")).json()
            if run["state"] != "running":
                return dict(run)
            await asyncio.sleep(0.05)  # a background ramp has no event the client can await


async def test_installer_tests_roles_results_and_refusals(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        owner = await _owner(rig)
        installer = await add_user(owner, "ian", "installer")
        viewer = await add_user(owner, "vic", "viewer")
        path = "/api/v1/diagnostics/bays/bay1/test"
        for who in (owner, viewer):
            r = await who.post(path, json={"action": "relay_on"})
            assert r.status_code == 403 and r.json()["error"] == "forbidden"
        node = rig.hub.nodes["bay1"]
        r = await installer.post(path, json={"action": "relay_on", "current_a": 10, "hold_s": 1})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "passed" and r.json()["steps"][0]["reported_a"] == 10
        assert (True, 10.0) in [o[:2] for o in node.outputs]
        rig.hub.plug("bay1")  # a ramp passes only when the current follows (a test load)
        r = await installer.post(path, json={"action": "ramp", "hold_s": 0.1, "current_a": 12})
        assert r.status_code == 202 and r.json()["plan_a"] == [6, 8, 10, 12]
        run = await _result(installer, r.json()["id"])
        assert run["state"] == "passed", run
        assert [s["commanded_a"] for s in run["steps"]] == [6, 8, 10, 12]
        assert all(s["reported_a"] == s["commanded_a"] for s in run["steps"])
        await rig.until(lambda: not node.relay_on)  # the test ends: back to idle, relay off
        # relay_off stops a running ramp.
        r = await installer.post(path, json={"action": "ramp", "hold_s": 5})
        assert r.status_code == 202
        r2 = await installer.post(path, json={"action": "ramp"})
        assert r2.status_code == 409 and r2.json()["error"] == "test_running"
        off = await installer.post(path, json={"action": "relay_off", "hold_s": 0.2})
        assert off.status_code == 200 and off.json()["state"] == "passed"
        assert (await _result(installer, r.json()["id"]))["state"] == "stopped"
        # Lock tests on the locker; none on an EV bay.
        lp = "/api/v1/diagnostics/bays/locker1/test"
        r = await installer.post(lp, json={"action": "unlock"})
        assert r.status_code == 200 and r.json()["state"] == "passed"
        assert rig.hub.nodes["locker1"].locked is False
        r = await installer.post(lp, json={"action": "lock"})
        assert r.status_code == 200 and rig.hub.nodes["locker1"].locked is True
        r = await installer.post(path, json={"action": "lock"})
        assert r.status_code == 409 and r.json()["error"] == "not_supported"
        # Refused while a session runs.
        r = await owner.post("/api/v1/bays/bay1/token", json={"token": "1234"})
        assert r.status_code == 200
        for action in ("relay_on", "ramp", "relay_off"):
            r = await installer.post(path, json={"action": action})
            assert r.status_code == 409 and r.json()["error"] == "bay_in_use", action
        listed = (await viewer.get("/api/v1/diagnostics/tests")).json()
        assert {x["action"] for x in listed} >= {"ramp", "relay_on", "lock", "unlock"}
        await rig.station.settle()
        audit = (await owner.get("/api/v1/audit", params={"kind": "installer_test"})).json()
        assert {a["actor"] for a in audit} == {"user:ian"} and len(audit) >= 8
