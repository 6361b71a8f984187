"""OCPP 1.6J wallboxes as bays, end to end over real websockets: the station's wallbox server
(through its entry point) and simulated wallboxes written from the spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.core.bay import Phase, StopReason
from tests.test_wallbox_rig import rig

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
