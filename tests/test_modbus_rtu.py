"""Modbus RTU over a pseudo-terminal pair: the serial driver against the serial simulator.

Two ptys bridged by the test (what socat would do): the simulator's pymodbus
serial server opens one slave end, the driver's serial client the other.
"""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import AsyncIterator

import pytest

from controller.ports import DriverTimeout, Freshness, MeterReading
from drivers.modbus import ModbusBus, ModbusMeter, SerialEndpoint, load_map
from simulators.meter import Fault, MeterSimulator


@pytest.fixture
async def pty_pair() -> AsyncIterator[tuple[str, str]]:
    loop = asyncio.get_running_loop()
    m1, s1 = os.openpty()
    m2, s2 = os.openpty()
    for fd in (s1, s2):
        tty.setraw(fd)
    for fd in (m1, m2):
        os.set_blocking(fd, False)

    def pump(src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
        except OSError:
            return
        os.write(dst, data)

    loop.add_reader(m1, pump, m1, m2)
    loop.add_reader(m2, pump, m2, m1)
    try:
        yield os.ttyname(s1), os.ttyname(s2)
    finally:
        loop.remove_reader(m1)
        loop.remove_reader(m2)
        for fd in (m1, s1, m2, s2):
            os.close(fd)


@pytest.mark.parametrize("map_name", ["em24", "sdm630"])
async def test_rtu_round_trip_and_silence(pty_pair: tuple[str, str], map_name: str) -> None:
    server_end, client_end = pty_pair
    async with MeterSimulator(
        map_name, serial_port=server_end, baudrate=9600, speed=0, unit_id=7
    ) as sim:
        sim.set_currents((8.0, 4.0, 2.0))
        bus = ModbusBus(
            SerialEndpoint(client_end, 9600), timeout_s=0.3, backoff_initial_s=0.01
        )  # ptys reject parity
        meter = ModbusMeter("grid", load_map(map_name), bus, unit_id=7, poll_interval_s=0.05)
        assert bus.inter_frame_gap_s == pytest.approx(3.5 * 11 / 9600)
        async with bus:
            s = await meter.poll_once()
            assert s.current_a[0] == pytest.approx(8.0, abs=0.002)
            assert s.power_total_w == pytest.approx(
                sum((v or 0.0) * i for v, i in zip(s.voltage_v, (8.0, 4.0, 2.0), strict=True)),
                abs=0.8,  # EM24: voltages in 0.1 V steps (14 A x 0.05 V) and power in 0.1 W
            )
            assert max(c for _, _, c in sim.requests) <= sim.map.max_registers
            sim.set_fault(Fault.SILENT)
            with pytest.raises(DriverTimeout):
                await meter.poll_once()
            sim.set_fault(Fault.NONE)
            assert (await meter.poll_once()).import_wh == pytest.approx(1_234_000.0, rel=1e-6)

        readings: asyncio.Queue[MeterReading] = asyncio.Queue()
        task = asyncio.create_task(meter.run(readings.put_nowait))
        try:
            async with asyncio.timeout(5):
                assert (await readings.get()).freshness is Freshness.FRESH
                sim.set_fault(Fault.GARBAGE)  # CRC fails: the client hears nothing valid
                while (r := await readings.get()).freshness is Freshness.FRESH:
                    pass
                assert r.sample is None
                sim.set_fault(Fault.NONE)
                while (await readings.get()).freshness is not Freshness.FRESH:
                    pass
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert not bus.connected
