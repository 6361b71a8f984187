"""Simulated ESP32 bay nodes speaking the real protocol over MQTT, one broker account each.

Each node is a :class:`SimNode` (the same firmware model as on the serial
bus) behind its own aiomqtt connection: user name = node name, last will
``offline`` (retained) on its status topic, retained ``online`` and a hello
on every connect. Unlike the polled serial bus, a node pushes: queued events
at once, telemetry every ``telemetry_period_s``, a heartbeat when it has said
nothing for a second. Frames go one at a time (QoS 1, the next only after
the broker's PUBACK) with the node's own sequence numbers; a frame that did
not get through is sent again after the reconnect, so nothing is skipped.

``kill(name)`` cuts a node's TCP connection without an MQTT DISCONNECT (the
broker then publishes its last will); ``revive(name)`` lets it reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiomqtt
import structlog

from simulators.esp32_node.bus import SimNodeSpec, make_node
from simulators.esp32_node.node import SimNode
from simulators.esp32_node.wire import HOST, Frame, Heartbeat, Message, WireError, decode, encode

log = structlog.get_logger(__name__)


class MqttClient(aiomqtt.Client):
    """aiomqtt's client whose publish keeps a cancel: on Python 3.11 its ``wait_for`` returns
    when the acknowledgement lands with the cancel, and the simulator did not stop on SIGTERM.
    (The station's own client does the same; the node simulator imports nothing of the
    driver, so that a shared bug would not hide.)"""

    async def publish(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        task = asyncio.current_task()
        before = task.cancelling() if task is not None else 0
        await super().publish(*args, **kwargs)
        if task is not None and task.cancelling() > before:
            raise asyncio.CancelledError


__all__ = ["MqttNodeLink", "MqttSimNodes"]

HEARTBEAT_IDLE_S = 1.0
STATUS_ONLINE = b"online"
STATUS_OFFLINE = b"offline"


@dataclass(frozen=True, slots=True)
class Topics:
    """A node's topics (PROTOCOL.md, MQTT): ``<prefix>/<station>/node/<name>/up|down|status``."""

    prefix: str
    station_id: str

    def _node(self, name: str, leaf: str) -> str:
        return f"{self.prefix}/{self.station_id}/node/{name}/{leaf}"

    def up(self, name: str) -> str:
        return self._node(name, "up")

    def down(self, name: str) -> str:
        return self._node(name, "down")

    def status(self, name: str) -> str:
        return self._node(name, "status")


@dataclass(slots=True)
class MqttNodeLink:
    """One simulated node's broker connection and its counters."""

    node: SimNode
    username: str
    password: str
    alive: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    client: aiomqtt.Client | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    outbox: list[Message] = field(default_factory=list)  # replies to the host (acks) first
    pending: deque[Frame] = field(
        default_factory=deque
    )  # numbered, not yet acknowledged by the broker
    seq: int = 0
    last_tx_at: float = float("-inf")
    published: int = 0  # frames the broker acknowledged
    connects: int = 0
    bad_frames: int = 0


