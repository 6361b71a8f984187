"""Benchmark: 64 ESP32 nodes over MQTT at 1 Hz telemetry through a real mosquitto.

The nodes (simulator MQTT front) run in a subprocess; the controller side
(MqttNodeHub + a real Station with its Journal, one session per bay so
output leases are renewed as in production) runs in this process, whose CPU
time is measured with ``resource.getrusage`` (all threads). The broker's CPU
is read with psutil. ``BENCH_MQTT_S`` sets the measured window (default 40 s).

    .venv/bin/pytest tests/bench/bench_mqtt.py -m bench -s
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from pathlib import Path

import psutil
import pytest

from controller.core.auth import free_vend_step
from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.station import Station
from drivers.esp32.mqtt_hub import build_mqtt
from tests.bench.report import metric, percentile, write_report
from tests.support.mosquitto import Mosquitto, require_mosquitto

NODES = 64
WINDOW_S = float(os.environ.get("BENCH_MQTT_S", "40"))
STATION = "bench-1"
REPO = Path(__file__).resolve().parents[2]


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@pytest.mark.bench
async def test_bench_64_nodes_over_mqtt(tmp_path: Path) -> None:
    require_mosquitto()
    users = {
        "controller": "controller-pw",
        **{f"bay{i}": f"pw-bay{i}" for i in range(1, NODES + 1)},
    }
    with Mosquitto(tmp_path / "mosquitto", users) as broker:
        cfg = parse_config(
            {
                "station": {"id": STATION, "data_dir": str(tmp_path)},
                "buses": [{"id": "mqtt", "transport": "mqtt"}],
                "bays": [
                    {"id": f"bay{i}", "connector": i, "bus": "mqtt", "address": i}
                    for i in range(1, NODES + 1)
                ],
                "mqtt": {"host": broker.host, "port": broker.port, "password": "controller-pw"},
            }
        )
        hub = build_mqtt(cfg.buses[0], list(cfg.bays), cfg)
        journal = await Journal.open(tmp_path / "journal.sqlite3")
        station = Station(cfg, journal, hubs={"mqtt": hub})
        station.authorizer.add(free_vend_step())
        await station.restore()
        sim = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simulators.esp32_node.mqtt_main",
            "--port", str(broker.port), "--station", STATION, "--nodes", str(NODES), "--plug-in",
            cwd=REPO, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        run = asyncio.create_task(station.run())
        try:
            assert sim.stdout is not None
            async with asyncio.timeout(60):
                assert (await sim.stdout.readline()).strip() == b"READY"
                async with station.events.subscription(lossy=True) as updates:
                    while not all(rt.state.node_online for rt in station.bays.values()):
                        await updates.get()
                for rt in station.bays.values():
                    out = await station.commands.present_token(rt.cfg.id, f"T-{rt.cfg.id}")
                    assert out.ok, out
            await asyncio.sleep(3.0)  # let every session reach Charging and settle

            broker_proc = psutil.Process(broker.pid)
            rx0 = sum(hub.node(b.node_id).stats().frames_rx for b in cfg.bays)
            b0 = broker_proc.cpu_times()
            c0, w0 = _cpu_s(), time.monotonic()
            lag: list[float] = []
            deadline = w0 + WINDOW_S
            while time.monotonic() < deadline:
                t = time.monotonic()
                await asyncio.sleep(0.05)
                lag.append((time.monotonic() - t - 0.05) * 1000)
            wall = time.monotonic() - w0
            c1 = _cpu_s()
            b1 = broker_proc.cpu_times()
            rx1 = sum(hub.node(b.node_id).stats().frames_rx for b in cfg.bays)

            charging = sum(1 for rt in station.bays.values() if rt.state.phase.value == "charging")
            stats = [hub.node(b.node_id).stats() for b in cfg.bays]
            gaps = sum(s.extra.get("seq_gaps", 0) for s in stats)
            timeouts = sum(s.timeouts for s in stats)
            controller_pct = (c1 - c0) / wall * 100
            broker_pct = ((b1.user + b1.system) - (b0.user + b0.system)) / wall * 100
            write_report(
                "mqtt_64_nodes",
                {
                    "controller_cpu_pct": metric(controller_pct, "%", target=25.0),
                    "broker_cpu_pct": metric(broker_pct, "%", target=10.0),
                    "frames_per_s": metric((rx1 - rx0) / wall, "1/s", better="higher"),
                    "loop_lag_p99_ms": metric(percentile(lag, 99), "ms", target=50.0),
                    "seq_gaps": metric(gaps, "frames", target=0),
                    "command_timeouts": metric(timeouts, "commands", target=0),
                },
                notes={
                    "nodes": NODES,
                    "window_s": round(wall, 1),
                    "charging_bays": charging,
                    "cpu_count": os.cpu_count(),
                    "controller": "MqttNodeHub + Station + Journal, one process (all threads)",
                    "cpu_pct_of": "one core",
                },
            )
            assert gaps == 0 and timeouts == 0
            assert charging == NODES
        finally:
            if sim.returncode is None:
                sim.terminate()
                await sim.wait()
            station.request_stop("bench")
            await asyncio.wait_for(run, 10)
            await journal.close()
