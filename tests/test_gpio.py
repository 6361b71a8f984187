"""GPIO bays, locks and the emergency stop with gpiozero's MockFactory pins.

Inputs are driven with ``pin.drive_low()/drive_high()``; a lock's feedback is
wired to its output with ``MockConnectedPin`` (a lock that works) or left
alone (a jammed lock). Station tests use a real Station and a real Journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockConnectedPin, MockFactory

from controller.core.auth import free_vend_step
from controller.core.config import StationConfig, parse_config
from controller.core.journal import Journal
from controller.core.station import Station
from controller.ports import DriverTimeout, NodeEvent, NodeEventKind, NodeUpdate, PermanentError
from drivers.gpio import GpioDoorLock, GpioHub, build_gpio
from drivers.gpio.config import InputPin, LockConfig, OutputPin, check_gpio, parse_gpio
from drivers.gpio.extension import EXTENSION
from tests.support.watch import BayWatcher

DEBOUNCE = 0.02
LOCK_OUT, LOCK_FB, DOOR, RELAY1, LED, BUZZER, RELAY2, ESTOP = 6, 13, 19, 5, 26, 21, 12, 4


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    """A MockFactory injected as gpiozero's pin factory (config ``pin_factory = "default"``)."""
    previous = Device.pin_factory
    factory = MockFactory()
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = previous


def working_lock(factory: MockFactory) -> None:
    """The lock's feedback follows its output (energized = locked)."""
    factory.pin(LOCK_OUT, pin_class=MockConnectedPin, input_pin=factory.pin(LOCK_FB))


