"""Serial (UART / RS-485) edge of the ESP32 node engine: implements ``NodeHub`` and ``BayNode``.

Owns one serial port and what only a shared bus needs. The host is the bus
master: it polls every node with a heartbeat, and a node speaks only to
answer (one reply per host frame, ``FLAG_MORE`` asks for another poll), so
one exchange is in flight at a time. Frames are split from the byte stream
(a garbled one has no trustworthy address: it is counted against the node
being waited for), the host's own frames echoed by an RS-485 transceiver are
dropped, and frames from addresses nobody configured are counted and logged
once. Commands, acks, retries, configuring, liveness and reconnecting are
the engine's (``engine.py``).

Library errors (pyserial, OSError) are mapped here to the ``DriverError``
family; ``CancelledError`` always passes through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import serial
import serial_asyncio_fast
import structlog

from controller.ports import (
    ConnectionLost,
    DriverTimeout,
    FirmwareProgress,
    NodeSink,
    PermanentError,
)
from drivers.esp32.codec import Decoder, encode
from drivers.esp32.engine import LinkTiming, NodeEngine, NodeLine
from drivers.esp32.firmware import BOOT_TIMEOUT_S, CONFIRM_TIMEOUT_S, update_node
from drivers.esp32.link import CommandRejected, LinkBayNode, NodeConfig
from drivers.esp32.messages import Frame, Heartbeat

log = structlog.get_logger(__name__)

__all__ = ["CommandRejected", "HubTiming", "NodeConfig", "SerialBayNode", "SerialNodeHub"]


@dataclass(frozen=True, slots=True)
class HubTiming:
    """Bus timing. ``offline_after_s`` must exceed the longest bus hold (a command's full
    retry budget plus a poll), or a healthy node starves behind a dead one and is declared offline."""

    ack_timeout_s: float = 0.15
    retries: int = 3  # after the first attempt
    offline_after_s: float = 3.0
    poll_period_s: float = 0.2
    offline_poll_period_s: float = 1.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    max_more_polls: int = 16

    def __post_init__(self) -> None:
        longest_hold = self.ack_timeout_s * (self.retries + 2) + self.poll_period_s
        if self.offline_after_s <= longest_hold:
            raise PermanentError(f"offline_after_s must exceed {longest_hold:.2f} s")

    def link(self) -> LinkTiming:
        return LinkTiming(
            self.ack_timeout_s,
            self.retries,
            self.offline_after_s,
            self.backoff_initial_s,
            self.backoff_max_s,
            # A tenth of the offline time (0.3 s by default): checking 64 nodes ten times a
            # second was a visible share of a slowly polled bus's CPU.
            watchdog_s=self.offline_after_s / 10,
        )


# One node on a serial bus, as the controller sees it.
SerialBayNode = LinkBayNode[NodeLine]


class SerialNodeHub:
    """All the nodes on one serial port (``controller.ports.NodeHub``).

    ``run(sink)`` opens the port, reconnects with capped exponential backoff,
    polls, configures nodes on hello / on coming online, declares a node offline
    after ``offline_after_s`` of silence and online again on its next frame.
    """

    lost_reason = "serial link lost"

    def __init__(
        self,
        port: str,
        baud: int,
        nodes: Sequence[NodeConfig],
        *,
        timing: HubTiming | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self.baud = baud
        self.timing = timing or HubTiming()
        self._clock = clock
        self.bus_stats: dict[str, int] = {
            "unknown_address": 0,
            "not_for_host": 0,
            "unattributed_bad_frames": 0,
            "opens": 0,
            "open_failures": 0,
        }
        self._engine = NodeEngine(
            nodes,
            self,
            self.timing.link(),
            one_exchange_at_a_time=True,
            counters=self.bus_stats,
            prefix="esp32",
            where={"port": port},
            clock=clock,
            telemetry_lead_s=self.timing.poll_period_s / 2,
        )
        self._by_addr = {ln.st.cfg.address: ln for ln in self._engine.lines.values()}
        if len(self._by_addr) != len(nodes):
            raise PermanentError("node ids and bus addresses must be unique")
        self._decoder = Decoder()
        self._transport: asyncio.Transport | None = None
        self._link: _BusLink | None = None
        self._unknown_logged: set[int] = set()

    # ------------------------------------------------------------------ public

    def node(self, node_id: str) -> SerialBayNode:
        return self._engine.node(node_id)

    @property
    def decoder_stats(self) -> dict[str, int]:
        return dict(self._decoder.stats.by_reason or {})

    @property
    def last_backoff_s(self) -> float:
        return self._engine.backoff.last_s

    @property
    def connected(self) -> bool:
        return self._transport is not None

    async def run(self, sink: NodeSink) -> None:
        await self._engine.run(sink)

    firmware_confirm_timeout_s = CONFIRM_TIMEOUT_S
    firmware_boot_timeout_s = BOOT_TIMEOUT_S

    async def update_firmware(
        self, node_id: str, image: bytes, version: str, progress: FirmwareProgress
    ) -> None:
        """``controller.ports.NodeFirmware``: see :mod:`drivers.esp32.firmware`."""
        await update_node(
            self._engine,
            node_id,
            image,
            version,
            progress=progress,
            confirm_timeout_s=self.firmware_confirm_timeout_s,
            boot_timeout_s=self.firmware_boot_timeout_s,
        )

    # ------------------------------------------------------------------ the engine's edge

    async def session(self, opened: Callable[[], None]) -> None:
        transport, link = await self._open()
        self.bus_stats["opens"] += 1
        self._transport, self._link = transport, link
        self._decoder.reset()
        opened()
        lost: ConnectionLost | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(link.until_lost())
                tg.create_task(self._poll_loop())
        except* ConnectionLost as group:
            first = group.exceptions[0]
            lost = first if isinstance(first, ConnectionLost) else ConnectionLost(str(first))
        finally:
            self._transport = self._link = None
            await self._close(transport, link)
        raise lost or ConnectionLost("serial link closed")

    async def transmit(self, line: NodeLine, frame: Frame) -> None:
        transport, link = self._transport, self._link
        if transport is None or link is None or transport.is_closing():
            raise ConnectionLost(f"{self.port} is not connected")
        try:
            # A leading delimiter ends any line noise before the frame, so noise costs only itself.
            transport.write(b"\x00" + encode(frame))
        except (OSError, serial.SerialException) as exc:
            raise ConnectionLost(f"write failed: {exc}") from exc
        if link.paused:  # the port's buffer is full: wait until it drains
            await link.drained()

    # ------------------------------------------------------------------ the port

    async def _open(self) -> tuple[asyncio.Transport, _BusLink]:
        link = _BusLink(self._on_data)
        loop = asyncio.get_running_loop()
        try:
            if "://" in self.port:  # a pyserial URL (socket://, rfc2217://, ...)
                # pyserial's blocking open runs in the default executor inside this call.
                transport, _ = await serial_asyncio_fast.create_serial_connection(
                    loop, lambda: link, url=self.port, baudrate=self.baud
                )
            else:
                port = await loop.run_in_executor(None, lambda: _Port(self.port, self.baud))
                transport, _ = await serial_asyncio_fast.connection_for_serial(
                    loop, lambda: link, port
                )
        except (OSError, serial.SerialException, ValueError) as exc:
            self.bus_stats["open_failures"] += 1
            raise ConnectionLost(f"cannot open {self.port}: {exc}") from exc
        return transport, link

    async def _close(self, transport: asyncio.Transport, link: _BusLink) -> None:
        transport.close()  # the transport closes the port in the executor
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await link.until_closed()

    def _on_data(self, data: bytes) -> None:
        """Bytes from the port, as the transport reads them (no task in between)."""
        bad_before = self._decoder.stats.bad_frames
        frames = self._decoder.feed(data)
        bad = self._decoder.stats.bad_frames - bad_before
        if bad:
            self._count_bad(bad)
        for frame in frames:
            self._on_frame(frame)

    def _count_bad(self, n: int) -> None:
        # A garbled frame has no trustworthy address; the node we are waiting for most likely sent it.
        line = self._engine.awaited()
        if line is not None:
            line.st.stats.bad_frames += n
        else:
            self.bus_stats["unattributed_bad_frames"] += n
        log.debug("esp32.bad_frames", port=self.port, count=n)

    def _on_frame(self, frame: Frame) -> None:
        if not self._engine.for_host(frame):
            return  # RS-485 echo of our own frames
        line = self._by_addr.get(frame.src)
        if line is None:
            self.bus_stats["unknown_address"] += 1
            if frame.src not in self._unknown_logged:
                self._unknown_logged.add(frame.src)
                log.warning("esp32.unknown_address", port=self.port, address=frame.src)
            return
        self._engine.deliver(line, frame)

    # ------------------------------------------------------------------ bus master

    async def _poll_loop(self) -> None:
        while True:
            started = self._clock()
            for line in self._engine.lines.values():
                await self._service(line, started)
            elapsed = self._clock() - started
            await asyncio.sleep(max(0.0, self.timing.poll_period_s - elapsed))

    async def _service(self, line: NodeLine, now: float) -> None:
        st = line.st
        if st.online is not True and now - st.last_poll_at < self.timing.offline_poll_period_s:
            return  # a dead node is polled slowly so it does not hog the bus
        st.last_poll_at = now
        for _ in range(self.timing.max_more_polls):
            poll = Heartbeat(self._engine.uptime_ms())
            try:
                reply = await self._engine.exchange(line, poll, attempts=1)
            except DriverTimeout:
                st.stats.extra["poll_misses"] = st.stats.extra.get("poll_misses", 0) + 1
                return
            if st.needs_config:
                await self._engine.configure(line)
            if not reply.more:
                return


class _Port(serial.Serial):  # type: ignore[misc]  # pyserial has no type hints
    """A serial device read the way the event loop reads it: one ``read(2)`` when it is readable.

    The transport reads only after epoll has said the port is readable, and then without a
    timeout; pyserial's own read asks ``select()`` again before it reads, a second system
    call for every frame on the bus (7 % of the controller's Python samples at 64 bays at
    1 Hz). A read with a timeout (nothing here asks for one) keeps pyserial's way.
    """

    def read(self, size: int = 1) -> bytes:
        if self.timeout != 0 or not self.is_open:
            return super().read(size)  # type: ignore[no-any-return]
        try:
            data = os.read(self.fd, size)
        except (BlockingIOError, InterruptedError):
            return b""  # woken for nothing: the transport waits for the next readiness
        except OSError as exc:  # the device went away (EIO when a pseudo-terminal's peer closes)
            raise serial.SerialException(f"read failed: {exc}") from exc
        if not data:  # readable with no data: the device was disconnected
            raise serial.SerialException("the device reports readiness to read but has no data")
        return data


class _BusLink(asyncio.Protocol):
    """The port's protocol: hands each chunk read to the hub at once (a reader task would cost
    a task switch per frame) and turns the end of the port into :class:`ConnectionLost`."""

    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self._on_data = on_data
        self._lost: asyncio.Future[ConnectionLost] = asyncio.get_running_loop().create_future()
        self._closed = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def paused(self) -> bool:
        return not self._writable.is_set()

    async def drained(self) -> None:
        await self._writable.wait()

    def data_received(self, data: bytes) -> None:
        if self._lost.done():
            return
        try:
            self._on_data(data)
        except Exception as exc:  # a bug in the intake ends the session, as a reader task's did
            self._lost.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(ConnectionLost(f"read failed: {exc}" if exc else "end of stream"))
        self._writable.set()  # a writer waiting for the drain sees the loss next
        self._closed.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _lose(self, lost: ConnectionLost) -> None:
        if not self._lost.done():
            self._lost.set_result(lost)

    async def until_lost(self) -> None:
        raise await self._lost

    async def until_closed(self) -> None:
        await self._closed.wait()
