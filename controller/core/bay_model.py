"""The vocabulary of a bay: its state, the events it takes and the effects it asks for.

Plain frozen dataclasses and enums, no behaviour: ``controller.core.bay`` owns the
transition that maps a state and an event to a new state and its effects (and
re-exports all of these, so callers import them from there).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from controller.core import energy_gate
from controller.core.energy_gate import Doubt, Verdict
from controller.ports import PilotState

# Below this the outlet counts as drawing nothing (noise of the current sensor).
CURRENT_DETECT_A = 0.5
# Until the station sets a bay's own (from its config): the most any configurable bay can draw.
ANY_BAY_MAX_POWER_W = energy_gate.bay_max_power_w(80.0, 3)
# Faults that mean the node's reports cannot be trusted: they are ignored until cleared.
UNTRUSTED_FAULTS = frozenset({"address_conflict", "node_identity"})


class BayKind(enum.StrEnum):
    EVSE = "evse"
    LOCKER = "locker"


class Phase(enum.StrEnum):
    """Internal flow position; the OCPP status is derived from it (see :func:`ocpp_status`)."""

    IDLE = "idle"
    HELD = "held"
    AUTHORIZED = "authorized"  # session open, waiting for the vehicle / device to draw
    CHARGING = "charging"
    SUSPENDED_EV = "suspended_ev"
    SUSPENDED_EVSE = "suspended_evse"
    FINISHING = "finishing"  # session closed; locker exit grace or EV still plugged


class Status(enum.StrEnum):
    """OCPP 1.6 ChargePointStatus."""

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


class StopReason(enum.StrEnum):
    """Why a session ended. The first group are OCPP 1.6 Reason values; the rest map to ``Other``."""

    LOCAL = "Local"
    REMOTE = "Remote"
    EV_DISCONNECTED = "EVDisconnected"
    EMERGENCY_STOP = "EmergencyStop"
    POWER_LOSS = "PowerLoss"
    REBOOT = "Reboot"
    SOFT_RESET = "SoftReset"
    HARD_RESET = "HardReset"
    UNLOCK_COMMAND = "UnlockCommand"
    DEAUTHORIZED = "DeAuthorized"
    OTHER = "Other"
    QUOTA = "QuotaReached"
    CONNECTION_TIMEOUT = "ConnectionTimeout"
    OWNER = "Owner"
    FAULT = "Fault"
    DOOR_FORCED = "DoorForced"
    OVERCURRENT = "Overcurrent"
    INTERRUPTED_TOO_LONG = "InterruptedTooLong"  # suspended by an outage past the bound
    FIRMWARE_UPDATE = "FirmwareUpdate"  # the installer forced a node update on the bay

    def ocpp(self) -> str:
        ocpp_values = {
            "Local",
            "Remote",
            "EVDisconnected",
            "EmergencyStop",
            "PowerLoss",
            "Reboot",
            "SoftReset",
            "HardReset",
            "UnlockCommand",
            "DeAuthorized",
            "Other",
        }
        return self.value if self.value in ocpp_values else "Other"


@dataclass(frozen=True, slots=True)
class Timers:
    connection_timeout_s: float = 120.0
    exit_grace_s: float = 120.0
    suspend_after_s: float = 30.0  # no current this long while charging -> SuspendedEV
    max_interruption_s: float = 900.0  # a session suspended by an outage this long is closed


@dataclass(frozen=True, slots=True)
class Hold:
    hold_id: str
    token: str
    expires_at: float
    reservation_id: int | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """The live part of a session record (the journal keeps the whole record)."""

    session_id: str
    token: str
    auth_source: str
    started_at: float
    meter_start_wh: int
    meter_wh: int
    mode: str = "standard"
    reservation_id: int | None = None
    quota_wh: int | None = None
    quota_s: float | None = None
    peak_power_w: float = 0.0
    last_current_at: float | None = None
    # The node's plug and boot counters when the session began (None: the node keeps none).
    plug_count: int | None = None
    boot_id: int | None = None

    @property
    def energy_wh(self) -> int:
        return max(0, self.meter_wh - self.meter_start_wh)


@dataclass(frozen=True, slots=True)
class BayState:
    bay_id: str
    kind: BayKind
    phase: Phase = Phase.IDLE
    session: Session | None = None
    hold: Hold | None = None
    deadline: float | None = None  # connection timeout or exit grace, by phase
    node_online: bool = False
    fault: str | None = None
    available: bool = True
    pending_unavailable: bool = False
    setpoint_a: float = 0.0
    door_closed: bool | None = None
    locked: bool | None = None
    pilot: PilotState = PilotState.NONE
    meter_wh: int | None = None  # last energy counter reported by the node
    # When it was booked: bookkeeping for the plausibility bound, not part of what the bay
    # shows (so a node repeating the same count changes nothing anyone sees).
    meter_at: float | None = field(default=None, compare=False)
    plug_count: int | None = None  # the node's plug counter, as last reported
    boot_id: int | None = None  # the node's boot counter, as last reported
    # A session suspended by an outage: since when, why ("controller_restart", "node_offline"),
    # and whether the restarted controller still waits for the node's first report.
    interrupted_since: float | None = None
    interruption: str | None = None
    awaiting_node: bool = False
    max_power_w: float = ANY_BAY_MAX_POWER_W  # bounds the energy counter's steps
    meter_doubt: Doubt | None = None  # counter readings rejected since the last booked one
    # A door / lock EVENT from the node not yet confirmed by its telemetry (sensors, feedback).
    door_claim: bool | None = None
    lock_claim: bool | None = None
    # "Opened" then "closed" claimed between two telemetry frames through an unlocked door
    # (a rider quickly taking a bike): the sensors can only confirm the door is closed again.
    door_cycle: bool = False


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class TokenPresented:
    """A token that upstream authorization has already accepted."""

    token: str
    auth_source: str
    session_id: str
    mode: str = "standard"
    quota_wh: int | None = None
    quota_s: float | None = None


@dataclass(frozen=True, slots=True)
class HoldPlaced:
    hold: Hold


@dataclass(frozen=True, slots=True)
class HoldCancelled:
    hold_id: str


@dataclass(frozen=True, slots=True)
class DoorChanged:
    closed: bool


@dataclass(frozen=True, slots=True)
class LockChanged:
    locked: bool


@dataclass(frozen=True, slots=True)
class Telemetry:
    current_a: float  # the highest phase current
    power_w: float
    energy_wh: int
    pilot: PilotState = PilotState.NONE
    relay_on: bool = False
    plug_count: int | None = None
    boot_id: int | None = None
    door_closed: bool | None = None  # None: the node reports no door sensor
    locked: bool | None = None  # None: the node reports no lock feedback


@dataclass(frozen=True, slots=True)
class DoorClaimed:
    """The node sent a door EVENT; it counts once its telemetry (the sensor) agrees."""

    closed: bool


@dataclass(frozen=True, slots=True)
class LockClaimed:
    """The node sent a lock EVENT; it counts once its telemetry (the lock feedback) agrees."""

    locked: bool


@dataclass(frozen=True, slots=True)
class Reconcile:
    """The node's first report after a controller restart: continue the session or close it.

    With plug continuity (plug and boot counters) the session continues when both are
    unchanged, whatever the relay did meanwhile; a node without it keeps the old rule:
    continue only if its relay is still closed.
    """

    telemetry: Telemetry
    clean_restart: bool = False


@dataclass(frozen=True, slots=True)
class StopRequested:
    reason: StopReason
    session_id: str | None = None  # None: whatever session runs


@dataclass(frozen=True, slots=True)
class NodeOnline:
    online: bool


@dataclass(frozen=True, slots=True)
class FaultRaised:
    code: str
    stop: bool = True  # stop a running session (relay off) or only suspend


@dataclass(frozen=True, slots=True)
class FaultCleared:
    pass


@dataclass(frozen=True, slots=True)
class AvailabilityChanged:
    available: bool


@dataclass(frozen=True, slots=True)
class SetpointChanged:
    current_a: float


@dataclass(frozen=True, slots=True)
class ModeChanged:
    """The driver (or owner) switched the running session's mode (standard, eco, boost, solar)."""

    mode: str
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    pass


