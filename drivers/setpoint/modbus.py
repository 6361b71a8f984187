"""The station as a Modbus TCP server for an energy manager (map in ``REGISTERS.md``).

Holding registers only. A write of a limit is a lease offered to the load loop
(through :class:`SetpointGate`); a write to the heartbeat register renews the
leases this transport holds with the values last written. Reads are answered
from the station's live state at the moment of the request. A value out of
bounds is refused with ILLEGAL_VALUE (and audited); a write to a read-only
register with ILLEGAL_ADDRESS.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from controller.load.external import SITE
from drivers.setpoint.gate import SetpointGate

log = structlog.get_logger(__name__)

SOURCE = "modbus"
MAP_VERSION = 1
NONE = 0xFFFF

REG_VERSION = 0
REG_SITE_LIMIT_DA = 1  # 0.1 A per phase (R/W)
REG_SITE_LIMIT_W10 = 2  # 10 W (W)
REG_HEARTBEAT = 3  # any value (R/W)
REG_GRID_OPERATOR = 4  # 0/1 (R/W)
REG_LEASE_LEFT_S = 5
REG_FALLBACK = 6
REG_SITE_CURRENT_DA = 7  # 7, 8, 9: L1..L3
REG_BAYS = 10
BAY_BASE = 100
BAY_STRIDE = 10
BAY_LIMIT_DA = 0  # R/W
BAY_STATUS = 1
BAY_SETPOINT_DA = 2
BAY_CURRENT_DA = 3  # 3, 4, 5: L1..L3
BAY_POWER_W = 6

STATUS_CODES = {
    "Available": 0,
    "Preparing": 1,
    "Charging": 2,
    "SuspendedEVSE": 3,
    "SuspendedEV": 4,
    "Finishing": 5,
    "Reserved": 6,
    "Unavailable": 7,
    "Faulted": 8,
}
_WRITABLE = {REG_SITE_LIMIT_DA, REG_SITE_LIMIT_W10, REG_HEARTBEAT, REG_GRID_OPERATOR}


def _u16(value: float) -> int:
    return max(0, min(0xFFFE, int(value)))


class ModbusSetpointServer:
    def __init__(
        self, gate: SetpointGate, bay_ids: list[str], *, host: str, port: int, unit_id: int
    ) -> None:
        self._gate = gate
        self._bays = list(bay_ids)
        self._host = host
        self.port = port
        self._unit_id = unit_id
        self._last: dict[str, tuple[str, float]] = {}  # scope -> ("a" | "w", value)
        self._heartbeat = 0
        self._grid_operator = False
        self.writes = 0
        self.ready = asyncio.Event()

    @property
    def size(self) -> int:
        return BAY_BASE + BAY_STRIDE * max(1, len(self._bays))

    async def run(self) -> None:
        device = SimDevice(
            id=self._unit_id,
            simdata=[SimData(address=0, count=self.size, values=0, datatype=DataType.REGISTERS)],
            action=self._action,
        )
        server = ModbusTcpServer(device, address=(self._host, self.port))
        await server.serve_forever(background=True)
        try:
            listener: Any = server.transport
            self.port = int(listener.sockets[0].getsockname()[1])
            log.info("external.modbus_serving", host=self._host, port=self.port)
            self.ready.set()
            await asyncio.Future()
        finally:
            self.ready.clear()
            await server.shutdown()  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ requests

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if set_values is None:
            self._fill(registers, start_address)
            return None
        if not all(self._writable(address + k) for k in range(len(set_values))):
            return ExcCodes.ILLEGAL_ADDRESS  # nothing of a write that reaches past the map
        for k, raw in enumerate(set_values):
            err = self._write(address + k, int(raw))
            if err is not None:
                return err
        self.writes += 1
        return None

    def _writable(self, reg: int) -> bool:
        if reg in _WRITABLE:
            return True
        i, off = divmod(reg - BAY_BASE, BAY_STRIDE)
        return reg >= BAY_BASE and off == BAY_LIMIT_DA and i < len(self._bays)

    def _write(self, reg: int, value: int) -> ExcCodes | None:
        scope: str | None = None
        unit = "a"
        amount = 0.0
        if reg == REG_SITE_LIMIT_DA:
            scope, amount = SITE, value / 10.0
        elif reg == REG_SITE_LIMIT_W10:
            scope, unit, amount = SITE, "w", value * 10.0
        elif reg == REG_HEARTBEAT:
            self._heartbeat = value
            for s, (u, v) in list(self._last.items()):
                self._offer(s, u, v)
            return None
        elif reg == REG_GRID_OPERATOR:
            if value not in (0, 1):
                return ExcCodes.ILLEGAL_VALUE
            self._grid_operator = bool(value)
            self._gate.grid_operator(SOURCE, self._grid_operator)
            return None
        elif reg >= BAY_BASE and (reg - BAY_BASE) % BAY_STRIDE == BAY_LIMIT_DA:
            i = (reg - BAY_BASE) // BAY_STRIDE
            if i < len(self._bays):
                scope, amount = self._bays[i], value / 10.0
        if scope is None:
            return ExcCodes.ILLEGAL_ADDRESS
        if not self._offer(scope, unit, amount):
            return ExcCodes.ILLEGAL_VALUE
        self._last[scope] = (unit, amount)
        return None

    def _offer(self, scope: str, unit: str, amount: float) -> bool:
        change = self._gate.offer(
            scope=scope,
            source=SOURCE,
            amps=amount if unit == "a" else None,
            watts=amount if unit == "w" else None,
        )
        return change.kind != "refused"

    def _fill(self, registers: list[int], start: int) -> None:
        rb = self._gate.readback()

        def put(reg: int, value: int) -> None:
            registers[reg - start] = value

        put(REG_VERSION, MAP_VERSION)
        put(REG_SITE_LIMIT_DA, NONE if rb.limit_a is None else _u16(rb.limit_a * 10 + 1e-6))
        last_w = self._last.get(SITE)
        put(REG_SITE_LIMIT_W10, _u16(last_w[1] / 10) if last_w and last_w[0] == "w" else NONE)
        put(REG_HEARTBEAT, self._heartbeat)
        put(REG_GRID_OPERATOR, int(rb.grid_operator))
        put(REG_LEASE_LEFT_S, NONE if rb.lease_left_s is None else _u16(rb.lease_left_s))
        put(REG_FALLBACK, int(rb.fallback))
        for p in range(3):
            put(REG_SITE_CURRENT_DA + p, _u16(rb.current_a[p] * 10))
        put(REG_BAYS, len(rb.bays))
        caps = self._gate.limits.status(self._gate.now())["bays_a"]
        assert isinstance(caps, dict)
        for i, b in enumerate(rb.bays):
            base = BAY_BASE + BAY_STRIDE * i
            if base + BAY_POWER_W - start >= len(registers):
                break
            cap = caps.get(b.bay_id)
            put(base + BAY_LIMIT_DA, NONE if cap is None else _u16(cap * 10 + 1e-6))
            put(base + BAY_STATUS, STATUS_CODES.get(b.status, 8))
            put(base + BAY_SETPOINT_DA, _u16(b.setpoint_a * 10 + 1e-6))
            for p in range(3):
                put(base + BAY_CURRENT_DA + p, _u16(b.current_a[p] * 10))
            put(base + BAY_POWER_W, _u16(b.power_w))