class Recorder:
    def __init__(self) -> None:
        self.updates: list[NodeUpdate] = []
        self._changed = asyncio.Event()

    def __call__(self, update: NodeUpdate) -> None:
        self.updates.append(update)
        self._changed.set()

    def events(self, kind: NodeEventKind) -> list[NodeEvent]:
        return [u for u in self.updates if isinstance(u, NodeEvent) and u.kind is kind]

    async def wait_for(self, pred: Callable[[NodeUpdate], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(pred(u) for u in self.updates):
                self._changed.clear()
                await self._changed.wait()


def lock_cfg(confirm_s: float = 0.3) -> LockConfig:
    return LockConfig(
        output=OutputPin(pin=LOCK_OUT),
        mode="hold",
        energized="locked",
        feedback=InputPin(pin=LOCK_FB, active_high=True, pull="down", debounce_s=DEBOUNCE),
        confirm_s=confirm_s,
    )


def door_cfg() -> InputPin:
    return InputPin(pin=DOOR, active_high=False, pull="up", debounce_s=DEBOUNCE)


@contextlib.asynccontextmanager
async def door_lock(lock: LockConfig | None, rec: Recorder) -> AsyncIterator[GpioDoorLock]:
    dl = GpioDoorLock("bay1", lock, door_cfg())
    task = asyncio.create_task(dl.run(rec))
    try:
        await asyncio.wait_for(dl.opened.wait(), 5)  # run() claims the pins in a worker thread
        yield dl
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --------------------------------------------------------------------------- lock and door


async def test_lock_confirms_through_its_feedback(pins: MockFactory) -> None:
    working_lock(pins)
    rec = Recorder()
    async with door_lock(lock_cfg(), rec) as dl:
        await dl.set_locked(True)
        assert dl.locked is True and pins.pin(LOCK_OUT).state
        await dl.set_locked(False)
        assert dl.locked is False
        assert [e.kind for e in rec.updates if isinstance(e, NodeEvent)] == [
            NodeEventKind.LOCKED,
            NodeEventKind.UNLOCKED,
        ]


async def test_lock_that_never_reports_locked_is_a_lock_fault(pins: MockFactory) -> None:
    rec = Recorder()  # feedback pin not connected: the bolt is jammed
    async with door_lock(lock_cfg(confirm_s=0.2), rec) as dl:
        with pytest.raises(DriverTimeout, match="did not report locked"):
            await dl.set_locked(True)
        assert pins.pin(LOCK_OUT).state  # it did try
        assert dl.faults == 1 and dl.locked is False
        assert not rec.events(NodeEventKind.LOCKED)


async def test_bouncing_door_contact_gives_one_event(pins: MockFactory) -> None:
    rec = Recorder()
    async with door_lock(None, rec) as dl:
        assert dl.door_closed is False  # pulled up, contact open
        door = pins.pin(DOOR)
        for _ in range(5):  # the contact chatters as it closes
            door.drive_low()
            door.drive_high()
        door.drive_low()
        await rec.wait_for(lambda u: isinstance(u, NodeEvent))
        assert [e.kind for e in rec.updates if isinstance(e, NodeEvent)] == [
            NodeEventKind.DOOR_CLOSED
        ]
        assert dl.door_closed is True
        # A glitch shorter than the debounce time is no change at all.
        door.drive_high()
        door.drive_low()
        await asyncio.sleep(DEBOUNCE * 3)  # nothing to await: the point is that nothing happens
        assert dl._door is not None and dl._door.edges == 13
        assert len(rec.updates) == 1


async def test_door_opened_while_locked_is_a_tamper(pins: MockFactory) -> None:
    working_lock(pins)
    rec = Recorder()
    async with door_lock(lock_cfg(), rec) as dl:
        pins.pin(DOOR).drive_low()
        await rec.wait_for(
            lambda u: isinstance(u, NodeEvent) and u.kind is NodeEventKind.DOOR_CLOSED
        )
        await dl.set_locked(True)
        pins.pin(DOOR).drive_high()
        await rec.wait_for(
            lambda u: isinstance(u, NodeEvent) and u.kind is NodeEventKind.DOOR_OPENED
        )
        (opened,) = rec.events(NodeEventKind.DOOR_OPENED)
        assert opened.detail == "forced" and dl.tampers == 1


# --------------------------------------------------------------------------- hub


def gpio_section(**over: Any) -> dict[str, Any]:
    return {
        "pin_factory": "default",
        "telemetry_period_s": 0.2,
        "hardware_watchdog": True,
        "released_pins": "input",
        "emergency_stop": {
            "pin": ESTOP,
            "active_high": False,
            "pull": "up",
            "debounce_s": DEBOUNCE,
        },
        "bays": [
            {
                "node": "bay1",
                "relay": {"pin": RELAY1, "failsafe": "pull_down"},
                "lock": lock_cfg().model_dump(),
                "door": door_cfg().model_dump(),
                "led": {"pin": LED},
                "buzzer": {"pin": BUZZER},
                "current_a": 1.0,
            },
            {
                "node": "bay2",
                "relay": {"pin": RELAY2, "failsafe": "pull_down"},
                "current_a": 6.0,
            },
        ],
        **over,
    }


async def test_relay_lease_expires_without_renewal(pins: MockFactory) -> None:
    hub = GpioHub(parse_gpio(gpio_section()), [("bay2", 0.0)])
    rec = Recorder()
    task = asyncio.create_task(hub.run(rec))
    try:
        await asyncio.wait_for(hub.running.wait(), 5)
        await hub.node("bay2").set_output(relay_on=True, current_a=6.0, lease_s=0.2)
        assert pins.pin(RELAY2).state
        await rec.wait_for(
            lambda u: isinstance(u, NodeEvent) and u.kind is NodeEventKind.LEASE_EXPIRED
        )
        assert not pins.pin(RELAY2).state
        await hub.node("bay2").set_output(relay_on=False, current_a=0.0, lease_s=1.0)
        with pytest.raises(PermanentError):
            await hub.node("bay1").set_output(relay_on=True, current_a=-1.0, lease_s=1.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not pins.pin(RELAY2).state


async def test_the_lease_is_a_task_of_the_hub_not_a_thread(pins: MockFactory) -> None:
    hub = GpioHub(parse_gpio(gpio_section()), [("bay2", 0.0)])
    rec = Recorder()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(hub.run(rec))
        await asyncio.wait_for(hub.running.wait(), 5)
        await hub.node("bay2").set_output(relay_on=True, current_a=6.0, lease_s=30.0)
        assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
        lease = [t for t in asyncio.all_tasks() if t.get_name() == "gpio-lease:bay2"]
        assert len(lease) == 1 and not lease[0].done()
        # Renewed with a short lease, it expires on the loop: relay off, event reported.
        await hub.node("bay2").set_output(relay_on=True, current_a=6.0, lease_s=0.1)
        await rec.wait_for(
            lambda u: isinstance(u, NodeEvent) and u.kind is NodeEventKind.LEASE_EXPIRED
        )
        assert not pins.pin(RELAY2).state and hub.node("bay2").setpoint_a == 0.0
        await hub.node("bay2").set_output(relay_on=True, current_a=6.0, lease_s=30.0)
        task.cancel()
    assert lease[0].done()  # the hub's TaskGroup ended it with the hub
    assert not pins.pin(RELAY2).state  # and the hub's stop opened the relay


@pytest.mark.parametrize(
    ("active_high", "failsafe", "off_level"), [(True, "pull_down", False), (False, "pull_up", True)]
)
async def test_a_released_relay_pin_falls_to_its_failsafe_level(
    pins: MockFactory, active_high: bool, failsafe: str, off_level: bool
) -> None:
    """The process dies with the relay on: nothing of ours runs, the pins are just let go."""
    section = gpio_section()
    section["bays"][1]["relay"] = {"pin": RELAY2, "active_high": active_high, "failsafe": failsafe}
    hub = GpioHub(parse_gpio(section), [("bay2", 0.0)])
    node = hub.node("bay2")
    await asyncio.to_thread(node.open, Recorder(), asyncio.get_running_loop())
    await node.set_output(relay_on=True, current_a=6.0, lease_s=30.0)
    relay = pins.pin(RELAY2)
    assert relay.state is (not off_level) and relay.function == "output"
    pins.close()  # what the kernel does with a dead process's lines: inputs again
    assert relay.function == "input" and relay.state is off_level


async def test_an_orderly_stop_leaves_the_relay_pin_pulled_off(pins: MockFactory) -> None:
    hub = GpioHub(parse_gpio(gpio_section()), [("bay2", 0.0)])
    task = asyncio.create_task(hub.run(Recorder()))
    await asyncio.wait_for(hub.running.wait(), 5)
    await hub.node("bay2").set_output(relay_on=True, current_a=6.0, lease_s=30.0)
    task.cancel()
    await asyncio.wait([task])
    relay = pins.pin(RELAY2)
    assert relay.function == "input" and relay.pull == "down" and not relay.state


async def test_a_relay_on_a_pin_with_a_fixed_opposite_pull_is_refused(pins: MockFactory) -> None:
    section = gpio_section()
    section["bays"][1]["relay"] = {"pin": 2, "failsafe": "pull_down"}  # GPIO2: 1.8 kΩ pull-up
    hub = GpioHub(parse_gpio(section), [("bay2", 0.0)])
    with pytest.raises(PermanentError, match="output pin 2"):
        await asyncio.wait_for(hub.run(Recorder()), 5)


# --------------------------------------------------------------------------- through a station


def station_cfg(tmp: Path, kinds: tuple[str, str]) -> StationConfig:
    return parse_config(
        {
            "station": {"id": "gpio-1", "data_dir": str(tmp)},
            "timers": {"tick_s": 0.05, "lease_s": 3.0},
            "buses": [{"id": "pi", "transport": "gpio"}],
            "bays": [
                {"id": "bay1", "connector": 1, "kind": kinds[0], "bus": "pi", "address": 1},
                {"id": "bay2", "connector": 2, "kind": kinds[1], "bus": "pi", "address": 2},
            ],
            "gpio": gpio_section(),
        }
    )


class Rig(BayWatcher):
    def __init__(self, station: Station) -> None:
        super().__init__(station)


@contextlib.asynccontextmanager
async def gpio_station(tmp: Path, kinds: tuple[str, str]) -> AsyncIterator[Rig]:
    cfg = station_cfg(tmp, kinds)
    assert EXTENSION.check(cfg) == []
    hub = build_gpio(cfg.buses[0], list(cfg.bays), cfg)
    journal = await Journal.open(tmp / "journal.sqlite3")
    station = Station(cfg, journal, hubs={"pi": hub})
    station.authorizer.add(free_vend_step())
    await station.restore()
    EXTENSION.attach(station)
    task = asyncio.create_task(station.run())
    try:
        yield Rig(station)
    finally:
        station.request_stop("test")
        await asyncio.wait_for(task, 5)
        await journal.close()


async def test_forced_door_stops_the_session_and_sounds_the_alarm(
    tmp_path: Path, pins: MockFactory
) -> None:
    working_lock(pins)
    door = pins.pin(DOOR)
    door.drive_low()  # closed before the station starts
    async with gpio_station(tmp_path, ("locker", "evse")) as rig:
        await rig.status("bay1", "Available")
        out = await rig.station.commands.present_token("bay1", "TOKEN-1")
        assert out.ok, out
        await rig.status("bay1", "Charging")  # relay on, the outlet's 1 A counts as drawing
        assert pins.pin(RELAY1).state
        door.drive_high()  # the driver puts the e-bike in ...
        await rig.until("bay1", lambda s: s["door_closed"] is False)
        door.drive_low()  # ... and closes the door: the station locks it
        await rig.until("bay1", lambda s: s["locked"] is True)
        assert pins.pin(LOCK_FB).state

        door.drive_high()  # crowbar
        snap = await rig.until("bay1", lambda s: s["session"] is None)
        assert snap["door_closed"] is False
        row = await rig.station.journal.session(out.session_id or "")
        assert row is not None and row["stop_reason"] == "DoorForced"
        await rig.until("bay1", lambda s: s["relay_on"] is False)
        assert not pins.pin(RELAY1).state
        assert pins.pin(BUZZER).state  # tamper alarm
        stats = rig.station.bays.link_stats()["bay1"]
        assert stats.extra["tampers"] == 1


async def test_emergency_stop_pin_stops_everything_latched(
    tmp_path: Path, pins: MockFactory
) -> None:
    estop = pins.pin(ESTOP)  # pulled up: released
    async with gpio_station(tmp_path, ("evse", "evse")) as rig:
        await rig.status("bay1", "Available")
        await rig.status("bay2", "Available")
        s1 = await rig.station.commands.present_token("bay1", "T1")
        s2 = await rig.station.commands.present_token("bay2", "T2")
        await rig.status("bay1", "Charging")
        await rig.status("bay2", "Charging")
        assert pins.pin(RELAY1).state and pins.pin(RELAY2).state

        estop.drive_low()  # pressed
        await rig.status("bay1", "Faulted")
        await rig.status("bay2", "Faulted")
        for sid in (s1.session_id, s2.session_id):
            row = await rig.station.journal.session(sid or "")
            assert row is not None and row["stop_reason"] == "EmergencyStop"
        await rig.until("bay1", lambda s: s["relay_on"] is False)
        await rig.until("bay2", lambda s: s["relay_on"] is False)
        assert not pins.pin(RELAY1).state and not pins.pin(RELAY2).state
        cleared = await rig.station.safety.clear_emergency_stop(actor="owner")
        assert not cleared.ok and cleared.code == "still_pressed"

        estop.drive_high()  # released: still latched until an owner clears it
        async with asyncio.timeout(5):
            while rig.station.safety.stop_input_pressed:
                await rig.updates.get()
        refused = await rig.station.commands.present_token("bay1", "T3")
        assert not refused.ok
        assert rig.station.snapshots.bay(rig.station.bays["bay1"])["status"] == "Faulted"

        cleared = await rig.station.safety.clear_emergency_stop(actor="owner")
        assert cleared.ok, cleared
        await rig.status("bay1", "Available")
        again = await rig.station.commands.present_token("bay1", "T3")
        assert again.ok


# --------------------------------------------------------------------------- configuration


def test_gpio_config_is_checked(tmp_path: Path) -> None:
    cfg = station_cfg(tmp_path, ("locker", "evse"))
    assert EXTENSION.check(cfg) == []
    dup = gpio_section()
    dup["bays"][1]["relay"] = {"pin": f"GPIO{RELAY1}", "failsafe": "pull_down"}
    problems = EXTENSION.check(cfg.model_copy(update={"gpio": dup}))
    assert problems and "already used" in problems[0]
    stray = gpio_section()
    stray["bays"][1]["node"] = "nowhere"
    assert EXTENSION.check(cfg.model_copy(update={"gpio": stray})) == [
        "gpio.bays[1].node: no bay with node id 'nowhere'",
        "bays[1]: on GPIO bus 'pi' but not in [[gpio.bays]]",
    ]
    # A relay on a Pi pin needs its failsafe declared, and what backs it up.
    bare = gpio_section(hardware_watchdog=False, released_pins="kept")
    bare["bays"][0]["relay"] = {"pin": RELAY1}
    bare["bays"][1]["relay"] = {"pin": RELAY2, "active_high": False, "failsafe": "pull_down"}
    problems = EXTENSION.check(cfg.model_copy(update={"gpio": bare}))
    assert [p.split(":")[0] for p in problems] == [
        "gpio.bays[0].relay.failsafe",
        "gpio.bays[1].relay.failsafe",
        "gpio.hardware_watchdog",
        "gpio.released_pins",
    ]
    assert '"pull_down" (a pull-down resistor' in problems[0]
    assert "would switch this active-low relay ON" in problems[1] and '"pull_up"' in problems[1]
    with pytest.raises(PermanentError, match="hardware_watchdog"):
        build_gpio(cfg.buses[0], list(cfg.bays), cfg.model_copy(update={"gpio": bare}))
    no_relay = gpio_section(hardware_watchdog=False, released_pins="kept")
    for bay in no_relay["bays"]:
        del bay["relay"]
    assert check_gpio(no_relay) == []  # locks, doors and LEDs need no declaration
    bad = gpio_section(pin_factory="wiringpi")
    assert EXTENSION.check(cfg.model_copy(update={"gpio": bad}))[0].startswith("gpio.pin_factory")
    with pytest.raises(PermanentError):
        build_gpio(cfg.buses[0], list(cfg.bays))
