"""Implausible meter readings through the real chain: pymodbus server → Modbus driver → station.

The simulator serves well-formed answers carrying impossible values (float32's
maximum, a negative current, a gateway answering zeros). The station must take
each such reading as FAILED — load management falls back to its guaranteed
headroom — write one audit row when it starts and one when it ends (however
many readings in between), and count them in /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from controller.assemble import open_station
from controller.core.config import parse_config
from controller.core.station import Station
from controller.ops.metrics import MetricsCollector, read_samples
from controller.ports import Freshness
from simulators.meter import Fault, MeterSimulator
from tests.support.fake_nodes import FakeHub

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def station_with_meter(
    tmp: Path, sim: MeterSimulator, meter: dict[str, Any] | None = None
) -> AsyncIterator[Station]:
    entry = {
        "name": "grid",
        "map": sim.map.model,
        "role": "grid",
        "poll_interval_s": 0.1,
        "bus": {"transport": "tcp", "host": "127.0.0.1", "port": sim.port, "timeout_s": 0.5},
    } | (meter or {})
    cfg = parse_config(
        {
            "station": {"id": "pl", "data_dir": str(tmp)},
            "buses": [{"id": "bus"}],
            "bays": [{"id": "b1", "connector": 1, "bus": "bus", "address": 1, "max_current_a": 16}],
            "site": {"main_limit_a": 32, "main_guaranteed_headroom_a": 6},
            "meters": [entry],
        }
    )
    st = await open_station(cfg, hubs={"bus": FakeHub()}, http=False)
    task = asyncio.create_task(st.run())
    try:
        yield st
    finally:
        st.request_stop("test over")
        await asyncio.wait_for(task, 10)
        await st.journal.close()


async def until(st: Station, pred: Callable[[], bool], timeout: float = 10.0) -> None:
    """Re-check ``pred`` on every station update, and at least every 50 ms."""
    async with asyncio.timeout(timeout), st.events.subscription(lossy=True) as q:
        while not pred():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await q.get()


def grid_is(st: Station, freshness: Freshness) -> bool:
    m = st.meters.inputs.get("grid")
    return m is not None and m.reading.freshness is freshness


def load_uses(st: Station, freshness: Freshness) -> bool:
    return (
        st.load is not None
        and st.load.last is not None
        and st.load.last.grid_freshness is freshness
    )


async def audit(st: Station, kind: str) -> list[dict[str, Any]]:
    await st.settle()
    rows = await st.journal.query("SELECT detail FROM audit WHERE kind=? ORDER BY id", (kind,))
    return [json.loads(r["detail"]) for r in rows]


def metric(text: bytes, name: str, **labels: str) -> float:
    want = frozenset(labels.items())
    return sum(v for (n, ls), v in read_samples(text).items() if n == name and want <= ls)


def serve_bad(sim: MeterSimulator, case: str) -> None:
    if case == "zeros":
        sim.set_fault(Fault.ZEROS)
    else:
        quantity, value = case.split("=")
        sim.set_override(**{quantity: float(value)})


def serve_good(sim: MeterSimulator, case: str) -> None:
    sim.set_fault(Fault.NONE)
    if case != "zeros":
        sim.set_override(**{case.split("=")[0]: None})


@pytest.mark.parametrize(
    ("case", "quantity"),
    [
        ("current_l1=3.4e38", "current_l1"),
        ("current_l3=1e30", "current_l3"),
        ("current_l2=-30", "current_l2"),  # negative would make the building look empty
        ("zeros", "voltage_l1"),  # a gateway answering zeros: 0 A everywhere, and 0 V
    ],
)
async def test_implausible_readings_fail_are_audited_once_and_counted(
    tmp_path: Path, case: str, quantity: str
) -> None:
    async with MeterSimulator("sdm630", port=0, speed=0) as sim:
        sim.set_currents((10.0, 10.0, 10.0))
        async with station_with_meter(tmp_path, sim) as st:
            await until(st, lambda: grid_is(st, Freshness.FRESH) and load_uses(st, Freshness.FRESH))
            assert "grid_meter" not in st.safety.causes

            serve_bad(sim, case)
            await until(st, lambda: grid_is(st, Freshness.FAILED))
            reading = st.meters.inputs["grid"].reading
            assert reading.sample is None and reading.error.startswith("implausible")
            assert quantity in reading.error
            # Load management never uses it: it runs on the guaranteed headroom.
            await until(st, lambda: load_uses(st, Freshness.FAILED))
            assert "grid_meter" in st.safety.causes
            # A meter spewing garbage for many polls...
            await sim.wait_requests(sim.requests_received + 20)
            assert grid_is(st, Freshness.FAILED)

            serve_good(sim, case)
            await until(st, lambda: grid_is(st, Freshness.FRESH) and load_uses(st, Freshness.FRESH))
            assert "grid_meter" not in st.safety.causes

            # ...is audited once when it starts and once when it ends, with the count.
            started = await audit(st, "meter_implausible")
            assert len(started) == 1
            assert started[0]["meter"] == "grid" and started[0]["role"] == "grid"
            assert quantity in {p["quantity"] for p in started[0]["problems"]}
            ended = await audit(st, "meter_plausible_again")
            assert len(ended) == 1 and ended[0]["implausible_readings"] >= 20
            n = ended[0]["implausible_readings"]

            text = await MetricsCollector(st).render()
            assert metric(text, "edge_station_meter_implausible_readings_total", meter="grid") == n
            # (After zeros, the first good counter is a jump from 0: one reading more.)
            values = metric(
                text, "edge_station_meter_implausible_values_total", meter="grid", quantity=quantity
            )
            assert 20 <= values <= n


async def test_export_is_negative_power_and_passes(tmp_path: Path) -> None:
    """PV export: negative power with current magnitudes is a plausible reading."""
    async with MeterSimulator("sdm630", port=0, speed=0) as sim:
        sim.set_currents((-12.0, -12.0, -12.0))
        async with station_with_meter(tmp_path, sim) as st:
            await until(st, lambda: grid_is(st, Freshness.FRESH))
            sample = st.meters.inputs["grid"].reading.sample
            assert sample is not None and sample.power_total_w is not None
            assert sample.power_total_w < -8000 and min(c or 0 for c in sample.current_a) > 11.9
            await sim.wait_requests(sim.requests_received + 5)
            assert grid_is(st, Freshness.FRESH)
            assert await audit(st, "meter_implausible") == []


async def test_a_meter_signing_its_currents_is_read_as_magnitudes(tmp_path: Path) -> None:
    """The EM24 map declares signed currents: -12 A on the wire is 12 A of load, never -12."""
    async with MeterSimulator("em24", port=0, speed=0) as sim:
        sim.set_currents((10.0, 10.0, 10.0))
        async with station_with_meter(tmp_path, sim) as st:
            await until(st, lambda: grid_is(st, Freshness.FRESH))
            sim.set_override(current_l1=-12.0)
            await until(
                st,
                lambda: (
                    (s := st.meters.inputs["grid"].reading.sample) is not None
                    and s.current_a[0] == pytest.approx(12.0)
                ),
            )
            assert grid_is(st, Freshness.FRESH)
