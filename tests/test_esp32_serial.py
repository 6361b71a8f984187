"""SerialNodeHub against the node simulator over a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from controller.core.config import parse_config
from controller.ports import (
    BayNode,
    ConnectionLost,
    DriverTimeout,
    NodeEvent,
    NodeEventKind,
    NodeHello,
    NodeHub,
    NodeLink,
    NodeTelemetry,
    NodeUpdate,
    PermanentError,
)
from drivers.esp32.assemble import build_serial
from drivers.esp32.codec import encode
from drivers.esp32.messages import AckStatus, Frame, Heartbeat
from drivers.esp32.serial_hub import CommandRejected, HubTiming, NodeConfig, SerialNodeHub
from simulators.esp32_node import SimNodeSpec, SimulatedBus, specs

FAST = HubTiming(
    ack_timeout_s=0.1,
    retries=3,
    offline_after_s=0.8,
    poll_period_s=0.05,
    offline_poll_period_s=0.1,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
)
# Polls only at start-up (hello, configure): commands then own the bus, so fault counters are exact.
QUIET = HubTiming(ack_timeout_s=0.1, retries=3, offline_after_s=60.0, poll_period_s=30.0)


def test_the_hub_implements_the_ports() -> None:
    hub: NodeHub = SerialNodeHub("/dev/null", 115200, configs(1))
    node: BayNode = hub.node("bay1")
    assert node.node_id == "bay1"


class Collector:
    """The hub's sink; tests await what they expect instead of sleeping."""

    def __init__(self) -> None:
        self.updates: list[NodeUpdate] = []
        self._changed = asyncio.Event()

    def __call__(self, update: NodeUpdate) -> None:
        self.updates.append(update)
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(
        self, pred: Callable[[NodeUpdate], bool], *, after: int = 0, limit_s: float = 3.0
    ) -> int:
        """Index of the first update after ``after`` that matches."""
        async with asyncio.timeout(limit_s):
            while True:
                for i in range(after, len(self.updates)):
                    if pred(self.updates[i]):
                        return i
                await self._changed.wait()


def link(node_id: str, online: bool) -> Callable[[NodeUpdate], bool]:
    return lambda u: isinstance(u, NodeLink) and u.node_id == node_id and u.online is online


def event(node_id: str, kind: NodeEventKind) -> Callable[[NodeUpdate], bool]:
    return lambda u: isinstance(u, NodeEvent) and u.node_id == node_id and u.kind is kind


def telemetry(node_id: str, setpoint_a: float) -> Callable[[NodeUpdate], bool]:
    return lambda u: (
        isinstance(u, NodeTelemetry) and u.node_id == node_id and u.setpoint_a == setpoint_a
    )


def configs(n: int, safe_a: float = 6.0, host_timeout_s: float = 5.0) -> list[NodeConfig]:
    return [NodeConfig(f"bay{i}", i, safe_a, host_timeout_s, 0.1) for i in range(1, n + 1)]


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    sim: Sequence[SimNodeSpec],
    nodes: Sequence[NodeConfig],
    timing: HubTiming = FAST,
) -> AsyncIterator[tuple[SimulatedBus, SerialNodeHub, Collector]]:
    async with SimulatedBus(tmp_path, sim) as bus:
        hub = SerialNodeHub(bus.port_path, 115200, nodes, timing=timing)
        sink = Collector()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(hub.run(sink))
            try:
                await bus.wait_until(lambda: all(bus.nodes[c.node_id].configured for c in nodes))
                yield bus, hub, sink
            finally:
                task.cancel()


