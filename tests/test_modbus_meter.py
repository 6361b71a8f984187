"""The Modbus meter driver against the real pymodbus server of the meter simulator (TCP)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest

from controller.ports import (
    ConnectionLost,
    DriverTimeout,
    Freshness,
    MeterReading,
    PermanentError,
    TransientError,
)
from drivers.modbus import (
    MeterConfig,
    ModbusBus,
    ModbusDeviceBusy,
    ModbusMeter,
    ModbusRejected,
    TcpEndpoint,
    build_meters,
    load_map,
)
from drivers.modbus.extension import MeterRole, with_role_defaults
from drivers.modbus.maps import Quantity
from simulators.meter import Fault, MeterSimulator

MAPS = ["sdm630", "sdm120", "sdm72d", "abb_b23", "em24"]


def make_meter(sim: MeterSimulator, *, timeout_s: float = 0.3, **kw: object) -> ModbusMeter:
    bus = ModbusBus(TcpEndpoint("127.0.0.1", sim.port), timeout_s=timeout_s, backoff_initial_s=0.01)
    return ModbusMeter("grid", sim.map, bus, unit_id=sim.unit_id, **kw)  # type: ignore[arg-type]


def sample_values(reading_sample: object) -> dict[Quantity, float | None]:
    s = reading_sample
    q = Quantity
    return {
        q.VOLTAGE_L1: s.voltage_v[0],  # type: ignore[attr-defined]
        q.VOLTAGE_L2: s.voltage_v[1],  # type: ignore[attr-defined]
        q.VOLTAGE_L3: s.voltage_v[2],  # type: ignore[attr-defined]
        q.CURRENT_L1: s.current_a[0],  # type: ignore[attr-defined]
        q.CURRENT_L2: s.current_a[1],  # type: ignore[attr-defined]
        q.CURRENT_L3: s.current_a[2],  # type: ignore[attr-defined]
        q.POWER_L1: s.power_w[0],  # type: ignore[attr-defined]
        q.POWER_L2: s.power_w[1],  # type: ignore[attr-defined]
        q.POWER_L3: s.power_w[2],  # type: ignore[attr-defined]
        q.POWER_TOTAL: s.power_total_w,  # type: ignore[attr-defined]
        q.FREQUENCY: s.frequency_hz,  # type: ignore[attr-defined]
        q.IMPORT_ENERGY: s.import_wh,  # type: ignore[attr-defined]
        q.EXPORT_ENERGY: s.export_wh,  # type: ignore[attr-defined]
    }


@pytest.mark.parametrize("map_name", MAPS)
async def test_values_round_trip_simulator_to_driver(map_name: str) -> None:
    async with MeterSimulator(map_name, port=0, speed=0) as sim:
        sim.set_currents((16.0, -6.5, 2.25))  # L2 exports
        sim.set_voltages((231.0, 229.5, 230.1))
        sim.set_frequency(49.98)
        sim.set_energy(import_wh=1_234_560.0, export_wh=78_900.0)
        meter = make_meter(sim)
        async with meter.bus:
            sample = await meter.poll_once()
        truth = sim.snapshot()
        got = sample_values(sample)
        fields = {f.quantity: f for f in sim.map.resolved()}
        for q, value in got.items():
            if q not in fields:
                assert value is None, q
                continue
            expected = truth[q]
            assert expected is not None and value is not None, q
            tol = 1e-6 * abs(expected) if fields[q].dtype.is_float else abs(fields[q].factor)
            assert value == pytest.approx(expected, abs=tol), q
        if sim.map.phases == 3:
            assert sample.power_w[1] == pytest.approx(-6.5 * 229.5, abs=0.11)
            assert sample.current_a[1] == pytest.approx(6.5, rel=1e-4)  # magnitude
        assert sample.power_total_w == pytest.approx(
            16.0 * 231.0 - 6.5 * 229.5 + 2.25 * 230.1, abs=0.1
        )


async def test_not_available_sentinels_become_none() -> None:
    async with MeterSimulator("abb_b23", port=0, speed=0) as sim:
        sim.set_unavailable("voltage_l2", "power_l3", "export_energy", "frequency")
        meter = make_meter(sim)
        async with meter.bus:
            s = await meter.poll_once()
        assert s.voltage_v[1] is None and s.voltage_v[0] is not None
        assert s.power_w[2] is None and s.power_w[0] is not None
        assert s.export_wh is None and s.import_wh is not None
        assert s.frequency_hz is None


class Readings:
    """A sink that lets a test await the next reading."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[MeterReading] = asyncio.Queue()

    def __call__(self, reading: MeterReading) -> None:
        self.queue.put_nowait(reading)

    async def next(self, pred: Callable[[MeterReading], bool] = lambda r: True) -> MeterReading:
        async with asyncio.timeout(5):
            while not pred(r := await self.queue.get()):
                pass
            return r


