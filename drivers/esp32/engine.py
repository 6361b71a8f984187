"""The transport-neutral engine of the ESP32 node hubs (serial and MQTT share it).

Owns what both transports do the same way (PROTOCOL.md §1 and §3): the
node table and the controller-facing :class:`LinkBayNode` of each node, the
host's sequence numbers and command ids, commands acknowledged and retried
with the same id, configuring a node when it says HELLO or comes (back)
online, the intake of good frames (with :class:`NodeState`: repeats, the
identity guard, held reports), the liveness watchdog, the reconnect loop with
capped, jittered exponential backoff, and the link's log lines.

A transport is an :class:`Edge`: it opens and serves its link, puts one frame
on the wire for one node, and hands good frames back through :meth:`deliver`.
What only one transport does stays at its edge: the serial bus master's
polling and its MORE flag, RS-485 echo, bad frames without an address; MQTT's
topics, retained status and last will, broker redeliveries, host heartbeats.
``CancelledError`` always passes through untouched.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from controller.ports import (
    ConnectionLost,
    DriverTimeout,
    NodeLink,
    NodeSink,
    NodeUpdate,
    PermanentError,
)
from drivers.esp32.codec import CodecError, encode_message
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
    Message,
)

log = structlog.get_logger(__name__)

__all__ = ["Backoff", "Edge", "LinkTiming", "NodeEngine", "NodeLine"]

BACKOFF_JITTER = 0.2  # a pause is 80..100 % of the current backoff


@dataclass(frozen=True, slots=True)
class LinkTiming:
    """The timing both transports share. Seconds."""

    ack_timeout_s: float
    retries: int  # after the first attempt
    offline_after_s: float
    backoff_initial_s: float
    backoff_max_s: float
    watchdog_s: float = (
        0.1  # the silence check runs this often (a tenth of offline_after_s at most)
    )


@dataclass(slots=True)
class _Pending:
    cmd_id: int | None  # None: a poll, any frame from the node answers it
    future: asyncio.Future[Frame]


@dataclass(slots=True)
class NodeLine:
    """One node as the engine drives it: its bookkeeping and the exchange in flight."""

    st: NodeState
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: _Pending | None = None
    last_tx_at: float = float("-inf")
    configuring: bool = False
    hello: Hello | None = None  # the node's last HELLO (a firmware update awaits the next)
    hello_seen: asyncio.Event = field(default_factory=asyncio.Event)


class Edge(Protocol):
    """What a transport gives the engine."""

    @property
    def connected(self) -> bool: ...

    @property
    def lost_reason(self) -> str:
        """Why a node is offline when the link itself is down ("serial link lost")."""
        ...

    async def session(self, opened: Callable[[], None]) -> None:
        """Open the link, call ``opened()`` once it is up, serve it until it is lost.

        Raises :class:`ConnectionLost` when it cannot open or when the link goes away.
        """
        ...

    async def transmit(self, line: NodeLine, frame: Frame) -> None:
        """Put one frame for ``line``'s node on the wire; :class:`ConnectionLost` if down."""
        ...


