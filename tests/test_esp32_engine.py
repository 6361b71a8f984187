"""The node engine both ESP32 transports share, over an in-memory edge.

The serial and MQTT tests run it against the simulator over a pseudo-terminal
and a real broker; these pin what it does the same way for both: acks and
retries, a lost link, configuring on HELLO, the watchdog and the backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from controller.ports import ConnectionLost, DriverTimeout, NodeLink, NodeUpdate
from drivers.esp32.engine import LinkTiming, NodeEngine, NodeLine
from drivers.esp32.link import NodeConfig
from drivers.esp32.messages import HOST_ADDRESS, Ack, Configure, Frame, Hello, SetOutput

TIMING = LinkTiming(
    ack_timeout_s=0.1,
    retries=2,
    offline_after_s=0.5,
    backoff_initial_s=0.02,
    backoff_max_s=0.08,
)

Reply = Callable[[NodeLine, Frame], None]


@dataclass
class MemoryEdge:
    """A link in memory: ``reply`` answers what the engine sends; ``cut()`` loses the link."""

    lost_reason: str = "memory link lost"
    refuse: int = 0  # refuse this many opens
    connected: bool = False
    sent: list[Frame] = field(default_factory=list)
    opens: int = 0
    reply: Reply | None = None
    _lose: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def session(self, opened: Callable[[], None]) -> None:
        self.opens += 1
        if self.refuse:
            self.refuse -= 1
            raise ConnectionLost("refused")
        self.connected = True
        opened()
        self._notify()
        try:
            await self._lose.wait()
            raise ConnectionLost("cut")
        finally:
            self.connected = False
            self._lose = asyncio.Event()
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def opened(self, count: int = 1) -> None:
        """Wait until the link is up for the ``count``-th time."""
        async with asyncio.timeout(5):
            while not (self.connected and self.opens >= count):
                await self._changed.wait()

    async def transmit(self, line: NodeLine, frame: Frame) -> None:
        if not self.connected:
            raise ConnectionLost("down")
        self.sent.append(frame)
        if self.reply is not None:
            self.reply(line, frame)

    def cut(self) -> None:
        self._lose.set()


class Recorder:
    """The engine's sink; tests await what they expect instead of sleeping."""

    def __init__(self) -> None:
        self.updates: list[NodeUpdate] = []
        self._changed = asyncio.Event()

    def __call__(self, update: NodeUpdate) -> None:
        self.updates.append(update)
        self._changed.set()
        self._changed = asyncio.Event()

    async def link(self, online: bool, count: int) -> None:
        """Wait for the ``count``-th link update saying ``online``."""
        async with asyncio.timeout(3):
            while self.links().count(online) < count:
                await self._changed.wait()

    def links(self) -> list[bool]:
        return [u.online for u in self.updates if isinstance(u, NodeLink)]


@contextlib.asynccontextmanager
async def running(edge: MemoryEdge, sink: Recorder | None = None) -> AsyncIterator[NodeEngine]:
    engine = NodeEngine(
        [NodeConfig("bay1", 1, 6.0, 5.0, 1.0)],
        edge,
        TIMING,
        one_exchange_at_a_time=False,
        counters={},
        prefix="test",
        where={"link": "memory"},
    )
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(engine.run(sink or Recorder()))
        try:
            yield engine
        finally:
            task.cancel()


def ack_from(engine: NodeEngine, after_s: float = 0.0) -> Reply:
    """A node that acknowledges every command, ``after_s`` later."""
    seq = [0]

    def reply(line: NodeLine, frame: Frame) -> None:
        msg = frame.msg
        if isinstance(msg, SetOutput | Configure):
            seq[0] += 1
            ack = Frame(1, HOST_ADDRESS, seq[0], Ack(msg.cmd_id))
            asyncio.get_running_loop().call_later(after_s, engine.deliver, line, ack)

    return reply


