"""Benchmark: a slow grid meter's poll, and the plausibility gate's cost per reading.

1. An EM24 served by the real pymodbus simulator answering every request after
   its documented 500 ms, polled once a second through the real driver:
   baseline = every register on every poll (how the driver read it before),
   grid = the grid meter's plan (currents every poll, one other request in turn).
   Reported: poll time and the worst age of the currents just before the next
   reading (what ``grid_meter_timeout_s`` = 3 s is compared with), median and max.
2. The gate (``MeterGate.admit``) on realistic EM24 readings, against the
   driver's own decoding of the same reading as the baseline.

Run: ``./dev.sh bench tests/bench/bench_meter_poll.py``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from controller.core.plausibility import MeterGate, bounds_for
from controller.ports import Freshness, MeterReading, MeterSample
from drivers.modbus import ModbusBus, ModbusMeter, TcpEndpoint, load_map
from drivers.modbus.codec import decode_block, encode, to_sample
from drivers.modbus.extension import every_poll
from drivers.modbus.planner import plan_reads
from simulators.meter import MeterSimulator
from tests.bench.report import median, metric, percentile, write_report

pytestmark = pytest.mark.bench
ANSWER_S = 0.5
TIMEOUT_S = 3.0
POLLS = 8
GATE_RUNS = 20_000


async def _polls(sim: MeterSimulator, grid: bool) -> tuple[list[float], list[float]]:
    """(poll times, worst ages) over POLLS steady polls, run as ModbusMeter.run does."""
    bus = ModbusBus(TcpEndpoint("127.0.0.1", sim.port), timeout_s=2.0)
    meter = ModbusMeter(
        "grid",
        load_map("em24"),
        bus,
        poll_interval_s=1.0,
        every_poll=every_poll("grid", with_pv=False) if grid else None,
    )
    polls: list[float] = []
    ages: list[float] = []
    async with bus:
        prev: MeterSample | None = None
        next_at = time.monotonic()
        for i in range(POLLS + 1):
            t0 = time.monotonic()
            s = await meter.poll_once()
            done = time.monotonic()
            if i > 0:  # the first poll sweeps every request once
                polls.append(done - t0)
                assert prev is not None
                ages.append(done - prev.at)
            prev = s
            next_at = max(next_at + 1.0, done)
            await asyncio.sleep(next_at - done)
    return polls, ages


async def test_bench_meter_poll() -> None:
    async with MeterSimulator("em24", port=0, speed=0, answer_delay_s=ANSWER_S) as sim:
        sim.set_currents((10.0, 11.0, 12.0))
        base_polls, base_ages = await _polls(sim, grid=False)
        grid_polls, grid_ages = await _polls(sim, grid=True)

    # --- the gate, against decoding the same reading
    m = load_map("em24")
    (block,) = plan_reads(m.resolved(), max_registers=125)  # one decode of every field
    regs = [0] * block.count
    sim_values = MeterSimulator("em24", speed=0).snapshot()
    for f in block.fields:
        off = f.address - block.address
        regs[off : off + f.count] = encode(f, sim_values[f.quantity])
    gate = MeterGate()
    bounds = bounds_for("grid", main_limit_a=(32.0, 32.0, 32.0))
    decode_ns: list[float] = []
    gate_ns: list[float] = []
    for i in range(GATE_RUNS):
        t0 = time.perf_counter_ns()
        sample = to_sample(decode_block(block, regs), float(i))
        t1 = time.perf_counter_ns()
        reading = MeterReading("grid", float(i), Freshness.FRESH, sample)
        t2 = time.perf_counter_ns()
        out, _ = gate.admit(reading, bounds, role="grid", now_wall=float(i))
        t3 = time.perf_counter_ns()
        assert out.freshness is Freshness.FRESH
        decode_ns.append(t1 - t0)
        gate_ns.append(t3 - t2)

    base_poll, grid_poll = median(base_polls), median(grid_polls)
    gate_us = [n / 1000 for n in gate_ns[1000:]]
    dec_us = [n / 1000 for n in decode_ns[1000:]]
    write_report(
        "meter_poll",
        {
            "em24_poll_s_baseline_median": metric(base_poll, "s"),
            "em24_poll_s_grid_median": metric(grid_poll, "s"),
            "em24_poll_s_grid_p99": metric(percentile(grid_polls, 99), "s"),
            "em24_poll_ratio": metric(grid_poll / base_poll, "x"),
            "em24_worst_age_s_baseline_max": metric(max(base_ages), "s", target=TIMEOUT_S),
            "em24_worst_age_s_grid_median": metric(median(grid_ages), "s"),
            "em24_worst_age_s_grid_max": metric(max(grid_ages), "s", target=0.75 * TIMEOUT_S),
            "gate_us_median": metric(median(gate_us), "us"),
            "gate_us_p99": metric(percentile(gate_us, 99), "us"),
            "decode_us_median": metric(median(dec_us), "us"),
            "gate_over_decode_ratio": metric(median(gate_us) / median(dec_us), "x"),
        },
        notes={
            "answer_delay_s": ANSWER_S,
            "poll_interval_s": 1.0,
            "polls": POLLS,
            "gate_runs": GATE_RUNS,
            "transport": "Modbus TCP on loopback (no RS-485 wire time)",
        },
    )
    assert max(grid_ages) <= 0.75 * TIMEOUT_S
    assert base_poll > 2.9  # six requests at 500 ms: the finding