class Backoff:
    """Capped exponential backoff with jitter; :attr:`last_s` is the last pause before jitter."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.current_s = initial_s
        self.last_s = 0.0

    def reset(self) -> None:
        self.current_s = self.initial_s

    async def pause(self) -> None:
        self.last_s = self.current_s
        await asyncio.sleep(self.current_s * random.uniform(1.0 - BACKOFF_JITTER, 1.0))
        self.current_s = min(self.current_s * 2, self.max_s)


class NodeEngine:
    """The nodes behind one link, driven over the ``edge`` transport.

    ``one_exchange_at_a_time``: a shared medium (a serial bus) carries one exchange
    in flight for all nodes; otherwise (MQTT) one per node. ``counters`` is the
    hub's own counter dict (it counts ``not_for_host`` there). ``prefix`` names the
    log events (``esp32.node_online``, ``mqtt.node_online``); ``where`` goes with the
    link's log lines (the port, the broker). ``telemetry_lead_s``: a node is configured
    with a telemetry period this much shorter than its node config's (see :meth:`configure`).
    """

    def __init__(
        self,
        nodes: Sequence[NodeConfig],
        edge: Edge,
        timing: LinkTiming,
        *,
        one_exchange_at_a_time: bool,
        counters: dict[str, int],
        prefix: str,
        where: Mapping[str, object],
        clock: Callable[[], float] = time.monotonic,
        telemetry_lead_s: float = 0.0,
    ) -> None:
        self.lines = {n.node_id: NodeLine(NodeState(n)) for n in nodes}
        if len(self.lines) != len(nodes):
            raise PermanentError("node ids must be unique")
        if any(n.address == HOST_ADDRESS for n in nodes):
            raise PermanentError("bus address 0 is the host")
        self.timing = timing
        self.backoff = Backoff(timing.backoff_initial_s, timing.backoff_max_s)
        self._edge = edge
        self._bus_lock = asyncio.Lock() if one_exchange_at_a_time else None
        self._counters = counters
        self._prefix = prefix
        self._where = dict(where)
        self._clock = clock
        self._telemetry_lead_s = telemetry_lead_s
        self._bay_nodes = {nid: LinkBayNode(self, ln, ln.st) for nid, ln in self.lines.items()}
        self._sink: NodeSink | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._seq = 0
        self._cmd_id = random.randrange(0x10000)  # a restarted host must not repeat the last id
        self._started_at = clock()
        self._link_up: bool | None = None
        self._sessions = 0
        self._frames_in = 0

    # ------------------------------------------------------------------ public

    def node(self, node_id: str) -> LinkBayNode[NodeLine]:
        try:
            return self._bay_nodes[node_id]
        except KeyError:
            where = " ".join(str(v) for v in self._where.values())
            raise PermanentError(f"no node {node_id!r} on {where}") from None

    async def run(self, sink: NodeSink, *also: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Watchdog, link loop and the edge's own loops ``also``, until cancelled."""
        self._sink = sink
        self._started_at = self._clock()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._watchdog(), name=f"{self._prefix}-watchdog")
                tg.create_task(self._link_loop(), name=f"{self._prefix}-link")
                for loop in also:
                    tg.create_task(loop(), name=f"{self._prefix}-{loop.__name__.strip('_')}")
        finally:
            self._tg = None

    def uptime_ms(self) -> int:
        """The host's uptime as its HEARTBEATs carry it (a node sees a restart as a step back)."""
        return int((self._clock() - self._started_at) * 1000)

    def busy(self, line: NodeLine) -> bool:
        """An exchange with this node (or, on a shared medium, with any node) is in flight."""
        return (self._bus_lock or line.lock).locked()

    def awaited(self) -> NodeLine | None:
        """The node whose answer is awaited (on a shared medium: the only one)."""
        return next((ln for ln in self.lines.values() if ln.pending is not None), None)

    # ------------------------------------------------------------------ sending

    @property
    def command_budget_s(self) -> float:
        """The longest a command takes before it fails: each attempt's ack timeout, retries too."""
        return self.timing.ack_timeout_s * (1 + self.timing.retries)

    async def command(self, line: NodeLine, build: Callable[[int], Command]) -> None:
        """Send one command to a node and wait for its ack (retried); raise on failure."""
        st = line.st
        self._cmd_id = (self._cmd_id + 1) & 0xFFFF
        cmd = build(self._cmd_id)
        try:
            encode_message(cmd)
        except CodecError as exc:
            raise PermanentError(f"{st.cfg.node_id}: {exc}") from exc
        try:
            reply = await self.exchange(line, cmd, attempts=1 + self.timing.retries)
        except DriverTimeout:
            st.stats.timeouts += 1
            log.warning(
                f"{self._prefix}.command_timeout", node=st.cfg.node_id, cmd=type(cmd).__name__
            )
            raise
        assert isinstance(reply.msg, Ack)
        if reply.msg.status is not AckStatus.OK:
            raise CommandRejected(st.cfg.node_id, type(cmd).__name__, reply.msg.status)

    async def exchange(self, line: NodeLine, msg: Heartbeat | Command, *, attempts: int) -> Frame:
        """Send ``msg`` and wait for the answer (the ACK of a command, any frame to a poll).

        Each attempt sends the same message (a command keeps its ``cmd_id``) and waits
        ``ack_timeout_s`` for it to go out and be answered; a late answer to an earlier
        attempt counts. :class:`DriverTimeout` after ``attempts`` unanswered attempts.
        """
        st = line.st
        cmd_id = None if isinstance(msg, Heartbeat) else msg.cmd_id
        loop = asyncio.get_running_loop()
        async with self._bus_lock or line.lock:
            try:
                for attempt in range(attempts):
                    if attempt:
                        st.stats.retries += 1
                    # A future per attempt under the same id: the timeout may cancel it, and a
                    # late answer to an earlier attempt still answers the one now waiting.
                    future: asyncio.Future[Frame] = loop.create_future()
                    line.pending = _Pending(cmd_id, future)
                    try:
                        async with asyncio.timeout(self.timing.ack_timeout_s):
                            await self.send(line, msg)
                            return await future
                    except TimeoutError:
                        continue
            finally:
                line.pending = None
        raise DriverTimeout(
            f"{st.cfg.node_id}: no answer to {type(msg).__name__} after {attempts} attempt(s)"
        )

    async def send(self, line: NodeLine, msg: Message) -> None:
        """One frame to one node, numbered with the host's sequence (retries included)."""
        self._seq = (self._seq + 1) & 0xFFFF
        frame = Frame(src=HOST_ADDRESS, dst=line.st.cfg.address, seq=self._seq, msg=msg)
        await self._edge.transmit(line, frame)
        line.st.stats.frames_tx += 1
        line.last_tx_at = self._clock()

    async def configure(self, line: NodeLine) -> None:
        """Push the node's configuration (it said HELLO or came online); retried on its next frame.

        A polled node reports TELEMETRY on the first poll after its period has passed: with
        polls exactly one period apart, a poll that arrives a millisecond early would get a
        HEARTBEAT and the telemetry would skip a period. The serial hub therefore configures
        the period half a poll shorter (``telemetry_lead_s``), so the telemetry comes on the
        poll nearest to each period.
        """
        cfg = line.st.cfg
        period = max(cfg.telemetry_period_s - self._telemetry_lead_s, cfg.telemetry_period_s / 2)
        try:
            await self.command(
                line,
                lambda cmd_id: Configure(cmd_id, cfg.safe_current_a, cfg.host_timeout_s, period),
            )
        except (DriverTimeout, ConnectionLost):
            return  # still needs_config: the next frame from the node tries again
        except CommandRejected as exc:
            log.error(
                f"{self._prefix}.configure_rejected", node=cfg.node_id, status=exc.status.name
            )
        line.st.needs_config = False
        log.info(f"{self._prefix}.configured", node=cfg.node_id, safe_current_a=cfg.safe_current_a)

    def kick_configure(self, line: NodeLine) -> None:
        """Configure the node in the background if it needs it and nobody is at it yet."""
        if line.configuring or not line.st.needs_config or self._tg is None:
            return
        line.configuring = True
        self._tg.create_task(self._configure_once(line), name=f"configure:{line.st.cfg.node_id}")

    async def _configure_once(self, line: NodeLine) -> None:
        try:
            await self.configure(line)
        finally:
            line.configuring = False

    # ------------------------------------------------------------------ receiving

    def for_host(self, frame: Frame) -> bool:
        """Frames to another address are not ours (RS-485 echo of our own): counted, dropped."""
        if frame.dst == HOST_ADDRESS:
            return True
        self._counters["not_for_host"] = self._counters.get("not_for_host", 0) + 1
        return False

    def deliver(self, line: NodeLine, frame: Frame, *, redelivery_window: int = 0) -> None:
        """A good frame from ``line``'s node: updates to the sink, the awaited answer resolved.

        ``redelivery_window``: see :meth:`NodeState.accept`.
        """
        st = line.st
        msg = frame.msg
        now = self._clock()
        self._frames_in += 1
        updates = st.accept(frame.seq, msg, now, redelivery_window=redelivery_window)
        if st.online is not True:
            st.online = True
            st.needs_config = True
            log.info(f"{self._prefix}.node_online", node=st.cfg.node_id)
            self.emit(NodeLink(st.cfg.node_id, now, online=True, reason="frame received"))
        if isinstance(msg, Hello):
            line.hello = msg
            line.hello_seen.set()
            log.info(
                f"{self._prefix}.hello",
                node=st.cfg.node_id,
                firmware=msg.firmware,
                protocol=msg.protocol_version,
                serial=msg.serial,
                boot_id=msg.boot_id,
            )
        for update in updates:
            self.emit(update)
        p = line.pending
        if p is not None and not p.future.done():
            if p.cmd_id is None or (isinstance(msg, Ack) and msg.cmd_id == p.cmd_id):
                p.future.set_result(frame)

    def emit(self, update: NodeUpdate) -> None:
        if self._sink is None:
            return
        try:
            self._sink(update)
        except Exception:
            # A consumer bug must not take the link down with it.
            log.exception(f"{self._prefix}.sink_failed", update=type(update).__name__)

    def go_offline(self, line: NodeLine, reason: str) -> None:
        st = line.st
        st.online = False
        st.needs_config = True
        st.went_offline()
        log.warning(f"{self._prefix}.node_offline", node=st.cfg.node_id, reason=reason)
        self.emit(NodeLink(st.cfg.node_id, self._clock(), online=False, reason=reason))

    # ------------------------------------------------------------------ link and liveness

    async def _link_loop(self) -> None:
        """Open, serve, and after a loss open again after a pause that grows while the link
        carries nothing; a link that carried good frames starts the backoff over."""
        while True:
            frames_before = self._frames_in
            try:
                await self._edge.session(self._opened)
                reason = "link closed"
            except ConnectionLost as exc:
                reason = str(exc)
            finally:
                self._fail_pending(ConnectionLost(self._edge.lost_reason))
            self._set_link(False, reason)
            if self._frames_in > frames_before:
                self.backoff.reset()
            await self.backoff.pause()

    def _opened(self) -> None:
        self._sessions += 1
        if self._sessions > 1:
            for line in self.lines.values():
                line.st.stats.reconnects += 1
        self._set_link(True, "opened")

    def _set_link(self, up: bool, reason: str) -> None:
        if self._link_up is up:
            return  # log a loss once and a recovery once
        if up:
            log.info(f"{self._prefix}.link_up", **self._where)
        else:
            log.warning(f"{self._prefix}.link_down", reason=reason, **self._where)
        self._link_up = up

    def _fail_pending(self, exc: Exception) -> None:
        for line in self.lines.values():
            p = line.pending
            if p is not None and not p.future.done():
                p.future.set_exception(exc)
                p.future.exception()  # retrieved here, in case the waiter is still sending

    async def _watchdog(self) -> None:
        period = min(self.timing.watchdog_s, self.timing.offline_after_s / 10)
        while True:
            await asyncio.sleep(period)
            now = self._clock()
            for line in self.lines.values():
                st = line.st
                last = st.stats.last_rx_at if st.stats.last_rx_at is not None else self._started_at
                if st.online is not False and now - last > self.timing.offline_after_s:
                    up = self._edge.connected
                    self.go_offline(line, "heartbeat timeout" if up else self._edge.lost_reason)
