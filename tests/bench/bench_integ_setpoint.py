"""External limit → setpoint acknowledged by the node, over Modbus TCP and MQTT.

Real path: a pymodbus client (or an aiomqtt client through mosquitto with the
shipped ACL) → the station's setpoint server → the lease (controller.load.external)
→ the load manager → serial driver → pseudo-terminal → node simulator. Measured:
a *lower* limit written by the energy manager until the node's setpoint is at or
below it (decreases go out at once). Baseline in the same run: the same limit
offered in-process (no transport). Target: within one load-loop period (1 s).
Run: ``./dev.sh bench tests/bench/bench_integ_setpoint.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomqtt
import pytest
from pymodbus.client import AsyncModbusTcpClient

from controller.assemble import open_station
from controller.core.config import parse_config
from drivers.esp32.assemble import build_serial
from drivers.setpoint import modbus as reg
from drivers.setpoint.extension import TRANSPORTS
from drivers.setpoint.gate import external_gate
from simulators.esp32_node.bus import SimNodeSpec, SimulatedBus
from tests.bench.report import median, metric, percentile, write_report
from tests.support.integ import grid
from tests.support.mosquitto import broker

pytestmark = pytest.mark.bench
ROUNDS = 25
PASSWORDS = {"controller": "c-secret", "hems": "h-secret"}


def _at_most(node: object, amps: float) -> Callable[[], bool]:
    return lambda: float(node.physics.setpoint_a) <= amps + 1e-6  # type: ignore[attr-defined]


async def test_bench_external_setpoint(tmp_path: Path) -> None:
    with broker(tmp_path / "mosquitto", PASSWORDS) as mosq:
        async with SimulatedBus(
            tmp_path / "sim", [SimNodeSpec("bay1", 1, "evse", 32.0, 0.0)]
        ) as bus:
            node = bus.nodes["bay1"]
            node.plug_in(bus.clock(), max_a=16.0, phases=3)
            cfg = parse_config(
                {
                    "station": {"id": "bench", "data_dir": str(tmp_path / "data")},
                    "auth": {"free_vend": True},
                    "buses": [{"id": "bays", "port": bus.port_path}],
                    "bays": [{"id": "bay1", "connector": 1, "bus": "bays", "address": 1}],
                    "site": {
                        "main_limit_a": 40,
                        "min_on_time_s": 30,
                        "min_off_time_s": 30,
                        "increase_delay_s": 1,
                        "ramp_step_a": 16,
                    },
                    "mqtt": {
                        "host": mosq.host,
                        "port": mosq.port,
                        "username": "controller",
                        "password": PASSWORDS["controller"],
                    },
                    "external": {
                        "lease_s": 600,
                        "fallback_site_a": 16,
                        "mqtt": {},
                        "modbus": {"host": "127.0.0.1", "port": 0},
                    },
                }
            )
            st = await open_station(
                cfg, hubs={"bays": build_serial(cfg.buses[0], cfg.bays)}, http=False
            )
            gate = external_gate(st)
            assert gate is not None
            task = asyncio.create_task(st.run())

            async def meter() -> None:
                while True:
                    amps = node.physics.currents()
                    st.meters.on_reading(grid(tuple(5.0 + a for a in amps)), role="grid")  # type: ignore[arg-type]
                    await asyncio.sleep(0.1)

            feeder = asyncio.create_task(meter())
            rng = random.Random(7)
            results: dict[str, list[float]] = {"in_process": [], "modbus": [], "mqtt": []}
            try:
                await bus.wait_until(lambda: node.configured, 10)
                async with st.events.subscription(lossy=True) as q, asyncio.timeout(10):
                    while not st.bays["bay1"].state.node_online:
                        await q.get()
                assert (await st.commands.present_token("bay1", "BENCH")).ok
                mb = TRANSPORTS[st]["modbus"]
                mq = TRANSPORTS[st]["mqtt"]
                await asyncio.wait_for(mb.ready.wait(), 10)
                await asyncio.wait_for(mq.connected.wait(), 10)
                client = AsyncModbusTcpClient("127.0.0.1", port=mb.port, timeout=3)
                assert await client.connect()
                hems = aiomqtt.Client(
                    mosq.host, mosq.port, username="hems", password=PASSWORDS["hems"]
                )
                async with hems:

                    async def by_modbus(amps: float) -> None:
                        await client.write_register(reg.REG_SITE_LIMIT_DA, int(amps * 10))

                    async def by_mqtt(amps: float) -> None:
                        await hems.publish(
                            "edge/bench/limit/site/set", json.dumps({"a": amps}), qos=1
                        )

                    async def in_process(amps: float) -> None:
                        gate.offer(scope="site", source="bench", amps=amps)

                    senders: dict[str, Callable[[float], Awaitable[None]]] = {
                        "in_process": in_process,
                        "modbus": by_modbus,
                        "mqtt": by_mqtt,
                    }
                    for i in range(ROUNDS):
                        for name, send in senders.items():
                            await send(16.0)
                            await bus.wait_until(lambda: node.physics.setpoint_a >= 15.9, 30)
                            low = 8.0 + (i % 5)
                            await asyncio.sleep(rng.uniform(0, 0.25))  # unsynchronised
                            t0 = time.perf_counter()
                            await send(low)
                            await bus.wait_until(_at_most(node, low), 5)
                            results[name].append((time.perf_counter() - t0) * 1000)
                client.close()
            finally:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder
                st.request_stop("bench")
                await task
                await st.journal.close()
    base = median(results["in_process"])
    metrics = {}
    for name, lat in results.items():
        metrics[f"{name}_p50"] = metric(median(lat), "ms", "lower")
        metrics[f"{name}_p99"] = metric(percentile(lat, 99), "ms", "lower", target=1000)
        if name != "in_process":
            metrics[f"{name}_vs_in_process"] = metric(median(lat) / base, "x", "lower")
    write_report(
        "integ_external_setpoint",
        metrics,
        notes={
            "rounds": ROUNDS,
            "path": "client -> setpoint server -> lease -> load manager -> serial pty -> node",
        },
    )
    for name in ("modbus", "mqtt"):
        assert percentile(results[name], 99) < 1000  # within one load-loop period
