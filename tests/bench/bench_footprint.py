"""Footprint: RSS and CPU share of the controller with 16 bays at 1 Hz telemetry over 60 s.

The node simulator runs in its own process (it is not the controller's cost);
the controller runs as ``edge-station run`` with all 16 bays charging.
Run: ``./dev.sh bench tests/bench/bench_footprint.py`` (BENCH_FOOTPRINT_S=60 by default).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.bench.report import metric, write_report
from tests.support.procs import (
    free_port,
    kiosk_call,
    start_controller,
    start_node_sim,
    write_station_config,
)

pytestmark = pytest.mark.bench
BAYS = 16


def _configured(node: str) -> Callable[[dict[str, Any]], bool]:
    return lambda ln: ln.get("event") == "esp32.configured" and ln.get("node") == node


def test_bench_footprint(tmp_path: Path) -> None:
    duration = float(os.environ.get("BENCH_FOOTPRINT_S", "60"))
    sim = start_node_sim(tmp_path / "sim", BAYS)
    http_port = free_port()
    cfg = write_station_config(
        tmp_path / "station.toml",
        port_path=str(tmp_path / "sim" / "ttyBAYS"),
        nodes=BAYS,
        http_port=http_port,
        data_dir=tmp_path / "data",
    )
    ctl = start_controller(cfg)
    try:
        from simulators.esp32_node.control import request

        for i in range(1, BAYS + 1):
            request(tmp_path / "sim", "plug_in", f"bay{i}", max_a=16.0, phases=3)
        ctl.log.wait_for(lambda ln: ln.get("event") == "station.ready")
        for i in range(1, BAYS + 1):
            ctl.log.wait_for(_configured(f"bay{i}"))
        started = 0
        deadline = time.monotonic() + 30
        while started < BAYS and time.monotonic() < deadline:
            started = 0
            for i in range(1, BAYS + 1):
                code, _ = kiosk_call(
                    "POST",
                    f"http://127.0.0.1:{http_port}/api/v1/kiosk/bays/bay{i}/token",
                    {"token": f"T{i}"},
                )
                started += code == 200
            if started < BAYS:
                time.sleep(0.5)
        proc = psutil.Process(ctl.pid)
        time.sleep(3)  # warm-up: sessions ramp, first checkpoints written
        t0 = time.monotonic()
        c0 = proc.cpu_times()
        time.sleep(duration)
        c1 = proc.cpu_times()
        elapsed = time.monotonic() - t0
        rss_mb = proc.memory_info().rss / 2**20
        sim_cpu = psutil.Process(sim.pid).cpu_times()
    finally:
        ctl.terminate()
        sim.terminate()
    cpu = (c1.user + c1.system - c0.user - c0.system) / elapsed * 100
    write_report(
        "footprint",
        {
            "controller_cpu_share": metric(cpu, "% of one core", "lower", target=5),
            "controller_rss": metric(rss_mb, "MiB", "lower"),
            "sessions_running": metric(started, "sessions", "higher", target=BAYS),
        },
        notes={
            "bays": BAYS,
            "duration_s": duration,
            "simulator_cpu_total_s": round(sim_cpu.user + sim_cpu.system, 2),
        },
    )
    assert started == BAYS
