"""A single-phase site end to end: SDM120 grid meter → Modbus driver → load manager → nodes.

Finding 8 of issue 10: with a single-phase grid meter (no L2/L3 registers) the
load manager took the missing phases for a failed meter and stayed on the
fallback budget for ever. Here the real pieces run: a pymodbus server serving
the SDM120 map, the station's Modbus TCP driver, the load loop, the serial
driver over a pseudo-terminal and the node simulator with single-phase cars,
whose current the simulated meter adds to the building's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from controller.core.auth import free_vend_step
from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.loadloop import load_manager_config
from controller.core.station import Station
from controller.ports import Freshness
from drivers.esp32.assemble import build_serial
from drivers.modbus.extension import EXTENSION as METERS
from simulators.esp32_node.bus import SimNodeSpec, SimulatedBus
from simulators.meter.server import MeterSimulator

LIMIT = 32.0


async def test_single_phase_site_with_sdm120_allocates_on_l1(tmp_path: Path) -> None:
    specs = [SimNodeSpec(f"bay{i}", i, "evse", 32.0, 0.0) for i in (1, 2)]
    async with SimulatedBus(tmp_path / "sim", specs) as bus:
        for node in bus.nodes.values():
            node.plug_in(bus.clock(), max_a=16.0, phases=1)

        def cars() -> tuple[float, float, float]:
            return (sum(n.physics.currents()[0] for n in bus.nodes.values()), 0.0, 0.0)

        async with MeterSimulator("sdm120", port=0, role="grid", speed=0, extra_load=cars) as meter:
            meter.set_currents((4.0, 0.0, 0.0))
            cfg = parse_config(
                {
                    "station": {"id": "one-phase", "data_dir": str(tmp_path)},
                    "auth": {"free_vend": True},
                    "buses": [{"id": "bays", "port": bus.port_path}],
                    "bays": [
                        {
                            "id": f"bay{i}",
                            "connector": i,
                            "bus": "bays",
                            "address": i,
                            "max_current_a": 16,
                            "phases": 1,
                            "phase": "L1",
                        }
                        for i in (1, 2)
                    ],
                    "site": {"phases": 1, "main_limit_a": LIMIT, "ramp_step_a": 16},
                    "meters": [
                        {
                            "name": "grid",
                            "map": "sdm120",
                            "role": "grid",
                            "poll_interval_s": 0.25,
                            "bus": {"transport": "tcp", "host": "127.0.0.1", "port": meter.port},
                        }
                    ],
                }
            )
            assert METERS.check(cfg) == []
            journal = await Journal.open(tmp_path / "j.sqlite3")
            st = Station(cfg, journal, hubs={"bays": build_serial(cfg.buses[0], cfg.bays)})
            st.authorizer.add(free_vend_step())
            await st.restore()
            lcfg = load_manager_config(cfg)
            assert lcfg is not None
            load = st.attach_load(lcfg)
            METERS.attach(st)
            task = asyncio.create_task(st.run())
            n1, n2 = bus.nodes["bay1"], bus.nodes["bay2"]
            try:
                await bus.wait_until(lambda: n1.configured and n2.configured, 10)
                async with st.events.subscription(lossy=True) as q, asyncio.timeout(10):
                    while not all(rt.state.node_online for rt in st.bays.values()):
                        await q.get()
                for b in ("bay1", "bay2"):
                    assert (await st.commands.present_token(b, f"T-{b}")).ok
                # (32 - 4) / 2 = 14 A each on L1: the meter's L1 reading is used, nothing is
                # held back as if the meter had failed.
                await bus.wait_until(
                    lambda: n1.physics.setpoint_a == n2.physics.setpoint_a == 14.0, 30
                )
                res = load.last
                assert res is not None and res.grid_freshness is Freshness.FRESH
                causes = {c["cause"] for c in st.snapshots.station()["safe_mode"]}
                assert "grid_meter" not in causes, causes
                # A 20 A appliance on L1: both cars come down to what is left.
                meter.set_currents((24.0, 0.0, 0.0))
                await bus.wait_until(
                    lambda: n1.physics.setpoint_a + n2.physics.setpoint_a <= LIMIT - 24.0, 10
                )
                # The budget on L1 is what the SDM120 says is left: 32 - 24 A.
                await bus.wait_until(
                    lambda: (
                        load.last is not None
                        and abs(load.last.allocation.caps_a[0] - (LIMIT - 24.0)) < 0.5
                    ),
                    10,
                )
                assert load.last is not None and load.last.grid_freshness is Freshness.FRESH
            finally:
                st.request_stop("test")
                await task
                await journal.close()
