"""MQTT edge of the ESP32 node engine (aiomqtt): implements ``NodeHub`` and ``BayNode``.

Owns the controller's broker connection for the nodes of one bus and what
only MQTT needs. A station may have several MQTT buses side by side (a bus
holds at most 247 addresses): each has its own client id (the bus id
appended when there are several) and subscribes to the topics of its own
nodes only, so a node is known on its own bus and nowhere else, and two buses
never take each other's persistent session on the broker. The messages are those of the serial protocol, one
encoded frame per MQTT message, QoS 1 both ways; the topic, not the frame's
address, names the node (``mqtt_config.py`` has the topics). Unlike the
serial bus, nodes speak when they like (hello on connect, events at once,
telemetry every period), so commands to different nodes are in flight
together, one at a time per node; the host heartbeats a node it has sent
nothing for a while. Commands, acks, retries, configuring, liveness and
reconnecting are the engine's (``engine.py``).

Liveness: a node is online from its first good frame; it goes offline on a
retained ``offline`` status (its last will, or a clean goodbye) or after
``offline_after_s`` without a frame (which also covers a lost broker).

The connection is persistent (``clean_session=False``, fixed client id), so
the broker queues what nodes publish while the controller is away; QoS 1
duplicates are dropped by sequence number, and right after a reconnect
frames a little older than the last one are the broker's redeliveries.
aiomqtt errors are mapped to the ``DriverError`` family here;
``CancelledError`` passes through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import aiomqtt
import structlog

from controller.ports import ConnectionLost, FirmwareProgress, NodeSink, PermanentError
from drivers.esp32.codec import CodecError, decode, encode
from drivers.esp32.engine import LinkTiming, NodeEngine, NodeLine
from drivers.esp32.firmware import BOOT_TIMEOUT_S, CONFIRM_TIMEOUT_S, update_node
from drivers.esp32.guard import SEQ_WINDOW
from drivers.esp32.link import LinkBayNode, NodeConfig, node_configs
from drivers.esp32.messages import Frame, Heartbeat
from drivers.esp32.mqtt_client import client_for, no_delay
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
SUBSCRIBE_BATCH = 64  # topics per SUBSCRIBE packet (a bus subscribes two per node)

# One node behind the broker, as the controller sees it.
MqttBayNode = LinkBayNode[NodeLine]


class MqttNodeHub:
    """The nodes of one bus behind one broker (``controller.ports.NodeHub``).

    ``bus_id``: set when the station has several MQTT buses; it makes the client id
    this bus's own (``<client id>-<bus id>``).
    """

    lost_reason = "broker connection lost"

    def __init__(
        self,
        cfg: MqttConfig,
        station_id: str,
        nodes: Sequence[NodeConfig],
        *,
        clock: Callable[[], float] = time.monotonic,
        bus_id: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.topic_prefix, station_id)
        base = cfg.client_id or f"{cfg.topic_prefix}-{station_id}-controller"
        self.client_id = f"{base}-{bus_id}" if bus_id else base
        # Per node, not a wildcard: another bus's nodes never reach this one.
        self.subscriptions: list[tuple[str, int]] = [
            (topic, 1)
            for n in nodes
            for topic in (self.topics.status(n.node_id), self.topics.up(n.node_id))
        ]
        self._clock = clock
        self.broker_stats: dict[str, int] = {
            "connects": 0,
            "connect_failures": 0,
            "unknown_node": 0,
            "foreign_topic": 0,
            "not_for_host": 0,
        }
        timing = LinkTiming(
            cfg.ack_timeout_s,
            cfg.retries,
            cfg.offline_after_s,
            cfg.backoff_initial_s,
            cfg.backoff_max_s,
            watchdog_s=0.25,  # dozens of nodes with seconds of timeout: 4 looks a second suffice
        )
        self._engine = NodeEngine(
            nodes,
            self,
            timing,
            one_exchange_at_a_time=False,
            counters=self.broker_stats,
            prefix="mqtt",
            where={"host": cfg.host, "port": cfg.port},
            clock=clock,
        )
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._reconnected_at: float | None = None
        self._unknown_logged: set[str] = set()

    # ------------------------------------------------------------------ public

    def node(self, node_id: str) -> MqttBayNode:
        return self._engine.node(node_id)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def last_backoff_s(self) -> float:
        return self._engine.backoff.last_s

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def run(self, sink: NodeSink) -> None:
        await self._engine.run(sink, self._heartbeats)

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
        connected = False
        try:
            async with self._new_client() as client:
                connected = True
                no_delay(client)
                self.broker_stats["connects"] += 1
                # A persistent session of an older release may still hold the station-wide
                # wildcards: drop them, or this bus would hear every other bus's nodes.
                await client.unsubscribe([self.topics.all_status(), self.topics.all_up()])
                for i in range(0, len(self.subscriptions), SUBSCRIBE_BATCH):
                    await client.subscribe(self.subscriptions[i : i + SUBSCRIBE_BATCH])
                self._client = client
                if self.broker_stats["connects"] > 1:
                    self._reconnected_at = self._clock()
                self._connected.set()
                opened()
                async for message in client.messages:
                    self._on_message(str(message.topic), message.payload)
        except aiomqtt.MqttError as exc:
            if not connected:
                self.broker_stats["connect_failures"] += 1
            raise ConnectionLost(str(exc) or type(exc).__name__) from exc
        finally:
            self._client = None
            self._connected.clear()

    async def transmit(self, line: NodeLine, frame: Frame) -> None:
        client = self._client
        if client is None:
            raise ConnectionLost("not connected to the MQTT broker")
        try:
            # No timeout of its own: the caller bounds the wait (a lost PUBACK is a retry).
            await client.publish(
                self.topics.down(line.st.cfg.node_id), encode(frame), qos=1, timeout=math.inf
            )
        except aiomqtt.MqttError as exc:
            raise ConnectionLost(f"publish failed: {exc}") from exc

    # ------------------------------------------------------------------ the broker

    def _new_client(self) -> aiomqtt.Client:
        c = self.cfg
        return client_for(
            c, self.client_id, clean_session=False, timeout=max(2.0, c.ack_timeout_s * 2)
        )

    def _on_message(self, topic: str, payload: object) -> None:
        parsed = self.topics.parse(topic)
        if parsed is None:
            self.broker_stats["foreign_topic"] += 1
            return
        node_id, leaf = parsed
        line = self._engine.lines.get(node_id)
        if line is None:
            self.broker_stats["unknown_node"] += 1
            if node_id not in self._unknown_logged:
                self._unknown_logged.add(node_id)
                log.warning("mqtt.unknown_node", node=node_id)
            return
        data = payload if isinstance(payload, bytes) else b""
        if leaf == "status":
            self._on_status(line, data)
        elif leaf == "up":
            self._on_up(line, data)

    def _on_status(self, line: NodeLine, status: bytes) -> None:
        st = line.st
        if status == STATUS_OFFLINE and st.online is not False:
            self._engine.go_offline(line, "last will / status offline")
        elif status not in (STATUS_ONLINE, STATUS_OFFLINE):
            st.stats.extra["bad_status"] = st.stats.extra.get("bad_status", 0) + 1

    def _on_up(self, line: NodeLine, data: bytes) -> None:
        try:
            frame = decode(data)
        except CodecError as exc:
            line.st.stats.bad_frames += 1
            log.debug("mqtt.bad_frame", node=line.st.cfg.node_id, reason=exc.reason)
            return
        if not self._engine.for_host(frame):
            return
        # Right after a reconnect the broker redelivers what was in flight to us: frames a
        # little older than the last one are repeats then, not a second sender.
        now = self._clock()
        redelivery = self._reconnected_at is not None and now - self._reconnected_at < (
            REDELIVERY_GRACE_S
        )
        self._engine.deliver(line, frame, redelivery_window=SEQ_WINDOW if redelivery else 0)
        self._engine.kick_configure(line)

    async def _heartbeats(self) -> None:
        """Keep each node's host-silence timer fed when no command went to it lately."""
        period = self.cfg.heartbeat_s
        while True:
            await asyncio.sleep(period / 2)
            if not self.connected:
                continue
            now = self._clock()
            uptime_ms = self._engine.uptime_ms()
            for line in self._engine.lines.values():
                if now - line.last_tx_at < period or self._engine.busy(line):
                    continue
                with contextlib.suppress(ConnectionLost, TimeoutError):
                    async with asyncio.timeout(self.cfg.ack_timeout_s):
                        await self._engine.send(line, Heartbeat(uptime_ms))


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
    several = sum(1 for b in station.buses if b.transport == "mqtt") > 1
    return MqttNodeHub(
        parse_mqtt(station.mqtt),
        station.station.id,
        node_configs(bus, bays),
        bus_id=bus.id if several else None,
    )
