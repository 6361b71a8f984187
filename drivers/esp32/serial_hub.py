"""Serial (UART / RS-485) adapter for ESP32 bay nodes: implements ``NodeHub`` and ``BayNode``.

Owns one serial port and the nodes on its bus. The host is the bus master:
it polls every node with a heartbeat, and a node speaks only to answer (one
reply per host frame, ``FLAG_MORE`` asks for another poll), so one exchange
is in flight at a time under the bus lock. Commands are acknowledged within
``ack_timeout_s`` and retried with the same ``cmd_id`` (the node re-acks a
duplicate without re-applying it).

Library errors (pyserial, OSError) are mapped here to the ``DriverError``
family; ``CancelledError`` always passes through untouched.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import serial
import serial_asyncio_fast
import structlog

from controller.ports import (
    ConnectionLost,
    DriverTimeout,
    NodeLink,
    NodeSink,
    NodeUpdate,
    PermanentError,
)
from drivers.esp32.codec import CodecError, Decoder, encode, encode_message
from drivers.esp32.link import CommandRejected, LinkBayNode, NodeConfig, NodeState
from drivers.esp32.messages import (
    HOST_ADDRESS,
    Ack,
    AckStatus,
    Command,
    Configure,
    Frame,
    Heartbeat,
    Hello,
)

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


@dataclass(slots=True)
class _Pending:
    address: int
    cmd_id: int | None  # None: a poll, any reply from the address answers it
    future: asyncio.Future[Frame]


# One node on a serial bus, as the controller sees it.
SerialBayNode = LinkBayNode[NodeState]


class SerialNodeHub:
    """All the nodes on one serial port (``controller.ports.NodeHub``).

    ``run(sink)`` opens the port, reconnects with capped exponential backoff,
    polls, configures nodes on hello / on coming online, declares a node offline
    after ``offline_after_s`` of silence and online again on its next frame.
    """

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
        self._states = [NodeState(cfg) for cfg in nodes]
        self._by_addr = {st.cfg.address: st for st in self._states}
        self._by_id = {st.cfg.node_id: st for st in self._states}
        if len(self._by_addr) != len(self._states) or len(self._by_id) != len(self._states):
            raise PermanentError("node ids and bus addresses must be unique")
        if HOST_ADDRESS in self._by_addr:
            raise PermanentError("bus address 0 is the host")
        self._nodes = {st.cfg.node_id: LinkBayNode(self, st, st) for st in self._states}
        self._decoder = Decoder()
        self._bus_lock = asyncio.Lock()
        self._writer: asyncio.StreamWriter | None = None
        self._pending: _Pending | None = None
        self._sink: NodeSink | None = None
        self._seq = 0
        self._cmd_id = random.randrange(0x10000)  # a restarted host must not repeat the last id
        self._started_at = clock()
        self._link_up: bool | None = None
        self._unknown_logged: set[int] = set()
        self.bus_stats: dict[str, int] = {
            "unknown_address": 0,
            "not_for_host": 0,
            "unattributed_bad_frames": 0,
            "opens": 0,
            "open_failures": 0,
        }
        self.last_backoff_s = 0.0

    # ------------------------------------------------------------------ public

    def node(self, node_id: str) -> SerialBayNode:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise PermanentError(f"no node {node_id!r} on {self.port}") from None

    @property
    def decoder_stats(self) -> dict[str, int]:
        return dict(self._decoder.stats.by_reason or {})

    async def run(self, sink: NodeSink) -> None:
        self._sink = sink
        self._started_at = self._clock()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watchdog(), name=f"esp32-watchdog:{self.port}")
            tg.create_task(self._connection_loop(), name=f"esp32-link:{self.port}")

    async def command(self, st: NodeState, build: Callable[[int], Command]) -> None:
        """Send one command to a node and wait for its ack (retried); raise on failure."""
        self._cmd_id = (self._cmd_id + 1) & 0xFFFF
        cmd = build(self._cmd_id)
        try:
            encode_message(cmd)
        except CodecError as exc:
            raise PermanentError(f"{st.cfg.node_id}: {exc}") from exc
        attempts = 1 + self.timing.retries
        try:
            reply = await self._exchange(st, cmd, attempts=attempts, cmd_id=cmd.cmd_id)
        except DriverTimeout:
            st.stats.timeouts += 1
            log.warning("esp32.command_timeout", node=st.cfg.node_id, cmd=type(cmd).__name__)
            raise
        assert isinstance(reply.msg, Ack)
        if reply.msg.status is not AckStatus.OK:
            raise CommandRejected(st.cfg.node_id, type(cmd).__name__, reply.msg.status)

    # ------------------------------------------------------------------ link

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            # pyserial's blocking open runs in the default executor inside this call.
            return await serial_asyncio_fast.open_serial_connection(
                url=self.port, baudrate=self.baud
            )
        except (OSError, serial.SerialException, ValueError) as exc:
            raise ConnectionLost(f"cannot open {self.port}: {exc}") from exc

    async def _connection_loop(self) -> None:
        backoff = self.timing.backoff_initial_s
        while True:
            try:
                reader, writer = await self._open()
            except ConnectionLost as exc:
                self._set_link(False, str(exc))
                self.bus_stats["open_failures"] += 1
                self.last_backoff_s = backoff
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.timing.backoff_max_s)
                continue
            self.bus_stats["opens"] += 1
            if self.bus_stats["opens"] > 1:
                for st in self._states:
                    st.stats.reconnects += 1
            self._set_link(True, "opened")
            self._writer = writer
            self._decoder.reset()
            rx_before = self._decoder.stats.frames
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._read_loop(reader))
                    tg.create_task(self._poll_loop())
            except* ConnectionLost as group:
                self._set_link(False, str(group.exceptions[0]))
            finally:
                self._writer = None
                self._fail_pending(ConnectionLost("serial link lost"))
                await self._close(writer)
            if self._decoder.stats.frames > rx_before:
                backoff = self.timing.backoff_initial_s  # the link worked: start over
            else:
                self.last_backoff_s = backoff
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.timing.backoff_max_s)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        writer.close()  # the transport closes the port in the executor
        try:
            async with asyncio.timeout(2.0):
                await writer.wait_closed()
        except (OSError, serial.SerialException, TimeoutError):
            pass  # closing a port that is already gone

    def _set_link(self, up: bool, reason: str) -> None:
        if self._link_up is up:
            return  # log a loss once and a recovery once
        if up:
            log.info("esp32.link_up", port=self.port)
        else:
            log.warning("esp32.link_down", port=self.port, reason=reason)
        self._link_up = up

    def _fail_pending(self, exc: Exception) -> None:
        p = self._pending
        if p is not None and not p.future.done():
            p.future.set_exception(exc)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                data = await reader.read(4096)
            except (OSError, serial.SerialException) as exc:
                raise ConnectionLost(f"read failed: {exc}") from exc
            if not data:
                raise ConnectionLost("end of stream")
            bad_before = self._decoder.stats.bad_frames
            frames = self._decoder.feed(data)
            bad = self._decoder.stats.bad_frames - bad_before
            if bad:
                self._count_bad(bad)
            for frame in frames:
                self._on_frame(frame)

    def _count_bad(self, n: int) -> None:
        # A garbled frame has no trustworthy address; the node we are waiting for most likely sent it.
        p = self._pending
        st = self._by_addr.get(p.address) if p is not None else None
        if st is not None:
            st.stats.bad_frames += n
        else:
            self.bus_stats["unattributed_bad_frames"] += n
        log.debug("esp32.bad_frames", port=self.port, count=n)

    async def _write(self, frame: Frame) -> None:
        writer = self._writer
        if writer is None:
            raise ConnectionLost(f"{self.port} is not connected")
        try:
            # A leading delimiter ends any line noise before the frame, so noise costs only itself.
            writer.write(b"\x00" + encode(frame))
            await writer.drain()
        except (OSError, serial.SerialException) as exc:
            raise ConnectionLost(f"write failed: {exc}") from exc

    # ------------------------------------------------------------------ exchanges

    async def _exchange(
        self, st: NodeState, msg: Heartbeat | Command, *, attempts: int, cmd_id: int | None
    ) -> Frame:
        loop = asyncio.get_running_loop()
        async with self._bus_lock:
            for attempt in range(attempts):
                if attempt:
                    st.stats.retries += 1
                future: asyncio.Future[Frame] = loop.create_future()
                self._pending = _Pending(st.cfg.address, cmd_id, future)
                self._seq = (self._seq + 1) & 0xFFFF
                try:
                    await self._write(
                        Frame(src=HOST_ADDRESS, dst=st.cfg.address, seq=self._seq, msg=msg)
                    )
                    st.stats.frames_tx += 1
                    async with asyncio.timeout(self.timing.ack_timeout_s):
                        return await future
                except TimeoutError:
                    continue
                finally:
                    self._pending = None
        raise DriverTimeout(
            f"{st.cfg.node_id}: no answer to {type(msg).__name__} after {attempts} attempt(s)"
        )

    async def _poll_loop(self) -> None:
        while True:
            started = self._clock()
            for st in self._states:
                await self._service(st, started)
            elapsed = self._clock() - started
            await asyncio.sleep(max(0.0, self.timing.poll_period_s - elapsed))

    async def _service(self, st: NodeState, now: float) -> None:
        if st.online is not True and now - st.last_poll_at < self.timing.offline_poll_period_s:
            return  # a dead node is polled slowly so it does not hog the bus
        st.last_poll_at = now
        for _ in range(self.timing.max_more_polls):
            uptime_ms = int((self._clock() - self._started_at) * 1000)
            try:
                reply = await self._exchange(st, Heartbeat(uptime_ms), attempts=1, cmd_id=None)
            except DriverTimeout:
                st.stats.extra["poll_misses"] = st.stats.extra.get("poll_misses", 0) + 1
                return
            if st.needs_config:
                await self._configure(st)
            if not reply.more:
                return

    async def _configure(self, st: NodeState) -> None:
        cfg = st.cfg
        try:
            await self.command(
                st,
                lambda cmd_id: Configure(
                    cmd_id, cfg.safe_current_a, cfg.host_timeout_s, cfg.telemetry_period_s
                ),
            )
        except DriverTimeout:
            return  # still needs_config: next poll tries again
        except CommandRejected as exc:
            log.error("esp32.configure_rejected", node=cfg.node_id, status=exc.status.name)
        st.needs_config = False
        log.info("esp32.configured", node=cfg.node_id, safe_current_a=cfg.safe_current_a)

    # ------------------------------------------------------------------ receive path

    def _on_frame(self, frame: Frame) -> None:
        if frame.dst != HOST_ADDRESS:
            self.bus_stats["not_for_host"] += 1  # RS-485 echo of our own frames
            return
        st = self._by_addr.get(frame.src)
        if st is None:
            self.bus_stats["unknown_address"] += 1
            if frame.src not in self._unknown_logged:
                self._unknown_logged.add(frame.src)
                log.warning("esp32.unknown_address", port=self.port, address=frame.src)
            return
        now = self._clock()
        updates = st.accept(frame.seq, frame.msg, now)
        if st.online is not True:
            st.online = True
            st.needs_config = True
            log.info("esp32.node_online", node=st.cfg.node_id)
            self._emit(NodeLink(st.cfg.node_id, now, online=True, reason="frame received"))
        if isinstance(frame.msg, Hello):
            log.info(
                "esp32.hello",
                node=st.cfg.node_id,
                firmware=frame.msg.firmware,
                protocol=frame.msg.protocol_version,
                serial=frame.msg.serial,
                boot_id=frame.msg.boot_id,
            )
        for update in updates:
            self._emit(update)
        p = self._pending
        if p is not None and p.address == frame.src and not p.future.done():
            if p.cmd_id is None or (isinstance(frame.msg, Ack) and frame.msg.cmd_id == p.cmd_id):
                p.future.set_result(frame)

    def _emit(self, update: NodeUpdate) -> None:
        if self._sink is None:
            return
        try:
            self._sink(update)
        except Exception:
            # A consumer bug must not take the bus down with it.
            log.exception("esp32.sink_failed", update=type(update).__name__)

    # ------------------------------------------------------------------ liveness

    async def _watchdog(self) -> None:
        period = min(0.1, self.timing.offline_after_s / 10)
        while True:
            await asyncio.sleep(period)
            now = self._clock()
            for st in self._states:
                last = st.stats.last_rx_at if st.stats.last_rx_at is not None else self._started_at
                if st.online is not False and now - last > self.timing.offline_after_s:
                    st.online = False
                    st.went_offline()
                    reason = "heartbeat timeout" if self._writer is not None else "serial link lost"
                    log.warning("esp32.node_offline", node=st.cfg.node_id, reason=reason)
                    self._emit(NodeLink(st.cfg.node_id, now, online=False, reason=reason))