Event = (
    TokenPresented
    | HoldPlaced
    | HoldCancelled
    | DoorChanged
    | LockChanged
    | DoorClaimed
    | LockClaimed
    | Telemetry
    | Reconcile
    | StopRequested
    | NodeOnline
    | FaultRaised
    | FaultCleared
    | AvailabilityChanged
    | SetpointChanged
    | ModeChanged
    | Tick
)


# --------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class SetRelay:
    on: bool


@dataclass(frozen=True, slots=True)
class SetLock:
    locked: bool


@dataclass(frozen=True, slots=True)
class OpenSession:
    session: Session


@dataclass(frozen=True, slots=True)
class UpdateSession:
    session: Session


@dataclass(frozen=True, slots=True)
class CloseSession:
    session: Session
    reason: StopReason
    stopped_at: float


@dataclass(frozen=True, slots=True)
class HoldEnded:
    hold: Hold
    outcome: str  # "used", "expired", "cancelled"


@dataclass(frozen=True, slots=True)
class StatusChanged:
    old: Status
    new: Status


@dataclass(frozen=True, slots=True)
class Refused:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Notice:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class InterruptionEnded:
    """A session was suspended by an outage from ``started_at`` to ``ended_at`` (wall).

    ``outcome``: "resumed", or the stop reason that ended the session.
    """

    session_id: str
    started_at: float
    ended_at: float
    cause: str
    outcome: str


@dataclass(frozen=True, slots=True)
class ReadingRejected:
    """An energy counter reading physics cannot explain: not booked (``verdict``: why).

    ``first``: the first of a run of rejected readings (the one worth an audit record).
    """

    verdict: Verdict
    value_wh: int
    booked_wh: int
    allowed_wh: float
    first: bool


@dataclass(frozen=True, slots=True)
class MeterReanchored:
    """Between sessions, the node's counter restarted on a new line (a replaced or wiped node)."""

    old_wh: int
    new_wh: int


Effect = (
    SetRelay
    | SetLock
    | OpenSession
    | UpdateSession
    | CloseSession
    | HoldEnded
    | StatusChanged
    | Refused
    | Notice
    | InterruptionEnded
    | ReadingRejected
    | MeterReanchored
)


_T = TypeVar("_T")
_INIT_FIELDS: dict[type, tuple[str, ...]] = {}


def replace(obj: _T, /, **changes: Any) -> _T:
    """``dataclasses.replace`` for the machine's own dataclasses, without its per-call checks.

    The bay machine makes a new state for every telemetry frame of every bay; the standard
    one looks the fields up and checks them again on each call, which was a third of the
    frame's cost.
    """
    cls = type(obj)
    names = _INIT_FIELDS.get(cls)
    if names is None:
        names = _INIT_FIELDS[cls] = tuple(f.name for f in fields(cls) if f.init)  # type: ignore[arg-type]
    for name in names:
        if name not in changes:
            changes[name] = getattr(obj, name)
    return cls(**changes)
