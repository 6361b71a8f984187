"""The firmware side of one simulated ESP32 bay node: protocol handling, leases, failsafe.

A node answers each host frame addressed to it with exactly one frame
(hello, then queued events, then telemetry when due, else a heartbeat) and
sets ``FLAG_MORE`` while more is queued. It falls to its safe share when a
lease expires or the host is silent past ``host_timeout_s``. Fault knobs
(drop, corrupt, silent, stuck relay, overcurrent) are plain attributes.

What a real node keeps in flash survives host silence and its own reboots:
the energy counter, the boot counter (+1 on every power-up) and the plug
counter (+1 on every unplug). ``forge_*`` put frames on the wire that do not
match the physics (tests of the host's plausibility checks).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.ports import NodeEventKind
from simulators.esp32_node.firmware import FirmwareSlots
from simulators.esp32_node.firmware_wire import FwBegin, FwChunk, FwCommit, FwConfirm
from simulators.esp32_node.model import IEC_MIN_A, BayPhysics, Ev, Kind
from simulators.esp32_node.wire import (
    FLAG_MORE,
    HOST,
    VERSION,
    Ack,
    AckStatus,
    Command,
    Configure,
    Event,
    Frame,
    Heartbeat,
    Hello,
    Message,
    SetLock,
    SetOutput,
    Telemetry,
)

FIRMWARE = "sim-esp32/1.0.0"
_CAPS: dict[str, frozenset[str]] = {
    "evse": frozenset({"evse", "three_phase", "pilot", "soc", "temperature", "energy_meter"}),
    "locker": frozenset({"locker", "lock", "door", "temperature", "energy_meter"}),
}
_U32 = 0xFFFFFFFF


@dataclass(slots=True)
class Knobs:
    """Fault injection. ``*_next`` counters are deterministic; ``*_rate`` use the node's seeded RNG."""

    drop_next: int = 0  # ignore the next N host frames addressed to this node
    drop_rate: float = 0.0
    drop_commands_next: int = 0  # ignore the next N commands (polls still answered)
    corrupt_next: int = 0  # flip a byte in the next N replies
    corrupt_rate: float = 0.0
    silent: bool = False  # hear and answer nothing (dead node, cut cable)
    reply_delay_s: float = 0.0
    lock_jammed: bool = False  # the bolt does not move: SET_LOCK answers HW_FAULT


@dataclass(slots=True)
class NodeCounters:
    rx_frames: int = 0
    tx_frames: int = 0
    dropped: int = 0
    corrupted: int = 0
    commands_applied: int = 0
    outputs_applied: int = 0  # of which SET_OUTPUT
    duplicates: int = 0
    events: list[Event] = field(default_factory=list)  # every event ever raised, for tests


