"""The wallbox server's edges: who may connect, what check-config proves, chargers that say less."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

from controller.cli.main import check
from controller.core.config import ConfigError, parse_config
from controller.ports import ConnectionLost
from drivers.ocpp_wallbox.charger import Charger
from drivers.ocpp_wallbox.config import parse_bus
from simulators.wallbox import WallboxSim
from tests.test_ocpp_security import _self_signed
from tests.test_wallbox_rig import config, rig

pytestmark = pytest.mark.timeout(60)


async def test_an_unknown_charge_point_is_refused_and_logged(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await r.boxes[0].connected.wait()
        stranger = WallboxSim(r.url(), "WB-STRANGER", reconnect_s=0.05)
        async with _running(stranger):
            await stranger.wait_for(lambda: stranger.rejected_handshakes >= 2)
        assert r.hub.refused >= 2
        assert not stranger.connected.is_set()


async def test_basic_auth_admits_only_the_right_password(tmp_path: Path) -> None:
    bus = {"security_profile": 1, "passwords": {"WB1": "s3cret-wallbox-pw"}}
    async with rig(tmp_path, ocpp_bus=bus, box_kwargs={"password": "s3cret-wallbox-pw"}) as r:
        await r.boxes[0].connected.wait()  # the right password: in
        wrong = WallboxSim(r.url(), "WB1", password="guess", reconnect_s=0.05)
        async with _running(wrong):
            await wrong.wait_for(lambda: wrong.rejected_handshakes >= 1)
        none = WallboxSim(r.url(), "WB1", reconnect_s=0.05)
        async with _running(none):
            await none.wait_for(lambda: none.rejected_handshakes >= 1)
        assert r.boxes[0].connected.is_set()


async def test_security_profile_2_serves_wallboxes_over_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    bus = {
        "security_profile": 2,
        "passwords": {"WB1": "s3cret-wallbox-pw"},
        "tls_cert_file": str(cert),
        "tls_key_file": str(key),
    }
    kwargs = {"password": "s3cret-wallbox-pw", "ca_file": str(cert)}
    async with rig(tmp_path, ocpp_bus=bus, box_kwargs=kwargs) as r:
        assert r.url().startswith("wss://")
        await r.boxes[0].connected.wait()
        await r.until(lambda: r.bay("wb1").state.node_online)
        # Plain websockets to a TLS server: no handshake, no wallbox.
        plain = WallboxSim(
            r.url().replace("wss://", "ws://"),
            "WB1",
            password="s3cret-wallbox-pw",
            reconnect_s=0.05,
        )
        async with _running(plain):
            await plain.wait_for(lambda: plain.attempts >= 3)
        assert plain.boots == 0 and plain.frames_in == 0


async def test_a_charger_that_reports_only_power_and_energy_still_shows_its_currents(
    tmp_path: Path,
) -> None:
    only = ("Power.Active.Import", "Energy.Active.Import.Register")
    async with rig(tmp_path, box_kwargs={"measurands": only}) as r:
        box = r.boxes[0]
        bay = r.bay("wb1")
        await r.until(lambda: bay.state.node_online and bay.state.meter_wh is not None)
        assert set(box.config["MeterValuesSampledData"].split(",")) == set(only)
        box.plug()
        await r.kiosk_start("wb1", "KIOSK-1")
        await box.wait_for(lambda: box.outlets[1].current_a >= 15.9, timeout=15)
        await r.until(lambda: bay.telemetry is not None and bay.telemetry.current_a[1] > 15)
        assert bay.telemetry is not None
        assert all(math.isclose(c, 16.0, abs_tol=0.1) for c in bay.telemetry.current_a)


def _cfg(tmp: Path, **kw: Any) -> dict[str, Any]:
    return config(tmp, wallboxes=2, **kw)


def test_check_config_requires_a_charger_id_on_an_ocpp_bus(tmp_path: Path) -> None:
    raw = _cfg(tmp_path)
    del raw["bays"][1]["charger_id"]
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert any("charger_id" in p for p in err.value.problems)


def test_check_config_refuses_a_bad_listen_and_bad_security(tmp_path: Path) -> None:
    raw = _cfg(tmp_path)
    raw["buses"][0]["listen"] = "nowhere"
    raw["buses"][0]["ocpp"] = {"security_profile": 2}
    problems = check(parse_config(raw))
    assert any(p.startswith("buses[0].listen:") for p in problems), problems
    assert any("tls_cert_file" in p for p in problems), problems


def test_a_wallbox_without_a_fallback_must_count_at_its_maximum_in_the_proof(
    tmp_path: Path,
) -> None:
    site = {"main_limit_a": 40, "main_guaranteed_headroom_a": 20}
    raw = _cfg(tmp_path, site=site, ocpp_bus={"models": {"WB2": "watts-tx-only"}})
    problems = check(parse_config(raw))
    assert [p for p in problems if "bays[1].safe_current_a" in p], problems
    raw["bays"][1]["safe_current_a"] = 16
    problems = check(parse_config(raw))
    assert not [p for p in problems if "bays[1]" in p], problems
    # ... and then the proof counts it: 16 A does not fit 10 A of guaranteed headroom.
    raw["site"]["main_guaranteed_headroom_a"] = 10
    problems = check(parse_config(raw))
    assert [p for p in problems if p.startswith("safe shares:")], problems


def test_a_wallbox_never_heard_counts_at_its_maximum(tmp_path: Path) -> None:
    cfg = parse_config(_cfg(tmp_path, safe_a=6.0))
    ch = Charger("WB1", [cfg.bays[0]], parse_bus(cfg.buses[0].ocpp))
    c = ch.connectors[1]
    assert ch.assumed_draw_a(c, 0.0) == 16.0
    ch.ever_connected = True  # but it never acknowledged its fallback profile
    assert ch.assumed_draw_a(c, 0.0) == 16.0
    c.fallback_a, c.limit_a, c.valid_until = 6.0, 10.0, 5.0
    assert ch.assumed_draw_a(c, 4.0) == 10.0  # its lease still runs
    assert ch.assumed_draw_a(c, 5.0) == 6.0  # then its fallback


class _running:
    def __init__(self, box: WallboxSim) -> None:
        self.box = box

    async def __aenter__(self) -> WallboxSim:
        import asyncio

        self.task = asyncio.create_task(self.box.run())
        return self.box

    async def __aexit__(self, *exc: object) -> None:
        import asyncio
        import contextlib

        self.box.reconnect = False
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def test_a_faulted_wallbox_faults_its_bay_and_stops_the_session(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        box = r.boxes[0]
        bay = r.bay("wb1")
        await r.until(lambda: bay.state.node_online and bay.state.meter_wh is not None)
        box.plug()
        await r.kiosk_start("wb1", "KIOSK-1")
        await box.wait_for(lambda: box.outlets[1].current_a > 0, timeout=15)
        box.fault("GroundFailure")
        await r.until(lambda: bay.state.fault == "GroundFailure" and bay.state.session is None)
        assert r.station.status.current(1).status == "Faulted"
        box.clear_fault()
        await r.until(lambda: bay.state.fault is None)
        rows = await r.station.journal.query("SELECT stop_reason FROM sessions")
        assert rows == [{"stop_reason": "Other"}]  # the wallbox ended it first, as "Other"


async def test_garbage_and_malformed_calls_from_a_wallbox_get_errors_not_a_crash(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, wallboxes=1) as r:
        await r.boxes[0].connected.wait()
        r.boxes[0].reconnect = False
        await r.boxes[0].drop()
        async with connect(f"{r.url()}/WB1", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            await ws.send("this is not json")
            await ws.send(json.dumps([2, "m1", "BootNotification", {"chargePointModel": 7}]))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert answer[0] == 4 and answer[1] == "m1"  # a CallError for that call
            boot = {"chargePointVendor": "x", "chargePointModel": "y"}
            await ws.send(json.dumps([2, "m2", "BootNotification", boot]))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert answer[:2] == [3, "m2"] and answer[2]["status"] == "Accepted"
            # Only then does the station configure it (it takes no call before its boot).
            first = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert first[0] == 2 and first[2] == "ChangeConfiguration"


async def test_a_watts_only_wallbox_without_default_profiles_gets_tx_profiles_in_watts(
    tmp_path: Path,
) -> None:
    site = {
        "main_limit_a": 32,
        "min_on_time_s": 30,
        "min_off_time_s": 30,
        "increase_delay_s": 1,
        "ramp_step_a": 16,
    }
    bus = {"models": {"WB1": "watts-tx-only"}}
    async with rig(tmp_path, site=site, ocpp_bus=bus, safe_a=16.0) as r:
        box = r.boxes[0]
        bay = r.bay("wb1")
        await r.until(lambda: bay.state.node_online and bay.state.meter_wh is not None)
        # Nothing it cannot keep was installed: no fallback, no default profile.
        assert box.book.profiles == {}
        box.plug()
        await r.kiosk_start("wb1", "KIOSK-1")
        o = box.outlets[1]
        await box.wait_for(lambda: o.current_a >= 15.9, timeout=20)
        await r.until(lambda: bay.telemetry is not None and bay.telemetry.current_a[0] >= 15.9)
        r.grid_a[:] = [20.0, 20.0, 20.0]
        await box.wait_for(lambda: 0 < o.limit_a <= 12.0, timeout=10)
        (profile,) = box.book.profiles.values()
        assert profile.purpose == "TxProfile" and profile.unit == "W"
        assert profile.tx_id == o.tx_id
        assert profile.periods[0][1] == 12 * 230 * 3  # 12 A on three phases, in watts
        # Lost, it is counted at its maximum: it keeps no fallback of the station's.
        node = bay.node
        assert node is not None
        box.reconnect = False
        await box.drop()
        await r.until(lambda: not bay.state.node_online)
        assert node.assumed_draw_a(0.0) == 16.0  # type: ignore[attr-defined]


async def test_unlock_at_the_station_unlocks_the_wallbox_connector(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        box = r.boxes[0]
        await r.until(lambda: r.bay("wb1").state.node_online)
        out = await r.station.commands.unlock_connector("wb1", actor="csms")
        assert out.ok
        await box.wait_for(lambda: box.unlocks == 1)


class _ClosingLink:
    """A link whose socket closes under the call (what a lost ping does mid-command)."""

    async def request(self, payload: Any) -> Any:
        raise ConnectionClosedError(Close(1011, ""), Close(1011, ""), True)


@pytest.mark.parametrize("relay_on", [True, False])
async def test_a_socket_closing_under_a_command_is_a_driver_error(
    tmp_path: Path, relay_on: bool
) -> None:
    cfg = parse_config(_cfg(tmp_path))
    ch = Charger("WB1", [cfg.bays[0]], parse_bus(cfg.buses[0].ocpp))
    ch.link = _ClosingLink()  # type: ignore[assignment]
    # The output loop is core: anything but a DriverError from a node would stop the station.
    with pytest.raises(ConnectionLost):
        await ch.set_limit(ch.connectors[1], relay_on=relay_on, current_a=10.0)
    with pytest.raises(ConnectionLost):
        await ch.unlock(ch.connectors[1])