async def test_a_late_ack_to_an_earlier_attempt_answers_the_command() -> None:
    edge = MemoryEdge()
    async with running(edge) as engine:
        await edge.opened()
        edge.reply = ack_from(engine, after_s=TIMING.ack_timeout_s * 1.5)
        await engine.node("bay1").set_output(relay_on=True, current_a=10.0, lease_s=5.0)
        stats = engine.node("bay1").stats()
    sent = [f.msg for f in edge.sent if isinstance(f.msg, SetOutput)]
    assert stats.retries == 1 and len(sent) == 2
    assert sent[0] == sent[1]  # the same command, the same id: the node applies it once
    assert edge.sent[0].seq != edge.sent[1].seq  # numbered anew: retries are frames too


async def test_no_answer_is_a_timeout_after_every_retry() -> None:
    edge = MemoryEdge()
    async with running(edge) as engine:
        await edge.opened()
        with pytest.raises(DriverTimeout):
            await engine.node("bay1").set_output(relay_on=True, current_a=10.0, lease_s=5.0)
        stats = engine.node("bay1").stats()
    assert (stats.retries, stats.timeouts, stats.frames_tx) == (2, 1, 3)


async def test_a_lost_link_fails_the_waiting_command_at_once() -> None:
    slow = LinkTiming(10.0, 0, 30.0, 0.02, 0.08)
    edge = MemoryEdge()
    async with running(edge) as engine:
        engine.timing = slow
        await edge.opened()
        command = asyncio.create_task(
            engine.node("bay1").set_output(relay_on=True, current_a=10.0, lease_s=5.0)
        )
        await asyncio.sleep(0)  # the command goes out (the edge sends at once)
        assert edge.sent
        edge.cut()
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(command, 2.0)  # not the 10 s of its ack deadline


async def test_a_hello_gets_the_node_configured() -> None:
    edge = MemoryEdge()
    sink = Recorder()
    async with running(edge, sink) as engine:
        await edge.opened()
        edge.reply = ack_from(engine)
        line = engine.lines["bay1"]
        engine.deliver(line, Frame(1, HOST_ADDRESS, 1, Hello("fw", 1)))
        assert line.st.needs_config and sink.links() == [True]
        await engine.configure(line)
        assert not line.st.needs_config
    configure = [f.msg for f in edge.sent if isinstance(f.msg, Configure)]
    assert len(configure) == 1 and configure[0] == Configure(configure[0].cmd_id, 6.0, 5.0, 1.0)


async def test_silence_takes_a_node_offline_and_says_why() -> None:
    edge = MemoryEdge()
    sink = Recorder()
    async with running(edge, sink) as engine:
        await edge.opened()
        line = engine.lines["bay1"]
        engine.deliver(line, Frame(1, HOST_ADDRESS, 1, Hello("fw", 1)))
        await sink.link(False, 1)
        engine.deliver(line, Frame(1, HOST_ADDRESS, 2, Hello("fw", 1)))
        edge.refuse = 1000  # the link stays down
        edge.cut()
        await sink.link(False, 2)
    links = [(u.online, u.reason) for u in sink.updates if isinstance(u, NodeLink)]
    assert links == [
        (True, "frame received"),
        (False, "heartbeat timeout"),
        (True, "frame received"),
        (False, "memory link lost"),
    ]


async def test_backoff_grows_while_the_link_carries_nothing_and_starts_over_after_frames() -> None:
    edge = MemoryEdge(refuse=4)
    async with running(edge) as engine:
        await edge.opened(5)
        assert engine.backoff.last_s == TIMING.backoff_max_s  # 0.02, 0.04, 0.08, 0.08
        engine.deliver(engine.lines["bay1"], Frame(1, HOST_ADDRESS, 1, Hello("fw", 1)))
        edge.cut()  # a link that worked: the next pause is short again
        await edge.opened(6)
        assert engine.backoff.last_s == TIMING.backoff_initial_s
        edge.cut()  # a link that carried nothing: the pause doubles
        await edge.opened(7)
        assert engine.backoff.last_s == 2 * TIMING.backoff_initial_s
        assert engine.node("bay1").stats().reconnects == 2
    assert edge.opens == 7
