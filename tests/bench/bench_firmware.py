"""A 1 MiB node firmware image to the node simulator, over the serial hub (a pseudo-terminal) and
over the MQTT hub (a real mosquitto), in one run and one report.

Run: ``./dev.sh bench tests/bench/bench_firmware.py``. The pty has no baud-rate delay, so the
report also gives the wire time the same frames take at 115200 baud 8N1 (computed from the
bytes actually framed). Each transport's chunk round trip is also given against a SET_OUTPUT's
on the same transport, and MQTT's figures against serial's (the baseline) in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.ports import BayNode, FirmwareProgress, NodeLink, NodeUpdate
from drivers.esp32.codec import encode
from drivers.esp32.firmware_messages import MAX_CHUNK, FwChunk
from drivers.esp32.messages import Ack, Frame
from drivers.esp32.mqtt_config import parse_mqtt
from drivers.esp32.mqtt_hub import MqttNodeHub
from drivers.esp32.serial_hub import HubTiming, NodeConfig, SerialNodeHub
from simulators.esp32_node import SimulatedBus, specs
from simulators.esp32_node.mqtt_front import MqttSimNodes
from tests.bench.report import metric, percentile, write_report
from tests.support.mosquitto import broker

IMAGE = random.Random(1).randbytes(1 << 20)
BAUD_BYTES_S = 115200 / 10  # 8N1: ten bits a byte
BASELINE_COMMANDS = 500
VERSION = "sim-esp32/9.9.9"
STATION = "bench-1"
PASSWORDS = {"controller": "controller-secret", "bay1": "pw-bay1"}

Update = Callable[[str, bytes, str, FirmwareProgress], Awaitable[None]]


@dataclass
class Run:
    total_s: float
    chunk_ms: list[float]
    base_ms: list[float]


async def _measure(node: BayNode, update: Update) -> Run:
    base_ms: list[float] = []
    for i in range(BASELINE_COMMANDS):
        t0 = time.perf_counter()
        await node.set_output(relay_on=False, current_a=0.0, lease_s=5.0 + i)
        base_ms.append((time.perf_counter() - t0) * 1000)
    marks: list[float] = []
    started = time.perf_counter()
    await update(
        "bay1",
        IMAGE,
        VERSION,
        lambda stage, done, total: (
            marks.append(time.perf_counter()) if stage == "transfer" else None
        ),
    )
    total_s = time.perf_counter() - started
    return Run(total_s, [(b - a) * 1000 for a, b in itertools.pairwise(marks)], base_ms)


async def _serial(tmp_path: Path) -> Run:
    async with SimulatedBus(tmp_path, specs(1)) as bus:
        hub = SerialNodeHub(bus.port_path, 115200, [NodeConfig("bay1", 1, 6.0)], timing=HubTiming())

        def sink(_: NodeUpdate) -> None:
            pass

        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(hub.run(sink))
            await bus.wait_until(lambda: bus.nodes["bay1"].configured)
            run = await _measure(hub.node("bay1"), hub.update_firmware)
            task.cancel()
        assert bus.nodes["bay1"].firmware == VERSION
    return run


async def _mqtt(tmp_path: Path) -> Run:
    with broker(tmp_path / "mosquitto", PASSWORDS) as b:
        cfg = parse_mqtt(
            {
                "host": b.host,
                "port": b.port,
                "username": "controller",
                "password": PASSWORDS["controller"],
                "ack_timeout_s": 2.0,
                "retries": 3,
            }
        )
        hub = MqttNodeHub(cfg, STATION, [NodeConfig("bay1", 1, 6.0)])
        up = asyncio.Event()

        def sink(u: NodeUpdate) -> None:
            if isinstance(u, NodeLink) and u.online:
                up.set()

        async with MqttSimNodes(b.host, b.port, STATION, specs(1), passwords=PASSWORDS) as sim:
            task = asyncio.create_task(hub.run(sink))
            try:
                await asyncio.wait_for(up.wait(), 20)
                run = await _measure(hub.node("bay1"), hub.update_firmware)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            assert sim.nodes["bay1"].firmware == VERSION
    return run


@pytest.mark.bench
@pytest.mark.timeout(1800)
async def test_bench_firmware_transfer_1mib_serial_and_mqtt(tmp_path: Path) -> None:
    serial = await _serial(tmp_path / "serial")
    mqtt = await _mqtt(tmp_path / "mqtt")
    chunks = -(-len(IMAGE) // MAX_CHUNK)
    assert len(serial.chunk_ms) == len(mqtt.chunk_ms) == chunks
    # Wire bytes of the transfer as framed (a leading 0x00 per frame on a serial line).
    chunk_frame = len(encode(Frame(0, 1, 1, FwChunk(1, 0, IMAGE[:MAX_CHUNK])))) + 1
    ack_frame = len(encode(Frame(1, 0, 1, Ack(1)))) + 1
    wire_s = chunks * (chunk_frame + ack_frame) / BAUD_BYTES_S
    figures: dict[str, dict[str, object]] = {}
    for name, r in (("serial", serial), ("mqtt", mqtt)):
        p50_chunk, p50_base = percentile(r.chunk_ms, 50), percentile(r.base_ms, 50)
        figures |= {
            f"{name}_transfer": metric(r.total_s, "s"),
            f"{name}_chunk_p50": metric(p50_chunk, "ms"),
            f"{name}_chunk_p99": metric(percentile(r.chunk_ms, 99), "ms"),
            f"{name}_set_output_p50": metric(p50_base, "ms"),
            f"{name}_set_output_p99": metric(percentile(r.base_ms, 99), "ms"),
            f"{name}_chunk_vs_set_output_p50": metric(p50_chunk / p50_base, "x"),
        }
    figures |= {
        "mqtt_vs_serial_transfer": metric(mqtt.total_s / serial.total_s, "x"),
        "mqtt_vs_serial_chunk_p50": metric(
            percentile(mqtt.chunk_ms, 50) / percentile(serial.chunk_ms, 50), "x"
        ),
        "mqtt_vs_serial_chunk_p99": metric(
            percentile(mqtt.chunk_ms, 99) / percentile(serial.chunk_ms, 99), "x"
        ),
        "serial_wire_time_115200": metric(wire_s, "s"),
        "serial_estimate_115200": metric(wire_s + serial.total_s, "s"),
    }
    write_report(
        "firmware_transfer_1mib",
        figures,  # type: ignore[arg-type]
        notes={
            "image_bytes": len(IMAGE),
            "chunks": chunks,
            "chunk_frame_bytes": chunk_frame,
            "ack_frame_bytes": ack_frame,
            "baseline": "serial over a pty in the same run (mqtt_vs_serial_*)",
            "mqtt": "a real mosquitto on loopback, QoS 1, the shipped ACL, per-node accounts",
            "estimate": "pty time (host + simulator processing) plus the 115200-baud wire time",
        },
    )
