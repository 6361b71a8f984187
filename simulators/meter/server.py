"""A simulated energy meter: a real pymodbus server serving any register map file.

Values come from a building-load profile (or test setters) plus an optional
extra-load callback (e.g. the sum of the simulated bays' currents, so the
grid meter sees the charging), are encoded by the simulator's own register encoder
(``registers.py``, not the driver's codec) and served from the map's addresses. Fault knobs make it go silent, answer
garbage bytes, answer all zeros (a gateway answering for a meter it lost),
answer Modbus exception codes, answer slowly (``answer_delay_s``), or serve
any value for a quantity, however implausible (:meth:`set_override`).

Roles: ``grid`` (building load + extra load - PV, negative = export),
``pv`` (PV production, positive) and ``bay`` (extra load only).
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import enum
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus.maps import Quantity, RegisterMap, load_map

from .profile import DAY_S, BuildingProfile, Phases
from .registers import DoesNotFit, registers_of

log = logging.getLogger(__name__)

ExtraLoad = Callable[[], Phases]  # per-phase amps drawn on top of the building
Role = Literal["grid", "pv", "bay"]
Q = Quantity


class Fault(enum.StrEnum):
    NONE = "none"
    SILENT = "silent"  # receives requests, never answers
    GARBAGE = "garbage"  # answers random bytes (a valid TCP header, so it reaches the framer)
    EXCEPTION = "exception"  # answers a Modbus exception response (``exception_code``)
    ZEROS = "zeros"  # a well-formed answer whose registers are all 0


class MeterSimulator:
    """``async with MeterSimulator(map_name="sdm630", port=0) as sim: sim.port``.

    ``port=0`` binds a free port (read it back from ``sim.port``). With
    ``serial_port`` set, serves Modbus RTU on that serial device instead.
    ``speed`` accelerates simulated time (energy counters and the daily curve);
    ``speed=0`` freezes it, which makes values exact for tests.
    """

    def __init__(
        self,
        map_name: str | Path | RegisterMap = "sdm630",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit_id: int = 1,
        role: Role = "grid",
        profile: BuildingProfile | None = None,
        extra_load: ExtraLoad | None = None,
        speed: float = 1.0,
        start_time_of_day_s: float | None = None,
        import_wh: float = 1_234_000.0,
        export_wh: float = 56_000.0,
        omit_optional: bool = False,
        max_registers: int | None = None,
        serial_port: str | None = None,
        baudrate: int | None = None,
        parity: str | None = None,
        stopbits: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
        answer_delay_s: float = 0.0,
    ) -> None:
        self.map = map_name if isinstance(map_name, RegisterMap) else load_map(map_name)
        self.host = host
        self._requested_port = port
        self.unit_id = unit_id
        self.role: Role = role
        self.profile = profile or BuildingProfile()
        self._extra_load = extra_load
        self.speed = speed
        self.omit_optional = omit_optional
        self.max_registers = max_registers or self.map.max_registers
        self.serial_port = serial_port
        self._serial = (
            baudrate or self.map.serial.baudrate,
            parity or self.map.serial.parity,
            stopbits or self.map.serial.stopbits,
        )
        self._clock = clock
        self._rng = random.Random(seed)
        if start_time_of_day_s is None:
            now = datetime.datetime.now()
            start_time_of_day_s = now.hour * 3600 + now.minute * 60 + now.second
        self._t0_clock = clock()
        self._t0_day = start_time_of_day_s
        self._import_wh = import_wh
        self._export_wh = export_wh
        self._last_clock = self._t0_clock
        self._last_power_w = 0.0
        self._currents: Phases | None = None
        self._voltages: Phases | None = None
        self._frequency: float | None = None
        self._unavailable: frozenset[Quantity] = frozenset()
        self._overrides: dict[Quantity, float] = {}
        self.answer_delay_s = answer_delay_s  # every answer leaves this long after its request
        self.fault = Fault.NONE
        self.exception_code = int(ExcCodes.DEVICE_FAILURE)
        self.requests: collections.deque[tuple[int, int, int]] = collections.deque(maxlen=1000)
        self.requests_received = 0
        self._request_seen = asyncio.Event()
        self._fields = tuple(f for f in self.map.resolved() if not (omit_optional and f.optional))
        self._functions = {f.function for f in self._fields} | set(self.map.accepts_functions)
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self.port = port

    # ------------------------------------------------------------------ setters

    def set_currents(self, currents: Phases | None) -> None:
        """Replace the profile by fixed per-phase amps (negative = export); ``None`` restores it."""
        self._advance()
        self._currents = currents
        self.snapshot()  # energy integrates with the new power from now on

    def set_voltages(self, voltages: Phases | None) -> None:
        self._advance()
        self._voltages = voltages
        self.snapshot()

    def set_frequency(self, hz: float | None) -> None:
        self._frequency = hz

    def set_energy(self, *, import_wh: float | None = None, export_wh: float | None = None) -> None:
        self._advance()
        if import_wh is not None:
            self._import_wh = import_wh
        if export_wh is not None:
            self._export_wh = export_wh

    def set_override(self, **values: float | None) -> None:
        """Serve exactly these values (canonical units), whatever the model says; None: the model.

        ``sim.set_override(current_l1=3.4e38)`` serves an implausible current in a
        well-formed answer. A value the register type cannot hold raises ValueError.
        """
        fields = {f.quantity: f for f in self._fields}
        for name, value in values.items():
            q = Quantity(name)
            if value is None:
                self._overrides.pop(q, None)
                continue
            if q in fields:
                try:
                    registers_of(fields[q], value)
                except DoesNotFit as exc:
                    raise ValueError(f"{name}: {value} does not fit a {fields[q].dtype}") from exc
            self._overrides[q] = value

    def set_unavailable(self, *quantities: str) -> None:
        """Serve the map's "not available" value for these quantities (none: clear)."""
        self._unavailable = frozenset(Quantity(q) for q in quantities)

    def set_extra_load(self, extra_load: ExtraLoad | None) -> None:
        """Per-phase amps added on top of the building (grid and bay roles)."""
        self._advance()
        self._extra_load = extra_load
        self.snapshot()

    def set_fault(self, fault: Fault | str, *, exception_code: int | None = None) -> None:
        self.fault = Fault(fault)
        if exception_code is not None:
            self.exception_code = exception_code

    async def wait_requests(self, n: int) -> None:
        """Return once ``requests_received >= n`` (for tests: no polling, no sleeps)."""
        while self.requests_received < n:
            self._request_seen.clear()
            await self._request_seen.wait()

    # ------------------------------------------------------------------ model

    def time_of_day_s(self) -> float:
        return (self._t0_day + (self._clock() - self._t0_clock) * self.speed) % DAY_S

    def _phase_power_w(self, t_day: float, volts: Phases) -> Phases:
        if self._currents is not None:
            p = [v * i for v, i in zip(volts, self._currents, strict=True)]
        elif self.role == "grid":
            load, pv = self.profile.load_w(t_day), self.profile.pv_w(t_day)
            p = [lo - g for lo, g in zip(load, pv, strict=True)]
        elif self.role == "pv":
            p = list(self.profile.pv_w(t_day))
        else:
            p = [0.0, 0.0, 0.0]
        if self._extra_load is not None and self.role != "pv":
            extra = self._extra_load()
            p = [pi + v * i for pi, v, i in zip(p, volts, extra, strict=True)]
        if self.map.phases == 1:
            p = [sum(p), 0.0, 0.0]
        return (p[0], p[1], p[2])

    def _volts(self, t_day: float) -> Phases:
        if self._voltages is not None:
            return self._voltages
        wobble = 1.5 * math.sin(2 * math.pi * t_day / DAY_S)
        return (230.0 + wobble, 230.8 + wobble, 229.4 + wobble)

    def _advance(self) -> None:
        """Integrate energy up to now with the power of the previous step."""
        now = self._clock()
        hours = (now - self._last_clock) * self.speed / 3600.0
        self._last_clock = now
        if hours > 0:
            if self._last_power_w >= 0:
                self._import_wh += self._last_power_w * hours
            else:
                self._export_wh -= self._last_power_w * hours

    def snapshot(self) -> dict[Quantity, float | None]:
        """The values the meter serves now, in canonical units (V, A, W, Hz, Wh)."""
        self._advance()
        t_day = self.time_of_day_s()
        volts = self._volts(t_day)
        p = self._phase_power_w(t_day, volts)
        self._last_power_w = sum(p)
        amps = [abs(pi) / v if v else 0.0 for pi, v in zip(p, volts, strict=True)]
        hz = (
            self._frequency if self._frequency is not None else 50.0 + 0.03 * math.sin(t_day / 97.0)
        )
        values: dict[Quantity, float | None] = {
            Q.VOLTAGE_L1: volts[0],
            Q.VOLTAGE_L2: volts[1],
            Q.VOLTAGE_L3: volts[2],
            Q.CURRENT_L1: amps[0],
            Q.CURRENT_L2: amps[1],
            Q.CURRENT_L3: amps[2],
            Q.POWER_L1: p[0],
            Q.POWER_L2: p[1],
            Q.POWER_L3: p[2],
            Q.POWER_TOTAL: sum(p),
            Q.FREQUENCY: hz,
            Q.IMPORT_ENERGY: self._import_wh,
            Q.EXPORT_ENERGY: self._export_wh,
        }
        values.update(self._overrides)
        for q in self._unavailable:
            values[q] = None
        return {f.quantity: values[f.quantity] for f in self._fields}

    # ------------------------------------------------------------------ server

    def _hull(self) -> tuple[int, int]:
        lo = min(f.address for f in self._fields)
        hi = max(f.address + f.count for f in self._fields)
        return lo, hi

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests_received += 1
        self.requests.append((function_code, address, count))
        self._request_seen.set()
        if set_values is not None or function_code not in self._functions:
            return ExcCodes.ILLEGAL_FUNCTION
        if count > self.max_registers:
            return ExcCodes.ILLEGAL_VALUE
        if self.answer_delay_s > 0:
            await asyncio.sleep(self.answer_delay_s)
        if self.fault is Fault.EXCEPTION:
            return ExcCodes(self.exception_code)
        if self.fault is Fault.ZEROS:
            registers[:] = [0] * len(registers)
            return None
        values = self.snapshot()
        for f in self._fields:
            off = f.address - start_address
            registers[off : off + f.count] = registers_of(f, values[f.quantity])
        return None

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending or self.fault not in (Fault.SILENT, Fault.GARBAGE):
            return data
        if self.fault is Fault.SILENT:
            return b""
        # Garbage: keep a TCP answer's header (transaction id, length, unit) so the
        # client's framer takes the random payload as the answer.
        keep = 7 if self.serial_port is None else 0
        return data[:keep] + bytes(self._rng.randrange(256) for _ in range(len(data) - keep))

    async def start(self) -> None:
        lo, hi = self._hull()
        device = SimDevice(
            id=self.unit_id,
            simdata=[SimData(address=lo, count=hi - lo, values=0, datatype=DataType.REGISTERS)],
            action=self._action,
        )
        server: ModbusTcpServer | ModbusSerialServer
        if self.serial_port is None:
            server = ModbusTcpServer(
                device, address=(self.host, self._requested_port), trace_packet=self._trace_packet
            )
        else:
            baudrate, parity, stopbits = self._serial
            server = ModbusSerialServer(
                device,
                framer=FramerType.RTU,
                port=self.serial_port,
                baudrate=baudrate,
                parity=parity,
                stopbits=stopbits,
                trace_packet=self._trace_packet,
            )
        await server.serve_forever(background=True)
        self._server = server
        if self.serial_port is None:
            listener: Any = server.transport
            self.port = int(listener.sockets[0].getsockname()[1])
        log.info("meter simulator %s (%s) serving on %s", self.map.model, self.role, self.address)

    @property
    def address(self) -> str:
        return self.serial_port or f"{self.host}:{self.port}"

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> MeterSimulator:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Start (if needed) and serve until cancelled."""
        if self._server is None:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