async def test_command_is_acked_and_applied(tmp_path: Path) -> None:
    async with running(tmp_path, specs(1), configs(1)) as (bus, hub, sink):
        sim = bus.nodes["bay1"]
        await hub.node("bay1").set_output(relay_on=True, current_a=13.5, lease_s=5.0)
        assert sim.physics.relay_closed and sim.physics.setpoint_a == 13.5
        assert 4.9 < sim.lease_remaining(bus.clock()) <= 5.0
        await hub.node("bay1").set_output(relay_on=False, current_a=0.0, lease_s=5.0)
        assert not sim.physics.relay_closed
        stats = hub.node("bay1").stats()
        assert stats.frames_rx >= 3 and stats.frames_tx >= 3 and stats.firmware == "sim-esp32/1.0.0"
        assert stats.retries == 0 and stats.bad_frames == 0
        hello = await sink.wait_for(lambda u: isinstance(u, NodeHello))
        assert (
            isinstance(sink.updates[hello], NodeHello)
            and "evse" in sink.updates[hello].capabilities
        )  # type: ignore[union-attr]


async def test_telemetry_reports_the_ev_drawing_the_setpoint(tmp_path: Path) -> None:
    async with running(tmp_path, specs(1), configs(1)) as (bus, hub, sink):
        bus.nodes["bay1"].plug_in(max_a=10.0, phases=3)
        await hub.node("bay1").set_output(relay_on=True, current_a=16.0, lease_s=5.0)

        def charging(u: NodeUpdate) -> bool:
            return isinstance(u, NodeTelemetry) and u.current_a == (10.0, 10.0, 10.0)

        i = await sink.wait_for(charging)
        t = sink.updates[i]
        assert (
            isinstance(t, NodeTelemetry)
            and t.pilot.value == "C"
            and t.setpoint_a == 16.0
            and t.relay_on
        )


async def test_locker_lock_and_door_events(tmp_path: Path) -> None:
    sim = [SimNodeSpec("bay1", 1, "locker")]
    async with running(tmp_path, sim, configs(1, safe_a=2.0)) as (bus, hub, sink):
        await hub.node("bay1").set_lock(locked=False)
        assert not bus.nodes["bay1"].physics.locked
        await sink.wait_for(event("bay1", NodeEventKind.UNLOCKED))
        bus.nodes["bay1"].open_door()
        await sink.wait_for(event("bay1", NodeEventKind.DOOR_OPENED))
        bus.nodes["bay1"].close_door()
        await sink.wait_for(event("bay1", NodeEventKind.DOOR_CLOSED))


async def test_retries_when_the_node_drops_frames(tmp_path: Path) -> None:
    async with running(tmp_path, specs(1), configs(1), QUIET) as (bus, hub, _):
        sim = bus.nodes["bay1"]
        applied = sim.counters.commands_applied
        sim.knobs.drop_next = 2
        await hub.node("bay1").set_output(relay_on=True, current_a=10.0, lease_s=5.0)
        assert hub.node("bay1").stats().retries == 2
        assert sim.counters.dropped == 2 and sim.counters.commands_applied == applied + 1

        sim.knobs.drop_next = 10
        with pytest.raises(DriverTimeout):
            await hub.node("bay1").set_output(relay_on=True, current_a=11.0, lease_s=5.0)
        assert hub.node("bay1").stats().timeouts == 1
        assert sim.counters.dropped == 6  # 1 + 3 retries


async def test_lost_ack_is_retried_and_not_applied_twice(tmp_path: Path) -> None:
    async with running(tmp_path, specs(1), configs(1), QUIET) as (bus, hub, _):
        sim = bus.nodes["bay1"]
        applied = sim.counters.commands_applied
        sim.knobs.corrupt_next = 1  # the node applies the command, its ack is garbled
        await hub.node("bay1").set_output(relay_on=True, current_a=10.0, lease_s=5.0)
        stats = hub.node("bay1").stats()
        assert stats.bad_frames == 1 and stats.retries == 1
        assert sim.counters.commands_applied == applied + 1 and sim.counters.duplicates == 1


