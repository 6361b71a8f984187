"""ClearChargingProfile with a load manager: the remaining profiles apply at once (issue 19)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call

from cloud_sync.assemble import build
from cloud_sync.config import OcppConfig
from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.loadloop import load_manager_config
from controller.core.station import Station
from controller.ports import Freshness, MeterReading, MeterSample
from simulators.csms import CsmsSim
from tests.support.fake_nodes import FakeHub, FakeNode
from tests.test_ocpp_fixes import _profile

pytestmark = pytest.mark.timeout(90)


async def test_clearing_the_station_maximum_with_a_load_manager(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "station": {"id": "lm", "data_dir": str(tmp_path)},
            "timers": {"tick_s": 0.1, "lease_s": 3.0},
            "buses": [{"id": "bus"}],
            "bays": [{"id": "b1", "connector": 1, "bus": "bus", "address": 1, "max_current_a": 16}],
            "site": {"main_limit_a": 40, "increase_delay_s": 1, "ramp_step_a": 16},
        }
    )
    journal = await Journal.open(tmp_path / "j.sqlite3")
    node = FakeNode("b1", plugged=True, ev_max_a=16.0, pilot=True)
    hub = FakeHub([node], period_s=0.1)
    st = Station(cfg, journal, hubs={"bus": hub})
    await st.restore()
    lcfg = load_manager_config(cfg)
    assert lcfg is not None
    st.attach_load(lcfg)
    sim = CsmsSim()
    await sim.start()
    up = build(
        OcppConfig(url=sim.url, charge_point_id="CP1", backoff_min_s=0.05, backoff_max_s=0.2),
        st,
    )
    st.add_service("ocpp", up.run)

    async def meter() -> None:
        while True:
            now = time.monotonic()
            amps = node.drawing_a() + 1.0
            st.meters.on_reading(
                MeterReading(
                    "grid", now, Freshness.FRESH, MeterSample(at=now, current_a=(amps,) * 3)
                ),
                role="grid",
            )
            await asyncio.sleep(0.1)

    task = asyncio.create_task(st.run())
    feeder = asyncio.create_task(meter())
    try:
        await sim.wait_for(lambda: sim.statuses.get("CP1", {}).get(1) == "Available")
        await st.commands.present_token("b1", "T1", source="kiosk")
        await sim.wait_for(lambda: bool(sim.actions("StartTransaction")))

        async def set_(connector: int, prof: dict[str, Any]) -> None:
            resp = await sim.call(
                "CP1", call.SetChargingProfile(connector_id=connector, cs_charging_profiles=prof)
            )
            assert resp.status == "Accepted"

        await set_(0, _profile(1, "ChargePointMaxProfile", 10.0))
        await node.wait_output(lambda o: o[0] and 0 < o[1] <= 10.0, timeout=10)
        await set_(1, _profile(2, "TxProfile", 12.0, transactionId=1))
        assert node.setpoint_a <= 10.0
        t0 = time.monotonic()
        assert (await sim.call("CP1", call.ClearChargingProfile(id=1))).status == "Accepted"
        # An increase waits the site's increase_delay_s (1 s here), and no more.
        await node.wait_output(lambda o: o[1] == 12.0, timeout=4.0)
        assert time.monotonic() - t0 < 4.0
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        st.request_stop("test")
        await asyncio.wait_for(task, 10)
        await journal.close()
        await sim.stop()