class SimNode:
    def __init__(
        self,
        name: str,
        address: int,
        kind: Kind = "evse",
        *,
        clock: Callable[[], float] = time.monotonic,
        now: float | None = None,
        max_current_a: float = 32.0,
        voltage_v: float = 230.0,
        response_delay_s: float = 0.0,
        seed: int = 0,
        continuity: bool = True,
        serial: str | None = None,
        boot_id: int | None = None,
        firmware: str = FIRMWARE,
    ) -> None:
        self.name = name
        self.address = address
        self.clock = clock
        # Old firmware (``continuity=False``) keeps no plug counter and says neither boot nor serial.
        self.continuity = continuity
        self.serial = serial if serial is not None else f"SIM-{name}"
        self.firmware = firmware
        self.fw = FirmwareSlots(firmware)  # A/B slots and bootloader (firmware.py)
        # Flash: a fresh board's boot counter is anything; a new process is a power-up.
        self.boot_id = boot_id if boot_id is not None else random.SystemRandom().randrange(1, _U32)
        self.plug_count = 0
        if now is None:
            now = clock()
        self.kind: Kind = kind
        self.max_current_a = max_current_a
        self.physics = BayPhysics(kind=kind, voltage_v=voltage_v, response_delay_s=response_delay_s)
        self.knobs = Knobs()
        self._lock_fault = False  # a jammed lock's fault was reported (cleared when it moves)
        self.counters = NodeCounters()
        self._rng = random.Random(seed)
        self._boot_at = now
        self._boot(now)
        self.physics.change(now)

    def _boot(self, now: float) -> None:
        # Firmware defaults until the host configures the node: no safe share at all.
        self.safe_current_a = 0.0
        self.host_timeout_s = 5.0
        self.telemetry_period_s = 1.0
        self.lease_until: float | None = None
        self.last_host_rx = now
        self.host_silent = False
        self.configured = False
        self.hello_pending = True
        self.queue: deque[Event | Telemetry] = deque()
        self._tx_seq = 0
        self._last_cmd: Command | None = None
        self._last_status = AckStatus.OK
        self._last_telemetry_at = float("-inf")
        self._overcurrent = False
        self._host_uptime_ms: int | None = None

    # ------------------------------------------------------------------ control API (tests, demo)

    def plug_in(
        self,
        now: float | None = None,
        *,
        max_a: float = 16.0,
        phases: int = 3,
        soc_pct: float | None = None,
        capacity_wh: float | None = None,
        charger_a: float = 1.5,
    ) -> None:
        """EVSE: an EV arrives. Locker: a charger of ``charger_a`` is plugged into the outlet."""
        now = self._now(now)
        if self.kind == "evse":
            if phases not in (1, 3):
                raise ValueError("phases must be 1 or 3")
            self.physics.ev = Ev(
                max_a=max_a, phases=phases, soc_pct=soc_pct, capacity_wh=capacity_wh
            )
        else:
            self.physics.charger_a = charger_a
        self.physics.change(now)

    def unplug(self, now: float | None = None) -> None:
        now = self._now(now)
        if self.physics.ev is not None or self.physics.charger_a is not None:
            self.plug_count = (self.plug_count + 1) & _U32
        self.physics.ev = None
        self.physics.charger_a = None
        self.physics.change(now)

    def open_door(self, now: float | None = None) -> None:
        if self.physics.door_closed:
            self.physics.door_closed = False
            self._event(NodeEventKind.DOOR_OPENED, "forced" if self.physics.locked else "")

    def close_door(self, now: float | None = None) -> None:
        if not self.physics.door_closed:
            self.physics.door_closed = True
            self._event(NodeEventKind.DOOR_CLOSED)

    def reboot(self, now: float | None = None) -> None:
        """Power-cycle the node: configuration and leases lost; energy, plug count kept (NVS)."""
        now = self._now(now)
        self.physics.relay_cmd = False
        self.physics.setpoint_a = 0.0
        self.boot_id = (self.boot_id + 1) & _U32
        self._boot_at = now
        self._boot(now)
        self.physics.change(now)

    def forge_telemetry(self, now: float | None = None, **fields: Any) -> None:
        """Queue a TELEMETRY frame whose ``fields`` lie (e.g. ``energy_wh``); physics unchanged."""
        real = self.telemetry(self._now(now))
        self.queue.append(dataclasses.replace(real, **fields))

    def forge_event(self, kind: str, detail: str = "") -> None:
        """Queue an EVENT that did not happen (a ``door_opened`` with the door shut)."""
        self.queue.append(Event(NodeEventKind(kind), detail))

    def jam_lock(self, jammed: bool) -> None:
        """The bolt sticks (``SET_LOCK`` answers HW_FAULT) or moves again (the fault clears)."""
        if not jammed and self.knobs.lock_jammed and self._lock_fault:
            self._lock_fault = False
            self._event(NodeEventKind.FAULT_CLEARED, "lock_jammed")
        self.knobs.lock_jammed = jammed

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else now

    def set_knobs(self, **values: float | int | bool) -> None:
        for key, value in values.items():
            if key in ("stuck_relay", "overcurrent_a"):
                setattr(self.physics, key, value)
            elif hasattr(self.knobs, key):
                setattr(self.knobs, key, value)
            else:
                raise ValueError(f"unknown knob {key!r}")

    def snapshot(self, now: float | None = None) -> dict[str, object]:
        now = self._now(now)
        self.tick(now)
        p = self.physics
        return {
            "name": self.name,
            "address": self.address,
            "kind": self.kind,
            "relay_on": p.relay_closed,
            "setpoint_a": p.setpoint_a,
            "current_a": list(p.currents()),
            "energy_wh": p.energy_wh,
            "pilot": p.pilot().value,
            "locked": p.locked,
            "door_closed": p.door_closed,
            "safe_current_a": self.safe_current_a,
            "host_silent": self.host_silent,
            "lease_remaining_s": self.lease_remaining(now),
            "configured": self.configured,
            "events": [e.kind.value for e in self.counters.events],
            "commands_applied": self.counters.commands_applied,
            "outputs_applied": self.counters.outputs_applied,
            "plug_count": self.plug_count,
            "boot_id": self.boot_id,
            "serial": self.serial,
        }

    def lease_remaining(self, now: float) -> float:
        return 0.0 if self.lease_until is None else max(0.0, self.lease_until - now)

    # ------------------------------------------------------------------ firmware loop

    def tick(self, now: float) -> None:
        """Run the node's periodic checks: energy, lease expiry, host silence, overcurrent."""
        if self.fw.tick(now) == "boot":  # into a committed image, or rolled back
            self.firmware = self.fw.version
            self.reboot(now)
        self.physics.change(now)
        if self.lease_until is not None and now >= self.lease_until:
            self.lease_until = None
            self._fall(now)
            self._event(NodeEventKind.LEASE_EXPIRED)
        if not self.host_silent and now - self.last_host_rx > self.host_timeout_s:
            self.host_silent = True
            self.lease_until = None
            self._fall(now)
            self._event(NodeEventKind.HOST_SILENT)
        over = max(self.physics.currents()) > self.physics.setpoint_a + 2.0
        if over != self._overcurrent:
            self._overcurrent = over
            self._event(NodeEventKind.FAULT if over else NodeEventKind.FAULT_CLEARED, "overcurrent")

    def _fall(self, now: float) -> None:
        """Failsafe: never above the safe share, and a relay is never switched on by itself."""
        p = self.physics
        p.setpoint_a = min(p.setpoint_a, self.safe_current_a)
        floor = IEC_MIN_A if self.kind == "evse" else 0.1
        if p.setpoint_a < floor:
            p.relay_cmd = False
        p.change(now)

    def handle(self, frame: Frame, now: float) -> Frame | None:
        """One host frame in, at most one reply out (``None``: the node stays quiet)."""
        k = self.knobs
        if k.silent or self.fw.hung:
            return None
        if k.drop_next > 0 or (k.drop_rate and self._rng.random() < k.drop_rate):
            k.drop_next = max(0, k.drop_next - 1)
            self.counters.dropped += 1
            return None
        if k.drop_commands_next > 0 and not isinstance(frame.msg, Heartbeat):
            k.drop_commands_next -= 1
            self.counters.dropped += 1
            return None
        self.counters.rx_frames += 1
        self.last_host_rx = now
        self.host_silent = False
        self.tick(now)
        if self.fw.hung:  # the tick just booted an image that hangs
            return None
        broadcast = frame.dst != self.address  # heard, never answered: it would collide on the bus
        reply: Message
        match frame.msg:
            case Heartbeat(uptime_ms=host_uptime):
                if broadcast:
                    return None
                self._note_host_uptime(host_uptime)
                reply = self._next_report(now)
            case (
                SetOutput()
                | SetLock()
                | Configure()
                | FwBegin()
                | FwChunk()
                | FwCommit()
                | FwConfirm()
            ):
                reply = Ack(frame.msg.cmd_id, self._command(frame.msg, now))
                if broadcast:
                    return None
            case _:
                return None
        self._tx_seq = (self._tx_seq + 1) & 0xFFFF
        self.counters.tx_frames += 1
        more = FLAG_MORE if (self.queue or self.hello_pending) else 0
        return Frame(src=self.address, dst=HOST, seq=self._tx_seq, msg=reply, flags=more)

    def _note_host_uptime(self, uptime_ms: int) -> None:
        # A host whose uptime went back has restarted and knows nothing of us: say hello again
        # so it learns our identity (nodes with the continuity capability).
        if (
            self.continuity
            and self._host_uptime_ms is not None
            and uptime_ms < self._host_uptime_ms
        ):
            self.hello_pending = True
        self._host_uptime_ms = uptime_ms

    def should_corrupt(self) -> bool:
        k = self.knobs
        if k.corrupt_next > 0 or (k.corrupt_rate and self._rng.random() < k.corrupt_rate):
            k.corrupt_next = max(0, k.corrupt_next - 1)
            self.counters.corrupted += 1
            return True
        return False

    def _next_report(self, now: float) -> Message:
        if self.hello_pending:
            self.hello_pending = False
            if not self.continuity:
                return Hello(self.firmware, VERSION, _CAPS[self.kind])
            caps = _CAPS[self.kind] | {"continuity", "firmware"}
            return Hello(self.firmware, VERSION, caps, self.boot_id, self.serial)
        if self.queue:
            return self.queue.popleft()
        if now - self._last_telemetry_at >= self.telemetry_period_s:
            self._last_telemetry_at = now
            return self.telemetry(now)
        return Heartbeat(int((now - self._boot_at) * 1000))

    def telemetry(self, now: float) -> Telemetry:
        p = self.physics
        locker = self.kind == "locker"
        return Telemetry(
            current_a=tuple(min(round(i, 2), 655.0) for i in p.currents()),  # type: ignore[arg-type]
            voltage_v=p.voltages(),
            energy_wh=int(p.energy_wh),
            relay_on=p.relay_closed,
            setpoint_a=p.setpoint_a,
            lease_remaining_s=round(self.lease_remaining(now), 3),
            locked=p.locked if locker else None,
            door_closed=p.door_closed if locker else None,
            pilot=p.pilot(),
            temperature_c=round(p.temperature_c(), 1),
            soc_pct=None if p.ev is None or p.ev.soc_pct is None else int(p.ev.soc_pct),
            plug_count=self.plug_count if self.continuity else None,
            boot_id=self.boot_id if self.continuity else None,
        )

    def _command(self, cmd: Command, now: float) -> AckStatus:
        if cmd == self._last_cmd:
            self.counters.duplicates += 1  # a retry: re-ack, do not apply twice
            return self._last_status
        status = self._apply(cmd, now)
        self._last_cmd, self._last_status = cmd, status
        self.counters.commands_applied += 1
        return status

    def _apply(self, cmd: Command, now: float) -> AckStatus:
        p = self.physics
        match cmd:
            case FwBegin() | FwChunk() | FwCommit() | FwConfirm():
                return AckStatus(self.fw.command(cmd, now))
            case Configure():
                self.safe_current_a = cmd.safe_current_a
                self.host_timeout_s = cmd.host_timeout_s
                self.telemetry_period_s = cmd.telemetry_period_s
                self.configured = True
                return AckStatus.OK
            case SetOutput():
                if cmd.current_a > self.max_current_a or cmd.lease_s <= 0:
                    return AckStatus.INVALID
                self.counters.outputs_applied += 1
                p.relay_cmd = cmd.relay_on
                p.setpoint_a = cmd.current_a if cmd.relay_on else 0.0
                self.lease_until = now + cmd.lease_s if cmd.relay_on else None
                p.change(now)
                if not cmd.relay_on and p.stuck_relay:
                    self._event(NodeEventKind.FAULT, "relay_stuck")
                    return AckStatus.HW_FAULT
                return AckStatus.OK
            case SetLock():
                if self.kind != "locker":
                    return AckStatus.UNSUPPORTED
                if p.locked != cmd.locked and self.knobs.lock_jammed:
                    if not self._lock_fault:
                        self._lock_fault = True
                        self._event(NodeEventKind.FAULT, "lock_jammed")
                    return AckStatus.HW_FAULT
                if p.locked != cmd.locked:
                    p.locked = cmd.locked
                    self._event(NodeEventKind.LOCKED if cmd.locked else NodeEventKind.UNLOCKED)
                return AckStatus.OK
        return AckStatus.INVALID  # pragma: no cover

    def _event(self, kind: NodeEventKind, detail: str = "") -> None:
        ev = Event(kind, detail)
        self.queue.append(ev)
        self.counters.events.append(ev)
