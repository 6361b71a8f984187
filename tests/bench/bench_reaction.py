"""Reaction: a grid-meter change in the simulator → the new setpoint acknowledged by the node.

Real path: pymodbus server (SDM630 map) → Modbus TCP driver polled every 250 ms
→ load manager → serial driver → pseudo-terminal → node simulator.
Target p99 < 400 ms (users were promised 2 s; evcc's loop is 30 s, openWB's 10 s).
Run: ``./dev.sh bench tests/bench/bench_reaction.py``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.core.auth import free_vend_step
from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.loadloop import load_manager_config
from controller.core.station import Station
from drivers.esp32.assemble import build_serial
from drivers.modbus.extension import EXTENSION as METERS
from simulators.esp32_node.bus import SimNodeSpec, SimulatedBus
from simulators.meter.server import MeterSimulator
from tests.bench.report import median, metric, percentile, write_report

pytestmark = pytest.mark.bench
ROUNDS = 40
LIMIT = 40.0


def _drawn(st: Station) -> float:
    tel = st.bays["bay1"].telemetry
    return tel.current_a[0] if tel else 0.0


def _at_most(node: object, amps: float) -> Callable[[], bool]:
    return lambda: float(node.physics.setpoint_a) <= amps + 1e-6  # type: ignore[attr-defined]


async def test_bench_reaction(tmp_path: Path) -> None:
    async with SimulatedBus(tmp_path / "sim", [SimNodeSpec("bay1", 1, "evse", 32.0, 0.0)]) as bus:
        node = bus.nodes["bay1"]
        node.plug_in(bus.clock(), max_a=16.0, phases=3)

        def ev_amps() -> tuple[float, float, float]:
            return node.physics.currents()

        async with MeterSimulator(
            "sdm630", port=0, role="grid", speed=0, extra_load=ev_amps
        ) as meter:
            meter.set_currents((5.0, 5.0, 5.0))
            cfg = parse_config(
                {
                    "station": {"id": "react", "data_dir": str(tmp_path)},
                    "auth": {"free_vend": True},
                    "buses": [{"id": "bays", "port": bus.port_path}],
                    "bays": [
                        {
                            "id": "bay1",
                            "connector": 1,
                            "bus": "bays",
                            "address": 1,
                            "max_current_a": 16,
                        }
                    ],
                    "site": {
                        "main_limit_a": LIMIT,
                        "min_on_time_s": 30,
                        "min_off_time_s": 30,
                        # fast recovery between rounds; the measured path is the decrease
                        "increase_delay_s": 1,
                        "ramp_step_a": 16,
                    },
                    "meters": [
                        {
                            "name": "grid",
                            "map": "sdm630",
                            "role": "grid",
                            "poll_interval_s": 0.25,
                            "bus": {"transport": "tcp", "host": "127.0.0.1", "port": meter.port},
                        }
                    ],
                }
            )
            journal = await Journal.open(tmp_path / "j.sqlite3")
            st = Station(cfg, journal, hubs={"bays": build_serial(cfg.buses[0], cfg.bays)})
            st.authorizer.add(free_vend_step())
            await st.restore()
            lcfg = load_manager_config(cfg)
            assert lcfg is not None
            load = st.attach_load(lcfg)
            METERS.attach(st)
            task = asyncio.create_task(st.run())
            lat: list[float] = []
            rng = random.Random(7)
            try:
                await bus.wait_until(lambda: node.configured, 10)
                async with st.events.subscription(lossy=True) as q, asyncio.timeout(10):
                    while not st.bays["bay1"].state.node_online:
                        await q.get()
                assert (await st.commands.present_token("bay1", "REACT")).ok
                await bus.wait_until(lambda: node.physics.setpoint_a >= 15.9, 60)
                for i in range(ROUNDS):
                    # Steady state first: the node's telemetry shows the EV at 16 A (the load
                    # manager subtracts measured bay currents from the grid reading).
                    async with st.events.subscription(lossy=True) as q, asyncio.timeout(30):
                        while _drawn(st) < 15.9:
                            await q.get()
                    # A big appliance starts: 5 A → 5 + X A; the EV must drop by X.
                    spike = 22.0 + (i % 5)
                    target = LIMIT - (5.0 + spike)
                    # Unsynchronised with the meter's polls, like a real appliance.
                    await asyncio.sleep(rng.uniform(0, 0.25))
                    t0 = time.perf_counter()
                    meter.set_currents((5.0 + spike,) * 3)
                    await bus.wait_until(_at_most(node, target), 5)
                    lat.append((time.perf_counter() - t0) * 1000)
                    meter.set_currents((5.0, 5.0, 5.0))
                    try:
                        await bus.wait_until(lambda: node.physics.setpoint_a >= 15.9, 60)
                    except TimeoutError:
                        res = load.last
                        raise AssertionError(
                            f"no recovery: setpoint {node.physics.setpoint_a} A, "
                            f"targets {res and dict(res.targets_a)}, "
                            f"limits {res and res.allocation.limits}, grid {res and res.grid_freshness}"
                        ) from None
            finally:
                st.request_stop("bench")
                await task
                await journal.close()
    write_report(
        "load_reaction",
        {
            "p50": metric(median(lat), "ms", "lower"),
            "p99": metric(percentile(lat, 99), "ms", "lower", target=400),
            "max": metric(max(lat), "ms", "lower", target=2000),
            "meter_period": metric(250, "ms", "lower"),
        },
        notes={"rounds": len(lat), "path": "modbus tcp -> load manager -> serial pty -> node ack"},
    )
    assert percentile(lat, 99) < 400
