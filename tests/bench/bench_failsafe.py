"""Fail-safe: SIGKILL the controller at full load → every node at its safe share within its lease.

Real processes: the node simulator (4 EVSE bays, 16 A each) and ``edge-station run``
with a Modbus grid meter; the site guarantees 24 A of headroom without a meter and
each bay's safe share is 6 A (``check-config`` proves 4 × 6 A ≤ 24 A).
Run: ``./dev.sh bench tests/bench/bench_failsafe.py``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from simulators.esp32_node.control import request as sim_request
from simulators.meter.server import MeterSimulator
from tests.bench.report import metric, write_report
from tests.support.procs import (
    free_port,
    kiosk_call,
    start_controller,
    start_node_sim,
    write_station_config,
)

pytestmark = pytest.mark.bench
BAYS = 4
LEASE_S = 5.0
SAFE_A = 6.0
HEADROOM_A = 24.0


async def test_bench_failsafe(tmp_path: Path) -> None:
    sim_dir = tmp_path / "sim"
    sim = start_node_sim(sim_dir, BAYS)
    async with MeterSimulator("sdm630", port=0, role="grid", speed=0) as meter:
        meter.set_currents((5.0, 5.0, 5.0))
        port = free_port()
        cfg = write_station_config(
            tmp_path / "station.toml",
            port_path=str(sim_dir / "ttyBAYS"),
            nodes=BAYS,
            http_port=port,
            data_dir=tmp_path / "data",
            safe_current_a=SAFE_A,
            extra=f"""
[site]
main_limit_a = 80
main_guaranteed_headroom_a = {HEADROOM_A}
min_on_time_s = 30
min_off_time_s = 30
increase_delay_s = 1
ramp_step_a = 16

[[meters]]
name = "grid"
map = "sdm630"
role = "grid"
poll_interval_s = 0.25
bus = {{ transport = "tcp", host = "127.0.0.1", port = {meter.port} }}
""",
        )
        ctl = start_controller(cfg)
        try:
            for i in range(1, BAYS + 1):
                sim_request(sim_dir, "plug_in", f"bay{i}", max_a=16.0, phases=3)
            await asyncio.to_thread(
                ctl.log.wait_for, lambda ln: ln.get("event") == "station.ready", 30
            )
            deadline = time.monotonic() + 60
            started: set[str] = set()
            while len(started) < BAYS and time.monotonic() < deadline:
                for i in range(1, BAYS + 1):
                    if (
                        f"bay{i}" not in started
                        and (
                            await asyncio.to_thread(
                                kiosk_call,
                                "POST",
                                f"http://127.0.0.1:{port}/api/v1/kiosk/bays/bay{i}/token",
                                {"token": f"FS-bay{i}"},
                            )
                        )[0]
                        == 200
                    ):
                        started.add(f"bay{i}")
                await asyncio.sleep(0.2)
            assert len(started) == BAYS, ctl.log.raw[-20:]
            # Full load: every node at 16 A.
            while time.monotonic() < deadline:
                state = sim_request(sim_dir, "state")
                if all(s["setpoint_a"] >= 16 and s["relay_on"] for s in state.values()):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"never reached full load: {state}")
            full_a = sum(max(s["current_a"]) for s in state.values())
            t0 = time.monotonic()
            ctl.kill()
            fell: dict[str, float] = {}
            while len(fell) < BAYS and time.monotonic() - t0 < 3 * LEASE_S:
                for name, s in sim_request(sim_dir, "state").items():
                    if (
                        name not in fell
                        and s["setpoint_a"] <= SAFE_A
                        and max(s["current_a"]) <= SAFE_A + 0.01
                    ):
                        fell[name] = time.monotonic() - t0
                await asyncio.sleep(0.02)
            after = sim_request(sim_dir, "state")
        finally:
            ctl.kill()
            sim.terminate()
    per_phase_after = sum(max(s["current_a"]) for s in after.values())
    worst = max(fell.values()) if len(fell) == BAYS else float("inf")
    write_report(
        "failsafe",
        {
            "all_at_safe_share_after_kill": metric(worst, "s", "lower", target=LEASE_S),
            "first_at_safe_share_after_kill": metric(min(fell.values()), "s", "lower"),
            "load_before_kill": metric(full_a, "A per phase", "higher"),
            "load_after_fall": metric(per_phase_after, "A per phase", "lower", target=HEADROOM_A),
        },
        notes={"bays": BAYS, "lease_s": LEASE_S, "safe_share_a": SAFE_A, "fell": fell},
    )
    assert worst <= LEASE_S + 0.2
    assert per_phase_after <= HEADROOM_A + 1e-6