async def test_garbage_on_the_line_is_counted_and_the_stream_resyncs(tmp_path: Path) -> None:
    async with running(tmp_path, specs(1), configs(1), QUIET) as (bus, hub, _):
        bus.inject(b"\x01\x02\x03noise\x00\xff\xfe")
        # The garbage reaches the host before this ack, on the same byte stream.
        await hub.node("bay1").set_output(relay_on=True, current_a=8.0, lease_s=5.0)
        # Two bad frames (the noise before and after its 0x00); the ack's leading 0x00 saved the ack.
        stats = hub.node("bay1").stats()
        assert hub.bus_stats["unattributed_bad_frames"] + stats.bad_frames == 2
        assert stats.retries == 0
        await hub.node("bay1").set_output(relay_on=True, current_a=9.0, lease_s=5.0)
        assert bus.nodes["bay1"].physics.setpoint_a == 9.0


async def test_lease_expiry_falls_to_safe_share(tmp_path: Path) -> None:
    sim = specs(2)
    nodes = [NodeConfig("bay1", 1, 8.0, 5.0, 0.1), NodeConfig("bay2", 2, 0.0, 5.0, 0.1)]
    async with running(tmp_path, sim, nodes) as (bus, hub, sink):
        await hub.node("bay1").set_output(relay_on=True, current_a=16.0, lease_s=0.3)
        await hub.node("bay2").set_output(relay_on=True, current_a=16.0, lease_s=0.3)
        await sink.wait_for(event("bay1", NodeEventKind.LEASE_EXPIRED))
        await sink.wait_for(event("bay2", NodeEventKind.LEASE_EXPIRED))
        one, two = bus.nodes["bay1"].physics, bus.nodes["bay2"].physics
        assert one.relay_closed and one.setpoint_a == 8.0
        assert not two.relay_closed  # a safe share below 6 A opens the relay


async def test_host_silent_falls_to_safe_share(tmp_path: Path) -> None:
    nodes = configs(1, safe_a=6.0, host_timeout_s=0.3)
    async with SimulatedBus(tmp_path, specs(1)) as bus:
        sim = bus.nodes["bay1"]
        hub = SerialNodeHub(bus.port_path, 115200, nodes, timing=FAST)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(hub.run(Collector()))
            await bus.wait_until(lambda: sim.configured)
            await hub.node("bay1").set_output(relay_on=True, current_a=16.0, lease_s=60.0)
            assert not sim.host_silent
            task.cancel()  # the controller dies: no more heartbeats
        await bus.wait_until(lambda: sim.host_silent, limit_s=2.0)
        assert sim.physics.setpoint_a == 6.0 and sim.physics.relay_closed
        assert sim.lease_until is None

        # A new controller process hears about it and gets the node configured again.
        hub2 = SerialNodeHub(bus.port_path, 115200, nodes, timing=FAST)
        sink = Collector()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(hub2.run(sink))
            await sink.wait_for(event("bay1", NodeEventKind.HOST_SILENT))
            assert not sim.host_silent
            task.cancel()


async def test_heartbeat_lost_then_back(tmp_path: Path) -> None:
    async with running(tmp_path, specs(2), configs(2)) as (bus, hub, sink):
        up = await sink.wait_for(link("bay1", True))
        configured = bus.nodes["bay1"].counters.commands_applied
        bus.nodes["bay1"].knobs.silent = True
        down = await sink.wait_for(link("bay1", False), after=up)
        assert sink.updates[down].reason == "heartbeat timeout"  # type: ignore[union-attr]
        with pytest.raises(DriverTimeout):
            await hub.node("bay1").set_output(relay_on=True, current_a=10.0, lease_s=1.0)
        await hub.node("bay2").set_output(
            relay_on=True, current_a=10.0, lease_s=1.0
        )  # the bus still works
        bus.nodes["bay1"].knobs.silent = False
        await sink.wait_for(link("bay1", True), after=down)
        await bus.wait_until(lambda: bus.nodes["bay1"].counters.commands_applied > configured)
        assert not any(link("bay2", False)(u) for u in sink.updates)


