"""The ESP32 node simulator: firmware rules with a fake clock, control socket, standalone process."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from controller.ports import NodeEventKind, NodeLink, NodeTelemetry, NodeUpdate, PilotState
from drivers.esp32.serial_hub import HubTiming, NodeConfig, SerialNodeHub
from simulators.esp32_node import SimNode, SimulatedBus, specs
from simulators.esp32_node.control import SOCKET_NAME, arequest, serve
from simulators.esp32_node.wire import (
    FLAG_MORE,
    Ack,
    AckStatus,
    Configure,
    Event,
    Frame,
    Heartbeat,
    Hello,
    SetLock,
    SetOutput,
    Telemetry,
)

REPO = Path(__file__).resolve().parents[1]


def is_link(path: str) -> bool:
    return os.path.islink(path)


def exists(path: str) -> bool:
    return os.path.exists(path)


def cmd(node: SimNode, msg: SetOutput | SetLock | Configure | Heartbeat, now: float) -> Frame:
    reply = node.handle(Frame(0, node.address, 1, msg), now)
    assert reply is not None and reply.dst == 0 and reply.src == node.address
    return reply


def kinds(node: SimNode) -> list[NodeEventKind]:
    return [e.kind for e in node.counters.events]


def test_hello_first_then_events_then_telemetry() -> None:
    node = SimNode("bay1", 1, "locker", now=0.0)
    first = cmd(node, Heartbeat(0), 0.0)
    assert isinstance(first.msg, Hello) and first.msg.capabilities >= {"locker", "lock", "door"}
    node.open_door(0.1)
    second = cmd(node, Heartbeat(0), 0.2)
    assert second.msg == Event(NodeEventKind.DOOR_OPENED, "forced") and not second.flags & FLAG_MORE
    third = cmd(node, Heartbeat(0), 0.3)
    assert (
        isinstance(third.msg, Telemetry)
        and third.msg.door_closed is False
        and third.msg.locked is True
    )
    assert isinstance(cmd(node, Heartbeat(0), 0.4).msg, Heartbeat)  # telemetry not due yet


def test_broadcast_and_other_addresses_are_never_answered() -> None:
    node = SimNode("bay1", 1, now=0.0)
    assert node.handle(Frame(0, 0xFF, 1, Heartbeat(0)), 0.0) is None
    assert node.handle(Frame(0, 0xFF, 2, Configure(9, 10.0, 2.0, 1.0)), 0.0) is None
    assert node.safe_current_a == 10.0  # applied, just not answered


def test_ev_follows_setpoint_after_response_delay_and_energy_integrates() -> None:
    node = SimNode("bay1", 1, now=0.0, response_delay_s=2.0)
    cmd(node, Configure(1, 6.0, 1e6, 1.0), 0.0)
    node.plug_in(now=0.0, max_a=16.0, phases=3)
    assert node.physics.pilot() is PilotState.B
    assert cmd(node, SetOutput(2, True, 10.0, 7200.0), 0.0).msg == Ack(2)
    node.tick(1.0)
    assert node.physics.currents() == (0.0, 0.0, 0.0)
    node.tick(2.0)
    assert node.physics.currents() == (10.0, 10.0, 10.0) and node.physics.pilot() is PilotState.C
    node.tick(3602.0)
    assert node.physics.energy_wh == pytest.approx(3 * 10 * 230 * 1.0, rel=1e-6)  # 1 h at 6.9 kW
    t = node.telemetry(3602.0)
    assert t.energy_wh == 6900 and t.current_a == (10.0, 10.0, 10.0)


def test_single_phase_ev_limited_by_its_own_max() -> None:
    node = SimNode("bay1", 1, now=0.0)
    node.plug_in(now=0.0, max_a=13.0, phases=1)
    cmd(node, SetOutput(1, True, 32.0, 10.0), 0.0)
    assert node.physics.currents() == (13.0, 0.0, 0.0)


def test_soc_rises_and_a_full_ev_stops_drawing() -> None:
    node = SimNode("bay1", 1, now=0.0)
    cmd(node, Configure(1, 6.0, 1e6, 1.0), 0.0)
    node.plug_in(now=0.0, max_a=16.0, phases=1, soc_pct=99.0, capacity_wh=1000.0)
    cmd(node, SetOutput(2, True, 16.0, 1e6), 0.0)
    node.tick(10.0)
    assert node.physics.ev is not None and node.physics.ev.soc_pct == pytest.approx(100.0)
    node.tick(11.0)
    assert node.physics.currents() == (0.0, 0.0, 0.0) and node.physics.pilot() is PilotState.B


def test_lease_expiry_falls_to_safe_share_and_never_switches_on() -> None:
    node = SimNode("bay1", 1, now=0.0)
    cmd(node, Configure(1, 8.0, 100.0, 1.0), 0.0)
    cmd(node, SetOutput(2, True, 16.0, 5.0), 0.0)
    node.tick(4.9)
    assert node.physics.setpoint_a == 16.0
    node.tick(5.0)
    assert node.physics.setpoint_a == 8.0 and node.physics.relay_closed
    assert kinds(node) == [NodeEventKind.LEASE_EXPIRED]
    cmd(node, SetOutput(3, False, 0.0, 5.0), 6.0)
    node.tick(20.0)
    assert not node.physics.relay_closed and kinds(node) == [NodeEventKind.LEASE_EXPIRED]


def test_host_silence_below_six_amps_opens_the_relay() -> None:
    node = SimNode("bay1", 1, now=0.0)
    cmd(node, Configure(1, 4.0, 2.0, 1.0), 0.0)
    cmd(node, SetOutput(2, True, 16.0, 60.0), 1.0)
    node.tick(2.9)
    assert node.physics.relay_closed
    node.tick(3.1)
    assert not node.physics.relay_closed and node.host_silent
    assert kinds(node) == [NodeEventKind.HOST_SILENT]
    cmd(node, Heartbeat(0), 4.0)
    assert (
        not node.host_silent and not node.physics.relay_closed
    )  # the host must switch it on again


def test_duplicate_command_is_acked_but_applied_once() -> None:
    node = SimNode("bay1", 1, now=0.0)
    cmd(node, SetOutput(7, True, 10.0, 5.0), 0.0)
    assert cmd(node, SetOutput(7, True, 10.0, 5.0), 4.0).msg == Ack(7)
    assert node.counters.duplicates == 1 and node.lease_until == 5.0  # the retry did not extend it
    cmd(node, SetOutput(7, True, 12.0, 5.0), 4.5)  # same id, new body: a new command (host restart)
    assert node.physics.setpoint_a == 12.0


def test_knobs_overcurrent_stuck_relay_and_rejections() -> None:
    node = SimNode("bay1", 1, now=0.0)
    node.plug_in(now=0.0, max_a=16.0, phases=3)
    cmd(node, SetOutput(1, True, 10.0, 60.0), 0.0)
    node.set_knobs(overcurrent_a=5.0)
    node.tick(1.0)
    assert node.physics.currents()[0] == 15.0 and kinds(node) == [NodeEventKind.FAULT]
    node.set_knobs(overcurrent_a=0.0)
    node.tick(2.0)
    assert kinds(node)[-1] is NodeEventKind.FAULT_CLEARED
    node.set_knobs(stuck_relay=True)
    assert cmd(node, SetOutput(2, False, 0.0, 1.0), 3.0).msg == Ack(2, AckStatus.HW_FAULT)
    assert node.physics.relay_closed
    assert cmd(node, SetLock(3, True), 3.0).msg == Ack(3, AckStatus.UNSUPPORTED)
    assert cmd(node, SetOutput(4, True, 40.0, 1.0), 3.0).msg == Ack(4, AckStatus.INVALID)
    with pytest.raises(ValueError):
        node.set_knobs(bogus=1)


def test_locker_outlet_and_reboot_keeps_energy() -> None:
    node = SimNode("bay1", 1, "locker", now=0.0)
    node.plug_in(now=0.0, charger_a=2.0)
    cmd(node, SetOutput(1, True, 3.0, 3600.0), 0.0)
    assert node.physics.currents() == (2.0, 0.0, 0.0)
    node.tick(3600.0)
    assert node.physics.energy_wh == pytest.approx(460.0)
    node.reboot(3600.0)
    assert node.hello_pending and not node.configured and not node.physics.relay_closed
    assert node.physics.energy_wh == pytest.approx(460.0)


def test_plug_and_boot_counters_survive_host_silence_and_reboots() -> None:
    node = SimNode("bay1", 1, now=0.0, boot_id=41, serial="A4CF12E8")
    hello = cmd(node, Heartbeat(1000), 0.0).msg
    assert isinstance(hello, Hello) and "continuity" in hello.capabilities
    assert (hello.boot_id, hello.serial) == (41, "A4CF12E8")
    node.plug_in(now=0.0)
    node.tick(30.0)  # the host is silent: failsafe, but the counters stay
    tel = node.telemetry(30.0)
    assert (tel.plug_count, tel.boot_id) == (0, 41)
    node.unplug(31.0)
    node.unplug(32.0)  # nothing plugged: not counted
    node.plug_in(now=33.0)
    assert node.telemetry(33.0).plug_count == 1
    node.reboot(40.0)
    tel = node.telemetry(40.0)
    assert (tel.plug_count, tel.boot_id) == (1, 42)
    hello = cmd(node, Heartbeat(5000), 40.1).msg
    assert isinstance(hello, Hello) and hello.boot_id == 42


def test_a_restarted_host_is_greeted_again_old_firmware_stays_quiet() -> None:
    new, old = SimNode("a", 1, now=0.0), SimNode("b", 2, now=0.0, continuity=False)
    for node in (new, old):
        assert isinstance(cmd(node, Heartbeat(9000), 0.0).msg, Hello)
        assert not isinstance(cmd(node, Heartbeat(9200), 0.1).msg, Hello)
        # The host restarted: its uptime went back.
        again = cmd(node, Heartbeat(100), 0.2).msg
        assert isinstance(again, Hello) is (node is new)
    tel = old.telemetry(1.0)
    assert tel.plug_count is None and tel.boot_id is None
    assert isinstance(cmd(old, Heartbeat(0), 0.0).msg, Heartbeat | Telemetry)


async def test_fake_clock_drives_the_bus(tmp_path: Path) -> None:
    now = [100.0]
    async with SimulatedBus(tmp_path, specs(1), clock=lambda: now[0]) as bus:
        node = bus.nodes["bay1"]
        cmd(node, Configure(1, 0.0, 60.0, 1.0), now[0])
        cmd(node, SetOutput(2, True, 16.0, 5.0), now[0])
        now[0] += 6.0
        await bus.wait_until(
            lambda: node.physics.setpoint_a == 0.0 and not node.physics.relay_closed
        )
        assert kinds(node) == [NodeEventKind.LEASE_EXPIRED]
        assert is_link(bus.port_path)
    assert not exists(bus.port_path)


async def test_control_socket(tmp_path: Path) -> None:
    async with SimulatedBus(tmp_path, specs(2)) as bus, asyncio.TaskGroup() as tg:
        ready = asyncio.Event()
        server = tg.create_task(serve(bus, tmp_path / SOCKET_NAME, ready))
        await ready.wait()
        state = await arequest(tmp_path, "plug_in", "bay2", max_a=20, phases=1)
        assert state["pilot"] == "B" and bus.nodes["bay2"].physics.ev is not None
        await arequest(tmp_path, "knobs", "bay1", drop_next=3)
        assert bus.nodes["bay1"].knobs.drop_next == 3
        with pytest.raises(RuntimeError, match="Unknown request"):
            await arequest(tmp_path, "explode", "bay1")
        await arequest(tmp_path, "unplug_usb")
        assert not exists(bus.port_path)
        await arequest(tmp_path, "replug_usb")
        assert is_link(bus.port_path)
        everything = await arequest(tmp_path, "state")
        assert set(everything) == {"bay1", "bay2"}
        server.cancel()


async def test_standalone_process_with_a_controller_in_this_one(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.esp32_node",
        "--dir",
        str(tmp_path),
        "--nodes",
        "2",
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            while not (line := (await proc.stdout.readline()).decode()).startswith("READY"):
                assert line, "simulator exited"
        port = line.split()[1]
        online = asyncio.Event()
        charging = asyncio.Event()

        def sink(u: NodeUpdate) -> None:
            if isinstance(u, NodeLink) and u.node_id == "bay2" and u.online:
                online.set()
            if isinstance(u, NodeTelemetry) and u.node_id == "bay2" and u.current_a[0] == 12.0:
                charging.set()

        timing = HubTiming(poll_period_s=0.05)
        nodes = [NodeConfig("bay1", 1, 6.0), NodeConfig("bay2", 2, 6.0, 5.0, 0.1)]
        hub = SerialNodeHub(port, 115200, nodes, timing=timing)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(hub.run(sink))
            await arequest(tmp_path, "plug_in", "bay2", max_a=12, phases=1)
            async with asyncio.timeout(5):
                await online.wait()
                await hub.node("bay2").set_output(relay_on=True, current_a=16.0, lease_s=5.0)
                await charging.wait()
            task.cancel()
    finally:
        proc.terminate()
        assert await proc.wait() == 0
