"""Emergency stop during an installer test output → the node's relay open, through the real stack.

Station, journal, serial hub and the node simulator on a pseudo-terminal. Each
round holds a 16 A test output, presses the emergency stop, times until the
simulated node's relay is open, then releases and clears. Baseline, same run:
the installer ending the test itself (``end_test_output``) → relay open.

Run: ``.venv/bin/python -m pytest -m bench tests/bench/bench_estop.py -p no:randomly``.
Target: p99 below one output-loop period (``lease_s / 3``), the bound the station promises.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.station import Station
from drivers.esp32.assemble import build_serial
from simulators.esp32_node import SimulatedBus, specs
from tests.bench.report import median, metric, percentile, write_report
from tests.support.watch import BayWatcher

ROUNDS = 40
LEASE_S = 3.0
PERIOD_MS = LEASE_S / 3 * 1000


@pytest.mark.bench
async def test_bench_estop_relay_off(tmp_path: Path) -> None:
    async with SimulatedBus(tmp_path / "bus", specs(1)) as bus:
        cfg = parse_config(
            {
                "station": {"id": "bench-estop", "data_dir": str(tmp_path)},
                "timers": {"tick_s": 0.1, "lease_s": LEASE_S},
                "buses": [{"id": "bus1", "port": bus.port_path}],
                "bays": [{"id": "bay1", "connector": 1, "bus": "bus1", "address": 1}],
            }
        )
        journal = await Journal.open(tmp_path / "journal.sqlite3")
        st = Station(cfg, journal, hubs={"bus1": build_serial(cfg.buses[0], cfg.bays, cfg)})
        await st.restore()
        task = asyncio.create_task(st.run())
        sim = bus.nodes["bay1"]
        watch = BayWatcher(st, timeout=10)
        estop_ms: list[float] = []
        end_ms: list[float] = []
        try:
            await watch.status("bay1", "Available")
            for i in range(2 * ROUNDS):
                out = await st.commands.installer_test_output(
                    "bay1", relay_on=True, current_a=16, hold_s=30, actor="bench"
                )
                assert out.ok, out
                await bus.wait_until(lambda: sim.physics.relay_closed)
                t0 = time.perf_counter()
                if i % 2 == 0:
                    await st.safety.emergency_stop(True)
                else:
                    await st.commands.end_test_output("bay1", actor="bench")
                await bus.wait_until(lambda: not sim.physics.relay_closed)
                (estop_ms if i % 2 == 0 else end_ms).append((time.perf_counter() - t0) * 1000)
                if i % 2 == 0:
                    await st.safety.emergency_stop(False)
                    assert (await st.safety.clear_emergency_stop(actor="bench")).ok
                    await watch.status("bay1", "Available")
        finally:
            st.request_stop("bench")
            await asyncio.wait_for(task, 10)
            await journal.close()
    p99 = percentile(estop_ms, 99)
    write_report(
        "estop_relay_off",
        {
            "estop_p50": metric(median(estop_ms), "ms"),
            "estop_p99": metric(p99, "ms", target=PERIOD_MS),
            "end_test_p50": metric(median(end_ms), "ms"),
            "end_test_p99": metric(percentile(end_ms, 99), "ms"),
            "estop_vs_end_p50": metric(median(estop_ms) / median(end_ms), "x"),
        },
        notes={
            "rounds": ROUNDS,
            "lease_s": LEASE_S,
            "output_loop_period_ms": PERIOD_MS,
            "transport": "pty, serial hub with default timing (polls every 200 ms)",
        },
    )
    assert p99 < PERIOD_MS