async def test_unplug_and_replug_reconnects_with_backoff(tmp_path: Path) -> None:
    async with running(tmp_path, specs(1), configs(1)) as (bus, hub, sink):
        up = await sink.wait_for(link("bay1", True))
        with capture_logs() as logs:
            bus.unplug_usb()
            down = await sink.wait_for(link("bay1", False), after=up)
            assert sink.updates[down].reason == "serial link lost"  # type: ignore[union-attr]
            with pytest.raises(ConnectionLost):
                await hub.node("bay1").set_output(relay_on=True, current_a=10.0, lease_s=1.0)
            failures = hub.bus_stats["open_failures"]
            assert 3 <= failures <= 10  # 0.05, 0.1, 0.2, 0.2 ... not a busy loop
            assert hub.last_backoff_s == FAST.backoff_max_s
            bus.replug_usb()
            await sink.wait_for(link("bay1", True), after=down)
        assert [e["event"] for e in logs].count("esp32.link_down") == 1
        assert [e["event"] for e in logs].count("esp32.link_up") == 1
        await hub.node("bay1").set_output(relay_on=True, current_a=10.0, lease_s=1.0)
        assert hub.node("bay1").stats().reconnects == 1 and hub.bus_stats["opens"] == 2


async def test_several_nodes_share_one_bus(tmp_path: Path) -> None:
    async with running(tmp_path, specs(4), configs(4)) as (bus, hub, sink):
        async with asyncio.TaskGroup() as tg:
            for i in range(1, 5):
                tg.create_task(
                    hub.node(f"bay{i}").set_output(relay_on=True, current_a=6.0 + i, lease_s=5.0)
                )
        assert [bus.nodes[f"bay{i}"].physics.setpoint_a for i in range(1, 5)] == [
            7.0,
            8.0,
            9.0,
            10.0,
        ]
        for i in range(1, 5):
            await sink.wait_for(telemetry(f"bay{i}", setpoint_a=6.0 + i))


async def test_unknown_address_is_counted_and_logged_once(tmp_path: Path) -> None:
    async with running(tmp_path, specs(1), configs(1), QUIET) as (bus, hub, _):
        with capture_logs() as logs:
            for seq in (1, 2):
                bus.inject(encode(Frame(src=99, dst=0, seq=seq, msg=Heartbeat(5))))
            await hub.node("bay1").set_output(relay_on=True, current_a=8.0, lease_s=5.0)
        assert hub.bus_stats["unknown_address"] == 2
        assert [e["event"] for e in logs].count("esp32.unknown_address") == 1


async def test_rejections_are_permanent_errors(tmp_path: Path) -> None:
    async with running(tmp_path, specs(1), configs(1), QUIET) as (bus, hub, _):
        with pytest.raises(CommandRejected) as info:
            await hub.node("bay1").set_lock(locked=True)  # an EVSE without a lock
        assert info.value.status is AckStatus.UNSUPPORTED
        with pytest.raises(CommandRejected):
            await hub.node("bay1").set_output(relay_on=True, current_a=40.0, lease_s=1.0)
        with pytest.raises(PermanentError):
            await hub.node("bay1").set_output(relay_on=True, current_a=-1.0, lease_s=1.0)
        with pytest.raises(PermanentError):
            hub.node("nope")
        bus.nodes["bay1"].set_knobs(stuck_relay=True)
        with pytest.raises(CommandRejected) as info:
            await hub.node("bay1").set_output(relay_on=False, current_a=0.0, lease_s=1.0)
        assert info.value.status is AckStatus.HW_FAULT