@pytest.fixture
async def running() -> AsyncIterator[tuple[MeterSimulator, ModbusMeter, Readings]]:
    async with MeterSimulator("sdm630", port=0, speed=0) as sim:
        meter = make_meter(sim, timeout_s=0.2, poll_interval_s=0.05)
        readings = Readings()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(meter.run(readings))
            yield sim, meter, readings
            task.cancel()
        assert not meter.bus.connected  # the run's exit closed the bus


async def test_silent_meter_fails_then_recovers(
    running: tuple[MeterSimulator, ModbusMeter, Readings], caplog: pytest.LogCaptureFixture
) -> None:
    sim, _meter, readings = running
    caplog.set_level(logging.INFO, logger="drivers.modbus.meter")
    first = await readings.next()
    assert first.freshness is Freshness.FRESH and first.sample is not None and first.meter == "grid"
    sim.set_fault(Fault.SILENT)
    failed = await readings.next(lambda r: r.freshness is not Freshness.FRESH)
    assert failed.freshness is Freshness.FAILED
    assert failed.sample is None  # never the old sample
    assert "DriverTimeout" in failed.error
    again = await readings.next()
    assert again.freshness is Freshness.FAILED and again.sample is None
    sim.set_fault(Fault.NONE)
    back = await readings.next(lambda r: r.freshness is Freshness.FRESH)
    assert back.sample is not None and back.sample.at > failed.at
    await readings.next()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("poll failed" in m for m in messages) == 1
    assert sum("recovered after" in m for m in messages) == 1


@pytest.mark.parametrize(
    ("fault", "code", "error"),
    [
        (Fault.EXCEPTION, 6, "ModbusDeviceBusy"),
        (Fault.EXCEPTION, 4, "ModbusDeviceBusy"),
        (Fault.EXCEPTION, 2, "ModbusRejected"),
        (Fault.GARBAGE, None, ""),
    ],
)
async def test_exception_responses_and_garbage_fail_the_poll_never_the_task(
    running: tuple[MeterSimulator, ModbusMeter, Readings],
    fault: Fault,
    code: int | None,
    error: str,
) -> None:
    sim, _meter, readings = running
    await readings.next(lambda r: r.freshness is Freshness.FRESH)
    sim.set_fault(fault, exception_code=code)
    for _ in range(3):
        r = await readings.next(lambda r: r.freshness is not Freshness.FRESH)
        assert r.sample is None and error in r.error
    sim.set_fault(Fault.NONE)
    assert (await readings.next(lambda r: r.freshness is Freshness.FRESH)).sample is not None


async def test_error_mapping_of_single_reads() -> None:
    async with MeterSimulator("sdm630", port=0, speed=0) as sim:
        bus = ModbusBus(TcpEndpoint("127.0.0.1", sim.port), timeout_s=0.2)
        async with bus:
            read = bus.read_registers
            with pytest.raises(ModbusRejected) as rej:
                await read(unit_id=1, function=3, address=0, count=2)  # SDM630 answers fc 04 only
            assert rej.value.code == 1 and isinstance(rej.value, PermanentError)
            with pytest.raises(ModbusRejected, match="exception 2"):
                await read(unit_id=1, function=4, address=0x200, count=2)
            sim.set_fault(Fault.EXCEPTION, exception_code=6)
            with pytest.raises(ModbusDeviceBusy) as busy:
                await read(unit_id=1, function=4, address=0, count=2)
            assert isinstance(busy.value, TransientError)
            sim.set_fault(Fault.SILENT)
            with pytest.raises(DriverTimeout):
                await read(unit_id=1, function=4, address=0, count=2)
            assert not bus.connected  # a request without a clean answer drops the link
            sim.set_fault(Fault.NONE)
            assert len(await read(unit_id=1, function=4, address=0, count=2)) == 2
            assert bus.connected


