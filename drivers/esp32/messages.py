"""The typed messages of the ESP32 bay-node protocol (see PROTOCOL.md).

Plain frozen dataclasses, no I/O and no wire layout: ``codec.py`` owns the bytes.
Units are in the names; the wire quantizes them (0.1 A setpoints, 0.01 A
measurements, 0.1 V, 1 ms, 0.1 °C), so a decoded value is the nearest step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controller.ports import NodeEventKind, PilotState
from drivers.esp32.firmware_messages import FirmwareCommand

PROTOCOL_VERSION = 1
HOST_ADDRESS = 0
BROADCAST_ADDRESS = 0xFF
MAX_NODE_ADDRESS = 247

# Header flags.
FLAG_MORE = 0x01  # node -> host: more frames are queued, poll me again at once


class MsgType(enum.IntEnum):
    HEARTBEAT = 0x01
    SET_OUTPUT = 0x10
    SET_LOCK = 0x11
    CONFIGURE = 0x12
    FW_BEGIN = 0x13  # §5, drivers/esp32/firmware_messages.py
    FW_CHUNK = 0x14
    FW_COMMIT = 0x15
    FW_CONFIRM = 0x16
    HELLO = 0x20
    ACK = 0x21
    TELEMETRY = 0x22
    EVENT = 0x23


class AckStatus(enum.IntEnum):
    OK = 0
    INVALID = 1  # an argument is out of range for this node
    UNSUPPORTED = 2  # the node lacks the hardware (e.g. set_lock on an EVSE without lock)
    HW_FAULT = 3  # the node tried and its feedback says it failed (welded relay, jammed lock)


# Capability names, in bit order of the hello bitmask (bit 0 first). Append only.
CAPABILITIES: tuple[str, ...] = (
    "evse",
    "locker",
    "three_phase",
    "lock",
    "door",
    "pilot",
    "soc",
    "temperature",
    "energy_meter",
    "continuity",  # bit 9: boot and plug counters in TELEMETRY, boot id and serial in HELLO
    "firmware",  # bit 10: A/B firmware slots, FW_* messages (PROTOCOL.md §5)
)

# Event kinds on the wire. Append only.
EVENT_CODES: dict[NodeEventKind, int] = {
    NodeEventKind.DOOR_OPENED: 1,
    NodeEventKind.DOOR_CLOSED: 2,
    NodeEventKind.LOCKED: 3,
    NodeEventKind.UNLOCKED: 4,
    NodeEventKind.FAULT: 5,
    NodeEventKind.FAULT_CLEARED: 6,
    NodeEventKind.LEASE_EXPIRED: 7,
    NodeEventKind.HOST_SILENT: 8,
    NodeEventKind.EMERGENCY_STOP: 9,
}
EVENT_KINDS: dict[int, NodeEventKind] = {code: kind for kind, code in EVENT_CODES.items()}


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Both ways. From the host it is also the poll that lets a node on a shared bus speak."""

    uptime_ms: int


@dataclass(frozen=True, slots=True)
class SetOutput:
    """Absolute output state, a lease: after ``lease_s`` the node falls to its safe share."""

    cmd_id: int
    relay_on: bool
    current_a: float
    lease_s: float


@dataclass(frozen=True, slots=True)
class SetLock:
    cmd_id: int
    locked: bool


@dataclass(frozen=True, slots=True)
class Configure:
    cmd_id: int
    safe_current_a: float
    host_timeout_s: float
    telemetry_period_s: float


@dataclass(frozen=True, slots=True)
class Hello:
    """``boot_id`` and ``serial`` come from nodes with the ``continuity`` capability.

    ``boot_id``: the node's boot counter (kept in flash, +1 on every power-up);
    ``serial``: its fixed identity (e.g. the MAC), ``None`` when it has none.
    """

    firmware: str
    protocol_version: int
    capabilities: frozenset[str] = frozenset()
    boot_id: int | None = None
    serial: str | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    cmd_id: int
    status: AckStatus = AckStatus.OK


@dataclass(frozen=True, slots=True)
class Telemetry:
    current_a: tuple[float, float, float]
    voltage_v: tuple[float, float, float]
    energy_wh: int
    relay_on: bool
    setpoint_a: float
    lease_remaining_s: float
    locked: bool | None = None
    door_closed: bool | None = None
    pilot: PilotState = PilotState.NONE
    temperature_c: float | None = None
    soc_pct: int | None = None
    # Plug continuity (``continuity`` capability), both kept in flash across host silence:
    # ``plug_count`` +1 on every unplug, ``boot_id`` +1 on every power-up of the node.
    plug_count: int | None = None
    boot_id: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    kind: NodeEventKind
    detail: str = ""


Command = SetOutput | SetLock | Configure | FirmwareCommand
Message = (
    Heartbeat | SetOutput | SetLock | Configure | Hello | Ack | Telemetry | Event | FirmwareCommand
)


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame on the wire: addressing, sequence number, one message."""

    src: int
    dst: int
    seq: int
    msg: Message
    flags: int = 0
    version: int = PROTOCOL_VERSION

    @property
    def more(self) -> bool:
        return bool(self.flags & FLAG_MORE)
