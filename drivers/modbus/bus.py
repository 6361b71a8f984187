"""One Modbus bus: a TCP connection (meter or gateway) or an RS-485 port, shared by its meters.

The bus owns the pymodbus client, one lock (one transaction at a time on the
wire), the inter-frame gap, the deadline of every request, and reconnection
with capped exponential backoff. Any request that ends without a clean
answer (deadline, cancel, lost link, garbled frame) drops the connection, so
a late or half-read answer can never be taken for the next request's; the
next request reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from controller.ports import Clock, ConnectionLost, LinkStats, TransientError

from .errors import exception_response_error, mapped_errors

log = logging.getLogger(__name__)


class SystemClock:
    """The real clock (``controller.ports.Clock``)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class TcpEndpoint:
    """Modbus TCP: a meter with Ethernet, or an RTU-over-TCP gateway (then several unit ids)."""

    host: str
    port: int = 502

    def __str__(self) -> str:
        return f"tcp://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SerialEndpoint:
    """Modbus RTU on a serial port (RS-485 adapter)."""

    device: str
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    def __str__(self) -> str:
        return f"rtu://{self.device}@{self.baudrate}{self.bytesize}{self.parity}{self.stopbits}"

    def default_gap_s(self) -> float:
        # Modbus RTU: 3.5 character times between frames (11 bits a character),
        # fixed at 1.75 ms above 19200 baud.
        return max(3.5 * 11 / self.baudrate, 0.00175)


Endpoint = TcpEndpoint | SerialEndpoint


class ModbusBus:
    """A shared Modbus link. Meters enter it with ``async with bus:``; the last one out closes it."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout_s: float = 1.0,
        inter_frame_gap_s: float | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        if inter_frame_gap_s is None:
            inter_frame_gap_s = (
                endpoint.default_gap_s() if isinstance(endpoint, SerialEndpoint) else 0.0
            )
        self.inter_frame_gap_s = inter_frame_gap_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._backoff_s = backoff_initial_s
        self._retry_at = 0.0
        self._clock: Clock = clock or SystemClock()
        self._lock = asyncio.Lock()
        self._client: Any = None
        self._last_io_end = float("-inf")
        self._users = 0
        self.stats = LinkStats()

    def __str__(self) -> str:
        return str(self.endpoint)

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    async def __aenter__(self) -> ModbusBus:
        self._users += 1
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._users -= 1
        if self._users <= 0:
            self._users = 0
            self.close()

    def close(self) -> None:
        """Close the link now (idempotent); the next request reconnects."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _new_client(self) -> Any:
        # pymodbus' own reconnect is off (reconnect_delay=0): this class owns
        # reconnection. Its timeout is a backstop behind our own deadline.
        common: dict[str, Any] = {
            "reconnect_delay": 0,
            "timeout": self.timeout_s + 1.0,
            "retries": 0,
            "name": str(self.endpoint),
        }
        ep = self.endpoint
        if isinstance(ep, TcpEndpoint):
            return AsyncModbusTcpClient(ep.host, port=ep.port, **common)
        return AsyncModbusSerialClient(
            ep.device,
            baudrate=ep.baudrate,
            bytesize=ep.bytesize,
            parity=ep.parity,
            stopbits=ep.stopbits,
            **common,
        )

    async def _ensure_connected(self) -> Any:
        if self.connected:
            return self._client
        self.close()
        now = self._clock.monotonic()
        if now < self._retry_at:
            raise ConnectionLost(
                f"{self}: not connected, next attempt in {self._retry_at - now:.1f} s"
            )
        client = self._new_client()
        ok = False
        try:
            with mapped_errors(f"{self}: connect"):
                async with asyncio.timeout(self.timeout_s + 1.0):
                    ok = bool(await client.connect())
        finally:
            if not ok:
                client.close()
                self._retry_at = self._clock.monotonic() + self._backoff_s
                self._backoff_s = min(self._backoff_s * 2, self._backoff_max_s)
        if not ok:
            raise ConnectionLost(f"{self}: cannot connect")
        self._backoff_s = self._backoff_initial_s
        self._retry_at = 0.0
        self._client = client
        self.stats.reconnects += 1
        return client

    async def read_registers(
        self, *, unit_id: int, function: int, address: int, count: int
    ) -> list[int]:
        """Read ``count`` registers with function 3 or 4; raises only :class:`DriverError` (or cancel)."""
        regs, _ = await self.read_registers_stamped(
            unit_id=unit_id, function=function, address=address, count=count
        )
        return regs

    async def read_registers_stamped(
        self, *, unit_id: int, function: int, address: int, count: int
    ) -> tuple[list[int], float]:
        """As :meth:`read_registers`, with the moment the request went out (monotonic).

        The moment is taken once the bus is ours (after the lock, the connection
        and the inter-frame gap), so time spent queueing behind other meters on
        the bus does not age the values.
        """
        what = f"{self} unit {unit_id} fc{function:02d} {address:#06x}+{count}"
        async with self._lock:
            client = await self._ensure_connected()
            gap = self._last_io_end + self.inter_frame_gap_s - self._clock.monotonic()
            if gap > 0:
                await self._clock.sleep(gap)
            read = client.read_holding_registers if function == 3 else client.read_input_registers
            sent_at = self._clock.monotonic()
            clean = False
            self.stats.frames_tx += 1
            try:
                with mapped_errors(what):
                    async with asyncio.timeout(self.timeout_s):
                        rr = await read(address, count=count, device_id=unit_id)
                clean = True
            finally:
                self._last_io_end = self._clock.monotonic()
                if not clean:
                    self.stats.timeouts += 1
                    self.close()
            self.stats.frames_rx += 1
            self.stats.last_rx_at = self._last_io_end
            if rr.isError():
                raise exception_response_error(int(rr.exception_code), what)
            registers = list(getattr(rr, "registers", ()))
            if len(registers) != count:
                self.stats.bad_frames += 1
                self.close()
                raise TransientError(f"{what}: answer has {len(registers)} registers")
            return registers, sent_at