async def test_cancel_pending_read_propagates_and_leaves_bus_usable() -> None:
    async with MeterSimulator("sdm630", port=0, speed=0) as sim:
        sim.set_fault(Fault.SILENT)
        bus = ModbusBus(TcpEndpoint("127.0.0.1", sim.port), timeout_s=30)
        async with bus:
            task = asyncio.create_task(
                bus.read_registers(unit_id=1, function=4, address=0, count=2)
            )
            await sim.wait_requests(1)  # the request is on the wire, the answer never comes
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert task.cancelled()
            assert not bus.connected  # closed cleanly, not half-way through a transaction
            sim.set_fault(Fault.NONE)
            async with asyncio.timeout(2):
                regs = await bus.read_registers(unit_id=1, function=4, address=0, count=2)
            assert len(regs) == 2


async def test_cancelling_run_during_a_read_cancels() -> None:
    async with MeterSimulator("sdm630", port=0, speed=0) as sim:
        sim.set_fault(Fault.SILENT)
        meter = make_meter(sim, timeout_s=30)
        task = asyncio.create_task(meter.run(Readings()))
        await sim.wait_requests(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not meter.bus.connected


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_reconnect_backoff_is_exponential_and_capped_then_recovers() -> None:
    clock = FakeClock()
    port = free_port()
    bus = ModbusBus(
        TcpEndpoint("127.0.0.1", port),
        timeout_s=0.5,
        backoff_initial_s=1.0,
        backoff_max_s=4.0,
        clock=clock,
    )
    waits = []
    async with bus:
        for _ in range(5):
            with pytest.raises(ConnectionLost, match="cannot connect"):
                await bus.read_registers(unit_id=1, function=4, address=0, count=2)
            with pytest.raises(ConnectionLost, match=r"next attempt in (\d+\.\d) s") as e:
                await bus.read_registers(unit_id=1, function=4, address=0, count=2)
            waits.append(float(str(e.value).split("next attempt in ")[1].split(" ")[0]))
            clock.now += waits[-1]
        assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]
        async with MeterSimulator("sdm630", port=port, speed=0):
            assert len(await bus.read_registers(unit_id=1, function=4, address=0, count=2)) == 2
    assert not bus.connected


async def test_optional_registers_missing_on_this_unit() -> None:
    async with MeterSimulator("sdm72d", port=0, speed=0, omit_optional=True) as sim:
        sim.set_currents((10.0, 10.0, 10.0))
        meter = make_meter(sim)
        async with meter.bus:
            s = await meter.poll_once()
            assert s.power_total_w is not None and s.import_wh is not None
            assert s.voltage_v == (None, None, None) and s.current_a == (None, None, None)
            n = sim.requests_received
            await meter.poll_once()
            assert (
                sim.requests_received - n == 2
            )  # the rejected optional blocks are not asked again
    async with MeterSimulator("sdm72d", port=0, speed=0) as sim:  # a unit that has them
        meter = make_meter(sim)
        async with meter.bus:
            assert None not in (await meter.poll_once()).voltage_v


async def test_config_override_of_register_limit_is_respected_by_requests() -> None:
    async with MeterSimulator("sdm630", port=0, speed=0, max_registers=10) as sim:
        strict = make_meter(sim, max_registers=10)
        async with strict.bus:
            await strict.poll_once()
        assert max(c for _, _, c in sim.requests) <= 10
        greedy = make_meter(sim)  # map default 80: this unit rejects it
        async with greedy.bus:
            with pytest.raises(ModbusRejected, match="exception 3"):
                await greedy.poll_once()


async def test_meters_sharing_a_bus_poll_concurrently() -> None:
    async with MeterSimulator("em24", port=0, speed=0) as sim:
        cfg = {
            "map": "em24",
            "poll_interval_s": 0.1,
            "bus": {"transport": "tcp", "host": "127.0.0.1", "port": sim.port},
        }
        a, b = build_meters(
            [
                MeterConfig.model_validate(cfg | {"name": "a", "unit_id": 1}),
                MeterConfig.model_validate(cfg | {"name": "a2", "unit_id": 2}),
            ]
        )
        assert a.bus is b.bus
        b.unit_id = 1  # the simulator serves one unit id
        ra, rb = Readings(), Readings()
        async with asyncio.TaskGroup() as tg:
            ta, tb = tg.create_task(a.run(ra)), tg.create_task(b.run(rb))
            for r in (ra, rb):
                for _ in range(3):
                    assert (await r.next()).freshness is Freshness.FRESH
            ta.cancel()
            assert (await rb.next()).freshness is Freshness.FRESH  # still open for b
            assert a.bus.connected
            tb.cancel()
        assert not a.bus.connected