class MqttSimNodes:
    """Async context manager running simulated nodes against a broker until exit."""

    def __init__(
        self,
        host: str,
        port: int,
        station_id: str,
        nodes: Sequence[SimNodeSpec],
        *,
        passwords: Mapping[str, str] | Callable[[str], str],
        prefix: str = "edge",
        keepalive_s: int = 5,
        tick_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
        backoff_max_s: float = 2.0,
        client_suffix: str = "",
    ) -> None:
        """``client_suffix``: appended to each MQTT client id, so a clone of a node (same
        account, same topics) can be connected beside the original without replacing it."""
        self.host = host
        self.port = port
        self.topics = Topics(prefix, station_id)
        self.clock = clock
        self.keepalive_s = keepalive_s
        self._tick_s = tick_s
        self._backoff_max_s = backoff_max_s
        self._client_suffix = client_suffix
        now = clock()

        def password(name: str) -> str:
            return passwords(name) if callable(passwords) else passwords[name]

        self.links: dict[str, MqttNodeLink] = {}
        for s in nodes:
            node = make_node(s, now=now, seed=seed)
            self.links[s.name] = MqttNodeLink(node, s.name, password(s.name))
        self._changed = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def nodes(self) -> dict[str, SimNode]:
        return {name: link.node for name, link in self.links.items()}

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> MqttSimNodes:
        tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._stack.callback(self._cancel_all)  # runs first on exit: the group then awaits them
        self._tasks.append(tg.create_task(self._tick_loop(), name="sim-mqtt-tick"))
        for name, link in self.links.items():
            link.alive.set()
            self._tasks.append(tg.create_task(self._node_loop(link), name=f"sim-mqtt:{name}"))
        return self

    def _cancel_all(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)

    async def wait_connected(
        self, names: Sequence[str] | None = None, limit_s: float = 10.0
    ) -> None:
        async with asyncio.timeout(limit_s):
            for name in names or list(self.links):
                await self.links[name].connected.wait()

    async def wait_until(self, predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
        """Wait (without polling sleeps) until ``predicate()`` holds after some tick or frame."""
        async with asyncio.timeout(limit_s):
            while not predicate():
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _tick_loop(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self._tick_s)

    def tick(self) -> None:
        """Advance every node to ``clock()`` and let each send what it has queued."""
        now = self.clock()
        for link in self.links.values():
            link.node.tick(now)
            link.wake.set()
        self._notify()

    # ------------------------------------------------------------------ fault injection

    def kill(self, name: str) -> None:
        """Drop the node's TCP connection without a DISCONNECT: the broker sends its last will."""
        link = self.links[name]
        link.alive.clear()
        client = link.client
        if client is None:
            return
        # aiomqtt has no "vanish" call; a real node losing power looks exactly like this.
        sock = client._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def revive(self, name: str) -> None:
        self.links[name].alive.set()

    def set_online(self, name: str, online: bool) -> None:
        """Offline: the node vanishes from the broker (its last will says so); online: it reconnects."""
        self.revive(name) if online else self.kill(name)

    # ------------------------------------------------------------------ one node

    async def _node_loop(self, link: MqttNodeLink) -> None:
        name = link.node.name
        backoff = 0.1
        while True:
            await link.alive.wait()
            client = MqttClient(  # its publish keeps a cancel (Python 3.11's wait_for)
                self.host,
                self.port,
                username=link.username,
                password=link.password,
                identifier=f"{self.topics.prefix}-{self.topics.station_id}-{name}"
                f"{self._client_suffix}",
                clean_session=True,
                keepalive=self.keepalive_s,
                will=aiomqtt.Will(self.topics.status(name), STATUS_OFFLINE, qos=1, retain=True),
                timeout=5.0,
            )
            try:
                async with client:
                    link.client = client
                    link.connects += 1
                    sock = client._client.socket()  # a node sends each frame at once too
                    if isinstance(sock, socket.socket):
                        with contextlib.suppress(OSError):
                            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    backoff = 0.1
                    await client.subscribe(self.topics.down(name), qos=1)
                    await client.publish(
                        self.topics.status(name), STATUS_ONLINE, qos=1, retain=True
                    )
                    link.node.hello_pending = True  # firmware: hello on every (re)connect
                    link.connected.set()
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._rx(link, client))
                        tg.create_task(self._tx(link, client))
            except* (aiomqtt.MqttError, OSError):
                pass
            finally:
                link.client = None
                link.connected.clear()
            if link.alive.is_set():
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max_s)

    async def _rx(self, link: MqttNodeLink, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes):
                continue
            try:
                frame = decode(payload)
            except WireError:
                link.bad_frames += 1
                continue
            now = self.clock()
            reply = link.node.handle(frame, now)
            if reply is not None and not isinstance(reply.msg, Heartbeat):
                link.outbox.append(reply.msg)
            link.wake.set()
            self._notify()

    async def _tx(self, link: MqttNodeLink, client: aiomqtt.Client) -> None:
        up = self.topics.up(link.node.name)
        while True:
            for msg in self._due(link):
                link.seq = (link.seq + 1) & 0xFFFF
                link.pending.append(Frame(src=link.node.address, dst=HOST, seq=link.seq, msg=msg))
            while link.pending:
                await self._send(link, client, up, link.pending[0])
                link.pending.popleft()
            await link.wake.wait()
            link.wake.clear()

    def _due(self, link: MqttNodeLink) -> list[Message]:
        node = link.node
        now = self.clock()
        out, link.outbox = link.outbox, []
        while True:
            # The serial firmware's report order (hello, events, telemetry when due).
            msg = node._next_report(now)
            if not isinstance(msg, Heartbeat):
                out.append(msg)
                continue
            if not out and now - link.last_tx_at >= HEARTBEAT_IDLE_S:
                out.append(msg)
            return out

    async def _send(
        self, link: MqttNodeLink, client: aiomqtt.Client, topic: str, frame: Frame
    ) -> None:
        data = encode(frame)
        if link.node.should_corrupt():
            i = len(data) // 2
            data = data[:i] + bytes([data[i] ^ 0x5A or 0xA5]) + data[i + 1 :]
        await client.publish(topic, data, qos=1, timeout=5.0)
        link.published += 1
        link.last_tx_at = self.clock()
        self._notify()
