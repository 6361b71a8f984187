"""The meter simulator: load profile, extra load, time acceleration, roles, standalone CLI."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from pathlib import Path

import pytest

from drivers.modbus import ModbusBus, ModbusMeter, TcpEndpoint, load_map
from drivers.modbus.maps import Quantity as Q
from simulators.meter import BuildingProfile, MeterSimulator
from simulators.meter.profile import Appliance

H = 3600.0


def test_profile_daily_curve_spikes_and_pv() -> None:
    p = BuildingProfile(pv_peak_w=6000)
    night, evening = sum(p.load_w(3 * H)), sum(p.load_w(19 * H + 1800))
    assert night < 500 < 2000 < evening
    before, inrush, running = (sum(p.load_w(6.5 * H + dt)) for dt in (-1, 0.5, 60))
    assert inrush - before > 8000  # heat-pump start: 3 x 3 kW
    assert 2500 < running - before < 3500
    oven = [a - b for a, b in zip(p.load_w(18 * H + 600), p.load_w(18 * H - 600), strict=True)]
    assert oven[0] > 2000 and abs(oven[1]) < 300 and abs(oven[2]) < 300  # single phase, L1
    assert p.pv_w(2 * H) == (0.0, 0.0, 0.0)
    assert sum(p.pv_w(13.25 * H)) == pytest.approx(6000, rel=0.01)
    assert BuildingProfile().pv_w(13 * H) == (0.0, 0.0, 0.0)
    kettle = Appliance("kettle", 0.0, 60.0, 2000.0, (1,))
    assert kettle.power_w(30.0) == (0.0, 2000.0, 0.0) and kettle.power_w(61.0) == (0.0, 0.0, 0.0)


def test_roles_and_pv_export() -> None:
    profile = BuildingProfile(pv_peak_w=8000, appliances=())
    grid = MeterSimulator(
        "sdm630", role="grid", profile=profile, speed=0, start_time_of_day_s=13 * H
    )
    pv = MeterSimulator("sdm630", role="pv", profile=profile, speed=0, start_time_of_day_s=13 * H)
    bay = MeterSimulator("sdm630", role="bay", profile=profile, speed=0)
    g, s = grid.snapshot(), pv.snapshot()
    assert (s[Q.POWER_TOTAL] or 0.0) > 7000
    assert (g[Q.POWER_TOTAL] or 0.0) < -5000  # exporting at noon
    assert bay.snapshot()[Q.POWER_TOTAL] == 0.0


def test_extra_load_adds_to_building_and_single_phase_collapses() -> None:
    amps = [(0.0, 0.0, 0.0)]
    sim = MeterSimulator("sdm630", speed=0, start_time_of_day_s=3 * H, extra_load=lambda: amps[0])
    base = sim.snapshot()
    amps[0] = (16.0, 16.0, 0.0)
    loaded = sim.snapshot()
    for ph, q in enumerate((Q.CURRENT_L1, Q.CURRENT_L2, Q.CURRENT_L3)):
        assert loaded[q] == pytest.approx((base[q] or 0) + amps[0][ph], rel=1e-9)
    one = MeterSimulator("sdm120", speed=0, extra_load=lambda: (10.0, 10.0, 10.0), role="bay")
    snap = one.snapshot()
    assert (
        snap[Q.POWER_L1]
        == snap[Q.POWER_TOTAL]
        == pytest.approx(3 * 10 * (snap[Q.VOLTAGE_L1] or 0.0), rel=0.01)
    )


def test_time_acceleration_integrates_energy() -> None:
    now = [0.0]
    sim = MeterSimulator(
        "sdm630", speed=3600, clock=lambda: now[0], import_wh=0, export_wh=0, start_time_of_day_s=0
    )
    sim.set_voltages((230.0, 230.0, 230.0))
    sim.set_currents((10.0, 0.0, 0.0))
    sim.snapshot()
    now[0] += 1.0  # one real second = one simulated hour
    assert sim.time_of_day_s() == pytest.approx(H)
    assert sim.snapshot()[Q.IMPORT_ENERGY] == pytest.approx(2300.0)
    sim.set_currents((-5.0, 0.0, 0.0))
    now[0] += 0.5
    snap = sim.snapshot()
    assert snap[Q.IMPORT_ENERGY] == pytest.approx(2300.0)
    assert snap[Q.EXPORT_ENERGY] == pytest.approx(575.0)


async def test_grid_meter_reflects_charging_through_the_driver() -> None:
    bays = {"bay1": (16.0, 0.0, 0.0), "bay2": (0.0, 10.0, 10.0)}

    def charging() -> tuple[float, float, float]:
        a, b, c = zip(*bays.values(), strict=True)
        return (sum(a), sum(b), sum(c))

    async with MeterSimulator("em24", port=0, speed=0, start_time_of_day_s=3 * H) as sim:
        meter = ModbusMeter("grid", load_map("em24"), ModbusBus(TcpEndpoint("127.0.0.1", sim.port)))
        async with meter.bus:
            idle = sim.snapshot()
            sim.set_extra_load(charging)
            s = await meter.poll_once()
        assert s.current_a[0] == pytest.approx((idle[Q.CURRENT_L1] or 0) + 16.0, abs=0.002)
        assert s.current_a[2] == pytest.approx((idle[Q.CURRENT_L3] or 0) + 10.0, abs=0.002)


ROOT = Path(__file__).resolve().parents[1]


async def test_standalone_cli() -> None:
    root = ROOT
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.meter",
        "--map",
        "abb_b23",
        "--port",
        "0",
        "--speed",
        "0",
        cwd=root,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            line = (await proc.stdout.readline()).decode()
        m = re.search(r"abb_b23 \(grid\) unit 1 on 127\.0\.0\.1:(\d+)", line)
        assert m, line
        meter = ModbusMeter(
            "g", load_map("abb_b23"), ModbusBus(TcpEndpoint("127.0.0.1", int(m.group(1))))
        )
        async with meter.bus:
            assert (await meter.poll_once()).import_wh == pytest.approx(1_234_000.0)
    finally:
        proc.terminate()
        await proc.wait()


async def test_fault_knobs_slow_answers_zeros_and_any_value() -> None:
    async with MeterSimulator("sdm630", port=0, speed=0, answer_delay_s=0.3) as sim:
        sim.set_currents((5.0, 5.0, 5.0))
        bus = ModbusBus(TcpEndpoint("127.0.0.1", sim.port), timeout_s=2.0)
        async with bus:
            regs, sent_at = await bus.read_registers_stamped(
                unit_id=1, function=4, address=0, count=2
            )
            assert time.monotonic() - sent_at >= 0.3 and len(regs) == 2  # the answer waited
            sim.answer_delay_s = 0.0
            meter = ModbusMeter("g", load_map("sdm630"), bus)
            sim.set_override(current_l1=3.4e38, frequency=-50.0)
            s = await meter.poll_once()
            assert s.current_a[0] == pytest.approx(3.4e38, rel=1e-6) and s.frequency_hz == -50.0
            sim.set_override(current_l1=None)
            assert (await meter.poll_once()).current_a[0] == pytest.approx(5.0)
            sim.set_fault("zeros")
            z = await meter.poll_once()
            assert z.voltage_v == (0.0, 0.0, 0.0) and z.import_wh == 0.0
    sdm = MeterSimulator("sdm630", speed=0)
    with pytest.raises(ValueError, match="float32"):
        sdm.set_override(import_energy=1e300)  # kWh as float32: beyond 3.4e38