async def test_cancel_while_waiting_for_an_ack_stays_a_cancel(tmp_path: Path) -> None:
    async with running(tmp_path, specs(1), configs(1), QUIET) as (bus, hub, _):
        bus.nodes["bay1"].knobs.silent = True
        task = asyncio.create_task(
            hub.node("bay1").set_output(relay_on=True, current_a=8.0, lease_s=1.0)
        )
        await bus.wait_until(lambda: hub.node("bay1").stats().frames_tx > 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        bus.nodes["bay1"].knobs.silent = False
        await hub.node("bay1").set_output(
            relay_on=True, current_a=8.0, lease_s=1.0
        )  # lock released


async def test_the_poll_period_is_honoured_and_every_poll_reaps_telemetry(tmp_path: Path) -> None:
    # A bus polled as often as its nodes report: each poll is answered by a TELEMETRY (the
    # node is configured half a poll early), and no node is polled more often than that.
    period = 0.5
    timing = HubTiming(ack_timeout_s=0.1, retries=3, offline_after_s=3.0, poll_period_s=period)
    nodes = [NodeConfig("bay1", 1, 6.0, 5.0, period)]
    async with running(tmp_path, specs(1), nodes, timing) as (bus, _, _):
        sim = bus.nodes["bay1"]
        assert sim.telemetry_period_s == pytest.approx(period / 2)
        polls: list[tuple[float, str]] = []
        handle = sim.handle

        def spy(frame: Any, now: float) -> Any:  # the simulator's own frame classes
            reply = handle(frame, now)
            if type(frame.msg).__name__ == "Heartbeat" and reply is not None:
                polls.append((now, type(reply.msg).__name__))
            return reply

        sim.handle = spy  # type: ignore[method-assign]
        await bus.wait_until(lambda: len(polls) >= 5, 10)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(polls)]
    assert min(gaps) > period * 0.8, gaps  # not the default 0.2 s, nor MORE polls
    assert {kind for _, kind in polls} == {"Telemetry"}, polls


async def test_a_command_does_not_wait_for_the_next_poll(tmp_path: Path) -> None:
    # Configured from a station config with a slow poll: the setpoint still goes out at once.
    cfg = parse_config(
        {
            "timers": {"lease_s": 40, "node_offline_s": 20},
            "buses": [
                {
                    "id": "b",
                    "port": "x",
                    "poll_period_s": 10,
                    "telemetry_period_s": 10,
                    "host_timeout_s": 60,
                }
            ],
            "bays": [{"id": "bay1", "connector": 1, "bus": "b", "address": 1}],
        }
    )
    async with SimulatedBus(tmp_path, specs(1)) as bus:
        hub = build_serial(cfg.buses[0].model_copy(update={"port": bus.port_path}), cfg.bays, cfg)
        assert hub.timing.poll_period_s == 10 and hub.timing.offline_after_s == 20
        sim = bus.nodes["bay1"]
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(hub.run(Collector()))
            try:
                await bus.wait_until(lambda: sim.configured)
                assert sim.telemetry_period_s == pytest.approx(10 - 10 / 2)
                async with asyncio.timeout(5):  # far below the 10 s to the next poll
                    await hub.node("bay1").set_output(relay_on=True, current_a=10.0, lease_s=40)
                assert sim.physics.setpoint_a == 10.0
            finally:
                task.cancel()


def test_the_port_reads_once_when_readable_and_reports_a_lost_device() -> None:
    """The hub's port reads with one ``read(2)`` (no ``select`` first) on a real pseudo-terminal,
    called as the event loop calls it, once the port is readable: what is there, and a lost
    device (readable, then no data or EIO) as pyserial's error, which ends the transport."""
    import os
    import pty
    import select

    import serial

    from drivers.esp32.serial_hub import _Port

    master, slave = pty.openpty()
    port = _Port(os.ttyname(slave), 115200)
    os.close(slave)
    try:
        port.timeout = 0  # as the asyncio transport sets it

        def readable() -> bool:
            return bool(select.select([port.fd], [], [], 5.0)[0])

        os.write(master, b"\x00frame\x00")
        got = b""
        while got != b"\x00frame\x00" and readable():
            got += port.read(1024)
        assert got == b"\x00frame\x00"
        os.close(master)
        master = -1
        assert readable()
        with pytest.raises(serial.SerialException):
            port.read(1024)
    finally:
        port.close()
        if master >= 0:
            os.close(master)
