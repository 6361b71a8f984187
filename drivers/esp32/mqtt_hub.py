"""MQTT adapter for ESP32 bay nodes (aiomqtt): implements ``NodeHub`` and ``BayNode``.

Owns the controller's one broker connection and the nodes of one station.
The messages are those of the serial protocol (``codec.py``), one encoded
frame per MQTT message, QoS 1 both ways (see ``mqtt_config.py`` for topics).
Unlike the serial bus, nodes speak when they like (hello on connect,
events at once, telemetry every period), so commands to different nodes are
in flight together; commands to one node go one at a time, are acknowledged
within ``ack_timeout_s`` and retried with the same ``cmd_id``.

Liveness: a node is online from its first good frame; it goes offline on a
retained ``offline`` status (its last will, or a clean goodbye) or after
``offline_after_s`` without a frame (which also covers a lost broker).

The connection is persistent (``clean_session=False``, fixed client id), so
the broker queues what nodes publish while the controller is away; QoS 1
duplicates are dropped by sequence number. aiomqtt errors are mapped to the
``DriverError`` family here; ``CancelledError`` passes through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiomqtt
import structlog

from controller.ports import (
    ConnectionLost,
    DriverTimeout,
    NodeLink,
    NodeSink,
    NodeUpdate,
    PermanentError,
)
from drivers.esp32.codec import CodecError, decode, encode, encode_message
from drivers.esp32.guard import SEQ_WINDOW
from drivers.esp32.link import CommandRejected, LinkBayNode, NodeConfig, NodeState, node_configs
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
from drivers.esp32.mqtt_config import (
    STATUS_OFFLINE,
    STATUS_ONLINE,
    MqttConfig,
    Topics,
    parse_mqtt,
)

if TYPE_CHECKING:
    from controller.core.config import BayConfig, BusConfig, StationConfig

log = structlog.get_logger(__name__)

__all__ = ["MqttBayNode", "MqttNodeHub", "build_mqtt"]

REDELIVERY_GRACE_S = 5.0


@dataclass(slots=True)
class _Node:
    """Per-node state of the MQTT hub, around the transport-neutral :class:`NodeState`."""

    st: NodeState
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: dict[int, asyncio.Future[Ack]] = field(default_factory=dict)
    last_tx_at: float = float("-inf")
    configuring: bool = False
    status: bytes = b""


# One node behind the broker, as the controller sees it.
MqttBayNode = LinkBayNode["_Node"]


class MqttNodeHub:
    """All the nodes of one station behind one broker (``controller.ports.NodeHub``)."""

    def __init__(
        self,
        cfg: MqttConfig,
        station_id: str,
        nodes: Sequence[NodeConfig],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.topic_prefix, station_id)
        self.client_id = cfg.client_id or f"{cfg.topic_prefix}-{station_id}-controller"
        self._clock = clock
        self._nodes = {n.node_id: _Node(NodeState(n)) for n in nodes}
        if len(self._nodes) != len(nodes):
            raise PermanentError("node ids must be unique")
        self._bay_nodes = {nid: LinkBayNode(self, n, n.st) for nid, n in self._nodes.items()}
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._sink: NodeSink | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._seq = 0
        self._cmd_id = random.randrange(0x10000)  # a restarted host must not repeat the last id
        self._started_at = clock()
        self._reconnected_at: float | None = None
        self._link_up: bool | None = None
        self._unknown_logged: set[str] = set()
        self.broker_stats: dict[str, int] = {
            "connects": 0,
            "connect_failures": 0,
            "unknown_node": 0,
            "foreign_topic": 0,
            "not_for_host": 0,
        }
        self.last_backoff_s = 0.0

    # ------------------------------------------------------------------ public

    def node(self, node_id: str) -> MqttBayNode:
        try:
            return self._bay_nodes[node_id]
        except KeyError:
            raise PermanentError(f"no node {node_id!r} on this MQTT hub") from None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def run(self, sink: NodeSink) -> None:
        self._sink = sink
        self._started_at = self._clock()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._watchdog(), name="mqtt-watchdog")
                tg.create_task(self._heartbeats(), name="mqtt-heartbeats")
                tg.create_task(self._connection_loop(), name="mqtt-link")
        finally:
            self._tg = None

    async def command(self, node: _Node, build: Callable[[int], Command]) -> None:
        """Send one command to a node and wait for its ack (retried); raise on failure."""
        st = node.st
        async with node.lock:
            self._cmd_id = (self._cmd_id + 1) & 0xFFFF
            cmd = build(self._cmd_id)
            try:
                encode_message(cmd)
            except CodecError as exc:
                raise PermanentError(f"{st.cfg.node_id}: {exc}") from exc
            ack = await self._exchange(node, cmd)
        if ack.status is not AckStatus.OK:
            raise CommandRejected(st.cfg.node_id, type(cmd).__name__, ack.status)

    # ------------------------------------------------------------------ link

    def _new_client(self) -> aiomqtt.Client:
        c = self.cfg
        tls_params = None
        if c.tls is not None:
            tls_params = aiomqtt.TLSParameters(
                ca_certs=str(c.tls.ca_file) if c.tls.ca_file else None,
                certfile=str(c.tls.cert_file) if c.tls.cert_file else None,
                keyfile=str(c.tls.key_file) if c.tls.key_file else None,
            )
        return aiomqtt.Client(
            c.host,
            c.port,
            username=c.username,
            password=c.secret(),
            identifier=self.client_id,
            clean_session=False,
            keepalive=c.keepalive_s,
            timeout=max(2.0, c.ack_timeout_s * 2),
            tls_params=tls_params,
            tls_insecure=c.tls.insecure if c.tls is not None else None,
        )

    async def _connection_loop(self) -> None:
        backoff = self.cfg.backoff_initial_s
        while True:
            connected = False
            try:
                client = self._new_client()
                async with client:
                    connected = True
                    self.broker_stats["connects"] += 1
                    if self.broker_stats["connects"] > 1:
                        for n in self._nodes.values():
                            n.st.stats.reconnects += 1
                    await client.subscribe(self.topics.all_status(), qos=1)
                    await client.subscribe(self.topics.all_up(), qos=1)
                    self._client = client
                    if self.broker_stats["connects"] > 1:
                        self._reconnected_at = self._clock()
                    self._connected.set()
                    self._set_link(True, "connected")
                    backoff = self.cfg.backoff_initial_s
                    async for message in client.messages:
                        self._on_message(str(message.topic), message.payload)
            except aiomqtt.MqttError as exc:
                if not connected:
                    self.broker_stats["connect_failures"] += 1
                self._set_link(False, str(exc) or type(exc).__name__)
            finally:
                self._client = None
                self._connected.clear()
                for n in self._nodes.values():
                    _fail_pending(n, ConnectionLost("broker connection lost"))
            self.last_backoff_s = backoff
            await asyncio.sleep(backoff * random.uniform(0.8, 1.0))
            backoff = min(backoff * 2, self.cfg.backoff_max_s)

    def _set_link(self, up: bool, reason: str) -> None:
        if self._link_up is up:
            return  # log a loss once and a recovery once
        if up:
            log.info("mqtt.connected", host=self.cfg.host, port=self.cfg.port)
        else:
            log.warning("mqtt.disconnected", host=self.cfg.host, port=self.cfg.port, reason=reason)
        self._link_up = up

    async def _publish(self, node: _Node, msg: Message) -> None:
        client = self._client
        if client is None:
            raise ConnectionLost("not connected to the MQTT broker")
        self._seq = (self._seq + 1) & 0xFFFF
        frame = Frame(src=HOST_ADDRESS, dst=node.st.cfg.address, seq=self._seq, msg=msg)
        try:
            # No timeout of its own: the caller bounds the wait (a lost PUBACK is a retry).
            await client.publish(
                self.topics.down(node.st.cfg.node_id), encode(frame), qos=1, timeout=math.inf
            )
        except aiomqtt.MqttError as exc:
            raise ConnectionLost(f"publish failed: {exc}") from exc
        node.st.stats.frames_tx += 1
        node.last_tx_at = self._clock()

    async def _exchange(self, node: _Node, cmd: Command) -> Ack:
        st = node.st
        if self._client is None:
            raise ConnectionLost("not connected to the MQTT broker")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Ack] = loop.create_future()
        node.pending[cmd.cmd_id] = future
        attempts = 1 + self.cfg.retries
        try:
            for attempt in range(attempts):
                if attempt:
                    st.stats.retries += 1
                try:
                    async with asyncio.timeout(self.cfg.ack_timeout_s):
                        await self._publish(node, cmd)
                        # shield: a timeout must not cancel the future a retry still waits on
                        return await asyncio.shield(future)
                except TimeoutError:
                    continue  # no PUBACK or no ack in time: same cmd_id again
        finally:
            node.pending.pop(cmd.cmd_id, None)
        st.stats.timeouts += 1
        log.warning("mqtt.command_timeout", node=st.cfg.node_id, cmd=type(cmd).__name__)
        raise DriverTimeout(
            f"{st.cfg.node_id}: no ack to {type(cmd).__name__} after {attempts} attempt(s)"
        )

    async def _configure(self, node: _Node) -> None:
        cfg = node.st.cfg
        try:
            await self.command(
                node,
                lambda cmd_id: Configure(
                    cmd_id, cfg.safe_current_a, cfg.host_timeout_s, cfg.telemetry_period_s
                ),
            )
        except (DriverTimeout, ConnectionLost):
            return  # still needs_config: the next frame from the node tries again
        except CommandRejected as exc:
            log.error("mqtt.configure_rejected", node=cfg.node_id, status=exc.status.name)
        finally:
            node.configuring = False
        node.st.needs_config = False
        log.info("mqtt.configured", node=cfg.node_id, safe_current_a=cfg.safe_current_a)

    def _kick_configure(self, node: _Node) -> None:
        if node.configuring or not node.st.needs_config or self._tg is None:
            return
        node.configuring = True
        self._tg.create_task(self._configure(node), name=f"mqtt-configure:{node.st.cfg.node_id}")

    # ------------------------------------------------------------------ receive path

    def _on_message(self, topic: str, payload: object) -> None:
        parsed = self.topics.parse(topic)
        if parsed is None:
            self.broker_stats["foreign_topic"] += 1
            return
        node_id, leaf = parsed
        node = self._nodes.get(node_id)
        if node is None:
            self.broker_stats["unknown_node"] += 1
            if node_id not in self._unknown_logged:
                self._unknown_logged.add(node_id)
                log.warning("mqtt.unknown_node", node=node_id)
            return
        data = payload if isinstance(payload, bytes) else b""
        if leaf == "status":
            self._on_status(node, data)
        elif leaf == "up":
            self._on_up(node, data)

    def _on_status(self, node: _Node, status: bytes) -> None:
        node.status = status
        if status == STATUS_OFFLINE and node.st.online is not False:
            self._go_offline(node, "last will / status offline")
        elif status != STATUS_ONLINE:
            node.st.stats.extra["bad_status"] = node.st.stats.extra.get("bad_status", 0) + 1

    def _on_up(self, node: _Node, data: bytes) -> None:
        st = node.st
        try:
            frame = decode(data)
        except CodecError as exc:
            st.stats.bad_frames += 1
            log.debug("mqtt.bad_frame", node=st.cfg.node_id, reason=exc.reason)
            return
        if frame.dst != HOST_ADDRESS:
            self.broker_stats["not_for_host"] += 1
            return
        now = self._clock()
        msg = frame.msg
        if isinstance(msg, Ack):
            fut = node.pending.get(msg.cmd_id)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        # The transport-neutral bookkeeping, shared with serial: repeats, lines, identity.
        # Right after a reconnect the broker redelivers what was in flight to us: frames a
        # little older than the last one are repeats then, not a second sender.
        redelivery = self._reconnected_at is not None and now - self._reconnected_at < (
            REDELIVERY_GRACE_S
        )
        updates = st.accept(frame.seq, msg, now, redelivery_window=SEQ_WINDOW if redelivery else 0)
        if st.online is not True:
            st.online = True
            st.needs_config = True
            log.info("mqtt.node_online", node=st.cfg.node_id)
            self._emit(NodeLink(st.cfg.node_id, now, online=True, reason="frame received"))
        if isinstance(msg, Hello):
            log.info(
                "mqtt.hello",
                node=st.cfg.node_id,
                firmware=msg.firmware,
                protocol=msg.protocol_version,
                serial=msg.serial,
                boot_id=msg.boot_id,
            )
        for update in updates:
            self._emit(update)
        self._kick_configure(node)

    def _emit(self, update: NodeUpdate) -> None:
        if self._sink is None:
            return
        try:
            self._sink(update)
        except Exception:
            # A consumer bug must not take the link down with it.
            log.exception("mqtt.sink_failed", update=type(update).__name__)

    def _go_offline(self, node: _Node, reason: str) -> None:
        st = node.st
        st.online = False
        st.needs_config = True
        st.went_offline()
        log.warning("mqtt.node_offline", node=st.cfg.node_id, reason=reason)
        self._emit(NodeLink(st.cfg.node_id, self._clock(), online=False, reason=reason))

    # ------------------------------------------------------------------ timers

    async def _watchdog(self) -> None:
        period = min(0.25, self.cfg.offline_after_s / 10)
        while True:
            await asyncio.sleep(period)
            now = self._clock()
            for node in self._nodes.values():
                st = node.st
                last = st.stats.last_rx_at if st.stats.last_rx_at is not None else self._started_at
                if st.online is not False and now - last > self.cfg.offline_after_s:
                    self._go_offline(
                        node, "heartbeat timeout" if self.connected else "broker connection lost"
                    )

    async def _heartbeats(self) -> None:
        """Keep each node's host-silence timer fed when no command went to it lately."""
        period = self.cfg.heartbeat_s
        while True:
            await asyncio.sleep(period / 2)
            if not self.connected:
                continue
            now = self._clock()
            uptime_ms = int((now - self._started_at) * 1000)
            for node in self._nodes.values():
                if now - node.last_tx_at < period or node.lock.locked():
                    continue
                with contextlib.suppress(ConnectionLost, TimeoutError):
                    async with asyncio.timeout(self.cfg.ack_timeout_s):
                        await self._publish(node, Heartbeat(uptime_ms))


def _fail_pending(node: _Node, exc: Exception) -> None:
    for fut in node.pending.values():
        if not fut.done():
            fut.set_exception(exc)
            fut.exception()  # retrieved here; the waiter re-raises it via result()


def build_mqtt(
    bus: BusConfig, bays: list[BayConfig], station: StationConfig | None = None
) -> MqttNodeHub:
    """Entry point ``edge_station.node_hubs: mqtt``: the hub for one ``transport = "mqtt"`` bus.

    The broker settings come from the station's ``[mqtt]`` section, so the
    composition root passes the whole config as the third argument.
    """
    if station is None:
        raise PermanentError(
            f"bus {bus.id}: the mqtt transport needs the [mqtt] section; "
            "call build_mqtt(bus, bays, station_config)"
        )
    return MqttNodeHub(parse_mqtt(station.mqtt), station.station.id, node_configs(bus, bays))
