"""The ports: what the controller needs from the outside world, and nothing more.

Every adapter in ``drivers/`` (and every simulator) implements one of these
protocols; the controller knows no hardware library. Units are in the names
(``current_a``, ``power_w``, ``energy_wh``, ``lease_s``). Times named ``at`` are
``time.monotonic()`` seconds unless the name says ``wall``.

Contracts are written in the docstrings; an adapter that cannot keep one must
raise a :class:`DriverError` rather than pretend.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# --------------------------------------------------------------------------- errors


class DriverError(Exception):
    """Root of every error an adapter raises at its edge (library errors are mapped here)."""


class TransientError(DriverError):
    """Worth retrying: a garbled answer, a busy bus."""


class PermanentError(DriverError):
    """Retrying will not help: wrong configuration, unsupported command."""


class DriverTimeout(TransientError):
    """No answer within the deadline."""


class ConnectionLost(TransientError):
    """The link went away (USB unplugged, broker gone, socket closed)."""


# --------------------------------------------------------------------------- freshness


class Freshness(enum.StrEnum):
    """How much an input may be trusted. A stale value is never reused as if fresh."""

    FRESH = "fresh"
    STALE = "stale"
    FAILED = "failed"


# --------------------------------------------------------------------------- bay nodes


class PilotState(enum.StrEnum):
    """IEC 61851 control pilot state; ``NONE`` for a locker outlet without a pilot."""

    A = "A"  # no vehicle
    B = "B"  # vehicle connected, not ready
    C = "C"  # charging
    D = "D"  # charging, ventilation
    E = "E"  # error / no power
    F = "F"  # EVSE fault
    NONE = "-"


@dataclass(frozen=True, slots=True)
class NodeTelemetry:
    """One telemetry frame of a bay node, as received.

    ``plug_count`` and ``boot_id`` (nodes that keep plug continuity, else ``None``)
    survive host silence: ``plug_count`` goes up by one on every unplug and
    ``boot_id`` on every power-up of the node. Same plug count and same boot as
    when a session started means the same vehicle has stayed plugged in since.
    """

    node_id: str
    at: float
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
    soc_pct: float | None = None
    plug_count: int | None = None
    boot_id: int | None = None

    @property
    def power_w(self) -> float:
        c, v = self.current_a, self.voltage_v
        if len(c) == 3 and len(v) == 3:  # every frame: no generator for three products
            return c[0] * v[0] + c[1] * v[1] + c[2] * v[2]
        return sum(i * v for i, v in zip(c, v, strict=True))

    @property
    def max_current_a(self) -> float:
        return max(self.current_a)


class NodeEventKind(enum.StrEnum):
    DOOR_OPENED = "door_opened"
    DOOR_CLOSED = "door_closed"
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    FAULT = "fault"
    FAULT_CLEARED = "fault_cleared"
    LEASE_EXPIRED = "lease_expired"
    HOST_SILENT = "host_silent"
    EMERGENCY_STOP = "emergency_stop"


@dataclass(frozen=True, slots=True)
class NodeEvent:
    node_id: str
    at: float
    kind: NodeEventKind
    detail: str = ""


@dataclass(frozen=True, slots=True)
class NodeHello:
    """A node announced itself. ``serial``: its fixed identity (MAC, chip id), if it has one."""

    node_id: str
    at: float
    firmware: str
    protocol_version: int
    capabilities: frozenset[str] = frozenset()
    boot_id: int | None = None
    serial: str | None = None


@dataclass(frozen=True, slots=True)
class NodeLink:
    """The link to a node came up (``online``) or was declared lost (heartbeat timeout, last will)."""

    node_id: str
    at: float
    online: bool
    reason: str = ""


class ConflictReason(enum.StrEnum):
    """Why an adapter believes more than one device speaks for one node."""

    IDENTITY_MISMATCH = "identity_mismatch"  # HELLO serial is not the configured one
    TWO_IDENTITIES = "two_identities"  # two serials on one address
    TWO_SENDERS = "two_senders"  # interleaved sequence numbers: two devices answer


@dataclass(frozen=True, slots=True)
class NodeConflict:
    """Frames for this node cannot all come from one device: they are not to be trusted.

    The adapter keeps delivering what it receives; the controller faults the bay
    and ignores the node's reports until the owner has cleared the fault.
    """

    node_id: str
    at: float
    reason: ConflictReason
    detail: str = ""


NodeUpdate = NodeTelemetry | NodeEvent | NodeHello | NodeLink | NodeConflict
NodeSink = Callable[[NodeUpdate], None]


@dataclass(slots=True)
class LinkStats:
    """Counters kept by a node adapter, for diagnostics and metrics."""

    frames_rx: int = 0
    frames_tx: int = 0
    bad_frames: int = 0
    retries: int = 0
    timeouts: int = 0
    reconnects: int = 0
    last_rx_at: float | None = None
    firmware: str = ""
    extra: dict[str, int] = field(default_factory=dict)


class BayNode(Protocol):
    """One ESP32 (or simulated) node that drives a bay's relay, current and lock.

    Contract:
    - commands are absolute (never toggles) and idempotent; a call returns once
      the node has acknowledged, or raises :class:`DriverTimeout` after retries;
    - ``set_output`` is a lease: the node keeps ``current_a`` for ``lease_s``
      seconds and then falls by itself to its configured safe share; the
      controller renews it while healthy;
    - if ``relay_on`` is False the relay must be open when the call returns.
    """

    node_id: str

    async def set_output(self, *, relay_on: bool, current_a: float, lease_s: float) -> None: ...

    async def set_lock(self, *, locked: bool) -> None: ...

    def stats(self) -> LinkStats: ...


@runtime_checkable
class UnleasedNode(Protocol):
    """Optional ability of a :class:`BayNode` whose device does not fall to a lease.

    A third-party charger keeps its own limits when the station loses it;
    ``assumed_draw_a(now)`` is the most it may draw per phase while it cannot be
    reached (its maximum, or the fallback limit it acknowledged), and ``None``
    while it can. The load manager reserves that much for it.
    """

    def assumed_draw_a(self, now: float) -> float | None: ...


@runtime_checkable
class CommandBudget(Protocol):
    """Optional ability of a :class:`BayNode`: how long one command may take at most.

    ``command_budget_s``: from sending a command to giving up on it (every retry's
    timeout). Knowing it, the controller renews a node's lease as late as still leaves
    room for one failed renewal and one more attempt; without it, at a third of the lease.
    """

    @property
    def command_budget_s(self) -> float: ...


class NodeHub(Protocol):
    """Owns one link (a serial bus, an MQTT connection) to one or more nodes.

    ``run`` connects, reconnects with capped backoff, and delivers every update
    to ``sink`` on the event loop thread; it returns only when cancelled.
    """

    async def run(self, sink: NodeSink) -> None: ...

    def node(self, node_id: str) -> BayNode: ...


class FirmwareUpdateFailed(DriverError):
    """A node's firmware update did not complete; ``stage``: refused / transfer / boot /
    rolled_back / confirm; the message is a sentence for the owner and the audit."""

    def __init__(self, node_id: str, stage: str, message: str) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.stage = stage


FirmwareProgress = Callable[[str, int, int], None]  # stage, bytes done, bytes in all


@runtime_checkable
class NodeFirmware(Protocol):
    """A hub whose nodes take firmware over their bus (A/B slots, boot-confirm, rollback)."""

    async def update_firmware(
        self, node_id: str, image: bytes, version: str, progress: FirmwareProgress
    ) -> None:
        """Install ``image`` on the node, or raise :class:`FirmwareUpdateFailed`."""
        ...


# --------------------------------------------------------------------------- meters


@dataclass(frozen=True, slots=True)
class MeterSample:
    """The latest values of an energy meter. ``None`` means the meter does not provide the value.

    ``at`` is when the values load management uses (the currents, for a grid
    meter) were requested from the meter. A meter may refresh other values
    less often; ``read_at`` then says when each of those was requested, keyed
    by its register-map name (``voltage_l1`` … ``export_energy``); a value
    without an entry was requested at ``at``. Currents are RMS magnitudes
    (never negative); the direction of energy flow is the sign of power.
    """

    at: float
    voltage_v: tuple[float | None, float | None, float | None] = (None, None, None)
    current_a: tuple[float | None, float | None, float | None] = (None, None, None)
    power_w: tuple[float | None, float | None, float | None] = (None, None, None)
    power_total_w: float | None = None
    frequency_hz: float | None = None
    import_wh: float | None = None
    export_wh: float | None = None
    read_at: Mapping[str, float] = field(default_factory=dict)

    def stamp(self, name: str) -> float:
        """When the value called ``name`` (``current_l1``, ``import_energy``…) was requested."""
        return self.read_at.get(name, self.at)


@dataclass(frozen=True, slots=True)
class MeterReading:
    """What a meter adapter publishes: the latest sample (if any) and how far to trust it.

    ``at`` is the sample's ``at`` for a FRESH reading (its age is the age of the
    data, not of the publication) and the moment the poll failed otherwise.
    """

    meter: str
    at: float
    freshness: Freshness
    sample: MeterSample | None
    error: str = ""


MeterSink = Callable[[MeterReading], None]


class Meter(Protocol):
    """An energy meter (grid, PV or bay). ``run`` polls and publishes until cancelled.

    Contract: a reading is published after every poll; a failed poll publishes
    ``FAILED`` with the error, never a copy of the previous sample as ``FRESH``.
    """

    name: str

    async def run(self, sink: MeterSink) -> None: ...


# --------------------------------------------------------------------------- locks, inputs


class DoorLock(Protocol):
    """A locker door: lock actuator plus door and lock-feedback sensors.

    ``set_locked`` returns once the feedback confirms, or raises
    :class:`DriverTimeout` (a lock fault). Door changes go to the sink as
    :class:`NodeEvent` with the bay's node id.
    """

    async def set_locked(self, locked: bool) -> None: ...

    async def run(self, sink: NodeSink) -> None: ...


class StopInput(Protocol):
    """Emergency-stop input. ``run`` calls ``on_change(pressed)`` on every change."""

    async def run(self, on_change: Callable[[bool], None]) -> None: ...


# --------------------------------------------------------------------------- QR reader


@dataclass(frozen=True, slots=True)
class ScannedCode:
    text: str
    at: float
    camera: str = ""


class QrReader(Protocol):
    """A camera that decodes QR codes. Each distinct code is published once per dedup window."""

    async def run(self, sink: Callable[[ScannedCode], None]) -> None: ...


# --------------------------------------------------------------------------- upstream


class AuthStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    EXPIRED = "Expired"
    INVALID = "Invalid"
    CONCURRENT_TX = "ConcurrentTx"


@dataclass(frozen=True, slots=True)
class AuthResult:
    status: AuthStatus
    source: str  # "csms", "local_list", "cache", "offline_unknown", "qr_token", "local"
    message: str = ""


@runtime_checkable
class Upstream(Protocol):
    """The central system (OCPP) as the controller sees it.

    ``authorize`` answers from the CSMS when online and from the local list /
    cache otherwise, within ``timeout_s``; it never raises for a network error.
    """

    @property
    def online(self) -> bool: ...

    async def authorize(self, id_tag: str, *, timeout_s: float = 5.0) -> AuthResult: ...

    async def run(self) -> None: ...


@runtime_checkable
class ChargingLimits(Protocol):
    """Optional ability of an upstream: the central system's charging-profile caps.

    ``current_limits_a(now_wall)`` maps a connector to the amps per phase its
    profiles allow at that wall time (connector 0: the whole station); None
    means no profile limits it. Without a load manager the station applies them
    to the bays directly.
    """

    def current_limits_a(self, now_wall: float) -> dict[int, float | None]: ...


# --------------------------------------------------------------------------- clock


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    def sleep(self, seconds: float) -> Awaitable[None]: ...