def test_meter_config() -> None:
    cfg = MeterConfig.model_validate(
        {
            "name": "grid",
            "map": "sdm120",
            "unit_id": 3,
            "bus": {"transport": "rtu", "device": "/dev/ttyUSB0"},
        }
    )
    ep = cfg.endpoint()
    assert (ep.baudrate, ep.parity, ep.stopbits) == (2400, "N", 1)  # type: ignore[union-attr]
    cfg2 = cfg.model_copy(update={"name": "pv", "map": "sdm630", "unit_id": 4})
    with pytest.raises(PermanentError, match="bus settings differ"):
        build_meters([cfg, cfg2])  # 2400 vs 9600 baud on one RS-485 line
    with pytest.raises(PermanentError, match="unit_id 3 already used"):
        build_meters([cfg, cfg.model_copy(update={"name": "x"})])
    with pytest.raises(ValueError, match="unknown meter map 'nope'"):
        MeterConfig.model_validate(
            {"name": "g", "map": "nope", "bus": {"transport": "tcp", "host": "h"}}
        )
    with pytest.raises(ValueError, match=r"unit_id must be 1\.\.247"):
        MeterConfig.model_validate(
            {"name": "g", "map": "em24", "unit_id": 0, "bus": {"transport": "rtu", "device": "d"}}
        )
    with pytest.raises(ValueError, match="poll_interval_s"):
        MeterConfig.model_validate(
            {
                "name": "g",
                "map": "em24",
                "poll_interval_s": 0,
                "bus": {"transport": "tcp", "host": "h"},
            }
        )
    assert load_map("em24") is cfg2.model_copy(update={"map": "em24"}).register_map()


class TimedReadings(Readings):
    """Also records when each reading arrived (monotonic)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[float] = []

    def __call__(self, reading: MeterReading) -> None:
        self.arrived.append(time.monotonic())
        super().__call__(reading)


async def test_slow_em24_grid_meter_keeps_its_currents_younger_than_the_timeout() -> None:
    """Finding 9: an EM24 answering in its documented 500 ms, polled as a grid meter.

    Reading all six requests every poll took 3 s, the whole grid_meter_timeout_s,
    and the stamp was the end of the poll. Now each poll reads the currents'
    request and one other in turn, and values are stamped when they were asked for.
    """
    timeout_s = 3.0  # the load manager's grid_meter_timeout_s
    async with MeterSimulator("em24", port=0, speed=0, answer_delay_s=0.5) as sim:
        sim.set_currents((10.0, 11.0, 12.0))
        entry = (
            MeterRole.model_validate({"role": "grid"}),
            MeterConfig.model_validate(
                {
                    "name": "grid",
                    "map": "em24",
                    "poll_interval_s": 1.0,
                    "bus": {"transport": "tcp", "host": "127.0.0.1", "port": sim.port},
                }
            ),
        )
        (meter,) = build_meters(with_role_defaults([entry]))
        readings = TimedReadings()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(meter.run(readings))
            got = [await readings.next() for _ in range(5)]  # the first one sweeps everything
            task.cancel()
    assert all(r.freshness is Freshness.FRESH and r.sample is not None for r in got)
    for r, arrived in zip(got, readings.arrived, strict=False):
        # Stamped when the currents were asked for, not when the poll ended.
        assert arrived - r.at >= 0.5
    ages = [nxt - r.at for r, nxt in zip(got[1:], readings.arrived[2:], strict=False)]
    assert max(ages) <= 0.75 * timeout_s, ages  # the check-config margin
    # Each steady poll asked for the currents and one other request, in turn.
    fast = [(fc, a, c) for fc, a, c in sim.requests if a == 0x0C]
    assert len(fast) >= 5 and all(c == 10 for _, _, c in fast)
    last = got[-1].sample
    assert last is not None and last.current_a == pytest.approx((10.0, 11.0, 12.0), abs=0.001)
    # The slow values carry their own, older stamps.
    assert last.stamp("frequency") <= last.at and last.stamp("current_l1") == last.at
