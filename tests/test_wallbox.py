"""OCPP 1.6J wallboxes as bays, end to end over real websockets: the station's wallbox server
(through its entry point) and simulated wallboxes written from the spec."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path
from typing import cast

import pytest

from controller.assemble import open_station
from controller.core.bay import Phase, StopReason
from controller.core.config import parse_config
from controller.ports import UnleasedNode
from drivers.ocpp_wallbox.hub import WallboxHub
from simulators.wallbox import Car, WallboxSim
from tests.test_wallbox_rig import WallboxRig, config, rig

pytestmark = pytest.mark.timeout(60)


async def test_boot_status_and_a_kiosk_session(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        box = r.boxes[0]
        await box.connected.wait()
        bay = r.bay("wb1")
        await r.until(lambda: bay.state.node_online and bay.state.meter_wh is not None)
        # The station asked for per-phase currents and the energy register, every second.
        assert "Current.Import" in box.config["MeterValuesSampledData"]
        assert box.config["MeterValueSampleInterval"] == "1"
        box.plug()
        await r.until(lambda: bay.state.pilot.value == "B")
        sid = await r.kiosk_start("wb1", "KIOSK-1")
        await r.until(lambda: bay.state.phase is Phase.CHARGING, timeout=15)
        o = box.outlets[1]
        assert o.tx_tag == "KIOSK-1"
        assert o.current_a > 0
        await r.until(lambda: bay.telemetry is not None and bay.telemetry.current_a[0] > 5)
        out = await r.station.commands.stop_session(sid, StopReason.LOCAL, actor="kiosk")
        assert out.ok
        await box.wait_for(lambda: o.tx_id is None)
        assert box.outlets[1].status == "Finishing"


async def test_a_card_at_the_wallbox_goes_through_the_station_and_stops_its_session(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        box = r.boxes[0]
        bay = r.bay("wb1")
        await r.until(lambda: bay.state.node_online and bay.state.meter_wh is not None)
        box.plug()
        # Unknown to the station's auth chain: refused at the wallbox, no session anywhere.
        assert await box.present_card("STRANGER") == "Invalid"
        assert bay.state.session is None
        assert await box.present_card("CARD-2") == "Accepted"
        await r.until(lambda: bay.state.phase is Phase.CHARGING, timeout=15)
        sess = bay.state.session
        assert sess is not None and sess.token == "CARD-2" and sess.auth_source == "local"
        o = box.outlets[1]
        assert o.tx_id is not None and o.current_a > 0
        # The same card again at the wallbox ends it; the station closes its session as Local.
        assert await box.present_card("CARD-2") == "Stopped"
        await r.until(lambda: bay.state.session is None)
        rows = await r.station.journal.query("SELECT token, stop_reason FROM sessions")
        assert rows == [{"token": "CARD-2", "stop_reason": "Local"}]


SITE = {
    "main_limit_a": 32,
    "min_on_time_s": 30,
    "min_off_time_s": 30,
    "increase_delay_s": 1,
    "ramp_step_a": 16,
}


async def test_a_grid_step_lowers_the_wallbox_profile_within_two_seconds(tmp_path: Path) -> None:
    async with rig(tmp_path, site=SITE) as r:
        box = r.boxes[0]
        bay = r.bay("wb1")
        await r.until(lambda: bay.state.node_online and bay.state.meter_wh is not None)
        box.plug()
        await r.kiosk_start("wb1", "KIOSK-1")
        o = box.outlets[1]
        await box.wait_for(lambda: o.current_a >= 15.9, timeout=20)
        # The station's reading of it too (else the meter's 16 A look like building load).
        await r.until(lambda: bay.telemetry is not None and bay.telemetry.current_a[0] >= 15.9)
        r.grid_a[:] = [20.0, 20.0, 20.0]  # the building takes 20 A more: 12 A are left
        stepped = time.monotonic()
        await box.wait_for(lambda: o.limit_a <= 12.0, timeout=10)
        took = next(t for t, a in o.limit_log if t >= stepped and a <= 12.0) - stepped
        assert took < 2.0, f"the lower limit was in force only {took:.2f} s after the step"
        assert o.limit_a > 0, o.limit_log  # lowered, not switched off: 12 A still fit
        await box.wait_for(lambda: o.current_a <= 12.0, timeout=5)  # and the car followed


async def test_a_lost_wallbox_counts_at_its_lease_then_its_safe_share_until_it_reconnects(
    tmp_path: Path,
) -> None:
    site = {**SITE, "main_limit_a": 20}
    async with rig(tmp_path, wallboxes=2, site=site, safe_a=0.0) as r:
        b1, b2 = r.boxes
        await r.until(
            lambda: all(
                r.bay(b).state.node_online and r.bay(b).state.meter_wh is not None
                for b in ("wb1", "wb2")
            ),
            timeout=15,
        )
        # A full car on wallbox 1: a session that draws nothing (the meter cannot see it).
        b1.plug(Car(soc=1.0))
        b2.plug()
        await r.kiosk_start("wb1", "KIOSK-1")
        await r.kiosk_start("wb2", "CARD-1")
        o1, o2 = b1.outlets[1], b2.outlets[1]
        await b1.wait_for(lambda: o1.tx_id is not None and o1.limit_a >= 6, timeout=20)
        await b2.wait_for(lambda: o2.current_a > 0, timeout=20)
        lease_a = o1.limit_a
        assert r.station.load is not None
        b1.reconnect = False
        await b1.drop()
        await r.until(lambda: not r.bay("wb1").state.node_online)
        node = r.bay("wb1").node
        assert isinstance(node, UnleasedNode)
        # Until its last limit runs out, the wallbox may draw it: wallbox 2 gets the rest only.
        assert node.assumed_draw_a(time.monotonic()) == lease_a
        seen: list[float] = []

        def lease_over() -> bool:
            if node.assumed_draw_a(time.monotonic()) == lease_a:
                seen.append(_target(r, "wb2"))
                return False
            return True

        # For as long as that lease runs (seconds: wallbox 2 would ramp to 16 A meanwhile)...
        await r.until(lease_over, timeout=15)
        assert len(seen) > 3 and max(seen) <= 20 - lease_a + 1e-6, (lease_a, max(seen))
        # Once it has run out, the fallback profile it acknowledged holds: its safe share (0).
        await r.until(lambda: node.assumed_draw_a(time.monotonic()) == 0.0, timeout=15)
        await r.until(lambda: _target(r, "wb2") == 16.0, timeout=15)
        # ... and the wallbox itself fell to it: nothing offered to the car any more.
        await b1.wait_for(lambda: o1.limit_a == 0.0, timeout=10)
        b1.reconnect = True
        await r.until(lambda: r.bay("wb1").state.node_online, timeout=15)
        assert node.assumed_draw_a(time.monotonic()) is None


def _target(r: WallboxRig, bay_id: str) -> float:
    last = r.station.load.last if r.station.load is not None else None
    return last.setpoints_a.get(bay_id, 0.0) if last is not None else 0.0


async def test_the_csms_sees_each_wallbox_session_once_on_the_stations_connectors(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, wallboxes=2, csms=True) as r:
        csms = r.csms
        assert csms is not None
        b1, b2 = r.boxes
        await r.until(
            lambda: all(
                r.bay(b).state.node_online and r.bay(b).state.meter_wh is not None
                for b in ("wb1", "wb2")
            ),
            timeout=15,
        )
        b1.plug()
        b2.plug()
        await r.kiosk_start("wb1", "KIOSK-1")
        # A card the station does not know itself: the CSMS decides (the station's auth chain).
        assert await b2.present_card("RFID-9") == "Accepted"
        assert [a.payload["idTag"] for a in csms.actions("Authorize")].count("RFID-9") == 1
        await r.until(lambda: r.bay("wb2").state.phase is Phase.CHARGING, timeout=15)
        await csms.wait_for(lambda: len(csms.actions("StartTransaction")) == 2, timeout=15)
        assert await b2.present_card("RFID-9") == "Stopped"
        sid1 = r.bay("wb1").state.session
        assert sid1 is not None
        await r.station.commands.stop_session(sid1.session_id, StopReason.LOCAL, actor="kiosk")
        await csms.wait_for(lambda: len(csms.actions("StopTransaction")) == 2, timeout=15)
        starts = {a.payload["connectorId"]: a.payload for a in csms.actions("StartTransaction")}
        assert {c: s["idTag"] for c, s in starts.items()} == {1: "KIOSK-1", 2: "RFID-9"}
        assert len(csms.actions("StartTransaction")) == 2  # once each, whoever started it
        # The CSMS numbers its transactions; the wallboxes' own ids never leave the station.
        stops = {a.payload["transactionId"] for a in csms.actions("StopTransaction")}
        assert stops == set(csms.transactions)
        box_ids = set(b1.transactions + b2.transactions)
        assert len(box_ids) == 2 and box_ids.isdisjoint(stops)
        reasons = sorted(a.payload.get("reason", "Local") for a in csms.actions("StopTransaction"))
        assert reasons == ["Local", "Local"]
        # One identity upstream: the station's connectors 0..2, nothing of the wallboxes' own.
        await csms.wait_for(lambda: set(csms.statuses.get("EDGE1", {})) == {0, 1, 2})
        assert set(csms.statuses) == {"EDGE1"}


async def test_a_wallbox_session_goes_on_across_a_station_restart(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    raw = config(tmp_path, wallboxes=1, ocpp_bus={"response_timeout_s": 2})
    raw["buses"][0]["listen"] = f"127.0.0.1:{port}"
    box = WallboxSim(f"ws://127.0.0.1:{port}/ocpp", "WB1", tick_s=0.05, reconnect_s=0.1)
    box_task = asyncio.create_task(box.run())
    try:
        st1 = await open_station(parse_config(raw), http=False)
        run1 = asyncio.create_task(st1.run())
        bay = st1.bays.require("wb1")
        r1 = WallboxRig(st1, cast(WallboxHub, st1.hubs["wallboxes"]), [box], None)
        await r1.until(lambda: bay.state.node_online and bay.state.meter_wh is not None)
        box.plug()
        sid = await r1.kiosk_start("wb1", "KIOSK-1")
        await r1.until(lambda: bay.state.phase is Phase.CHARGING, timeout=15)
        tx = box.outlets[1].tx_id
        st1.request_stop("restart")
        await asyncio.wait_for(run1, 15)
        await st1.journal.close()
        # The wallbox charges on meanwhile, on its lease; the new station finds it again.
        st2 = await open_station(parse_config(raw), http=False)
        run2 = asyncio.create_task(st2.run())
        try:
            bay2 = st2.bays.require("wb1")
            r2 = WallboxRig(st2, cast(WallboxHub, st2.hubs["wallboxes"]), [box], None)
            await r2.until(
                lambda: bay2.state.phase is Phase.CHARGING and bay2.state.node_online, timeout=20
            )
            assert bay2.state.session is not None and bay2.state.session.session_id == sid
            assert box.outlets[1].tx_id == tx  # the same transaction, never stopped
            out = await st2.commands.stop_session(sid, StopReason.LOCAL, actor="kiosk")
            assert out.ok
            await box.wait_for(lambda: box.outlets[1].tx_id is None)
            rows = await st2.journal.query("SELECT id, stop_reason FROM sessions")
            assert rows == [{"id": sid, "stop_reason": "Local"}]
        finally:
            st2.request_stop("test over")
            await asyncio.wait_for(run2, 15)
            await st2.journal.close()
    finally:
        box.reconnect = False
        box_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await box_task


async def test_a_wallbox_started_transaction_is_not_stopped_while_the_station_asks_the_csms(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, csms=True) as r:
        csms = r.csms
        assert csms is not None
        box = r.boxes[0]
        bay = r.bay("wb1")
        await r.until(lambda: bay.state.node_online and bay.state.meter_wh is not None)
        assert r.station.upstream is not None
        await r.until(lambda: bool(r.station.upstream and r.station.upstream.online))
        box.plug()
        csms.answer_delay_s = 2.5  # longer than the output loop's period (lease / 3 = 1 s)
        box.present_cached_card("RFID-7")  # no Authorize: its own cache let it start
        await r.until(lambda: bay.state.phase is Phase.CHARGING, timeout=20)
        tx = box.outlets[1].tx_id
        assert tx is not None and box.outlets[1].tx_tag == "RFID-7"
        assert box.remote_stops == 0
