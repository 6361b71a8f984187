"""A 1 MiB node firmware image through a pseudo-terminal, the serial hub and the node simulator.

Run: ``./dev.sh bench tests/bench/bench_firmware.py``. The pty has no baud-rate delay, so the
report also gives the wire time the same frames take at 115200 baud 8N1 (computed from the
bytes actually framed), and the ratio of a chunk's round trip to a SET_OUTPUT's in the same run.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from pathlib import Path

import pytest

from controller.ports import NodeUpdate
from drivers.esp32.codec import encode
from drivers.esp32.firmware_messages import MAX_CHUNK, FwChunk
from drivers.esp32.messages import Ack, Frame
from drivers.esp32.serial_hub import HubTiming, NodeConfig, SerialNodeHub
from simulators.esp32_node import SimulatedBus, specs
from tests.bench.report import metric, percentile, write_report

IMAGE = random.Random(1).randbytes(1 << 20)
BAUD_BYTES_S = 115200 / 10  # 8N1: ten bits a byte
BASELINE_COMMANDS = 500


@pytest.mark.bench
async def test_bench_firmware_transfer_1mib_serial(tmp_path: Path) -> None:
    async with SimulatedBus(tmp_path, specs(1)) as bus:
        hub = SerialNodeHub(bus.port_path, 115200, [NodeConfig("bay1", 1, 6.0)], timing=HubTiming())

        def sink(_: NodeUpdate) -> None:
            pass

        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(hub.run(sink))
            await bus.wait_until(lambda: bus.nodes["bay1"].configured)
            base_ms: list[float] = []
            for i in range(BASELINE_COMMANDS):
                t0 = time.perf_counter()
                await hub.node("bay1").set_output(relay_on=False, current_a=0.0, lease_s=5.0 + i)
                base_ms.append((time.perf_counter() - t0) * 1000)
            marks: list[float] = []
            started = time.perf_counter()
            await hub.update_firmware(
                "bay1",
                IMAGE,
                "sim-esp32/9.9.9",
                lambda stage, done, total: (
                    marks.append(time.perf_counter()) if stage == "transfer" else None
                ),
            )
            total_s = time.perf_counter() - started
            task.cancel()
    assert bus.nodes["bay1"].firmware == "sim-esp32/9.9.9"
    chunk_ms = [(b - a) * 1000 for a, b in itertools.pairwise(marks)]
    chunks = -(-len(IMAGE) // MAX_CHUNK)
    # Wire bytes of the transfer as framed (a leading 0x00 per frame on a serial line).
    chunk_frame = len(encode(Frame(0, 1, 1, FwChunk(1, 0, IMAGE[:MAX_CHUNK])))) + 1
    ack_frame = len(encode(Frame(1, 0, 1, Ack(1)))) + 1
    wire_s = chunks * (chunk_frame + ack_frame) / BAUD_BYTES_S
    p50_chunk, p50_base = percentile(chunk_ms, 50), percentile(base_ms, 50)
    write_report(
        "firmware_transfer_1mib_serial",
        {
            "transfer_pty": metric(total_s, "s"),
            "chunk_p50": metric(p50_chunk, "ms"),
            "chunk_p99": metric(percentile(chunk_ms, 99), "ms"),
            "set_output_p50": metric(p50_base, "ms"),
            "chunk_vs_set_output_p50": metric(p50_chunk / p50_base, "x"),
            "wire_time_115200": metric(wire_s, "s"),
            "estimate_115200": metric(wire_s + total_s, "s"),
        },
        notes={
            "image_bytes": len(IMAGE),
            "chunks": chunks,
            "chunk_frame_bytes": chunk_frame,
            "ack_frame_bytes": ack_frame,
            "estimate": "pty time (host + simulator processing) plus the 115200-baud wire time",
        },
    )
