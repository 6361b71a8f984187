"""The bay state machine: one pure function per bay, ``transition(state, event, now)``.

It owns the flow of a bay (both kinds, ``evse`` and ``locker``), its timers,
and the mapping onto OCPP 1.6 ChargePointStatus. It does no I/O: it returns
effects (commands and records) that the station supervisor carries out and
journals in one transaction with the event.

Times (``now``, deadlines) are wall-clock seconds (``time.time()``) so that
timers survive a restart of the controller.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from controller.ports import PilotState

# Below this the outlet counts as drawing nothing (noise of the current sensor).
CURRENT_DETECT_A = 0.5


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
    | Telemetry
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
)


@dataclass(slots=True)
class _Out:
    effects: list[Effect] = field(default_factory=list)

    def add(self, *effects: Effect) -> None:
        self.effects.extend(effects)


# --------------------------------------------------------------------------- status


def ocpp_status(s: BayState) -> Status:
    if s.fault is not None or not s.node_online:
        return Status.FAULTED
    if s.phase is Phase.IDLE:
        return Status.AVAILABLE if s.available else Status.UNAVAILABLE
    return {
        Phase.HELD: Status.RESERVED,
        Phase.AUTHORIZED: Status.PREPARING,
        Phase.CHARGING: Status.CHARGING,
        Phase.SUSPENDED_EV: Status.SUSPENDED_EV,
        Phase.SUSPENDED_EVSE: Status.SUSPENDED_EVSE,
        Phase.FINISHING: Status.FINISHING,
    }[s.phase]


# --------------------------------------------------------------------------- transition


def transition(
    state: BayState, event: Event, now: float, timers: Timers = Timers()
) -> tuple[BayState, list[Effect]]:
    """Apply ``event`` at wall time ``now``; return the new state and the effects to carry out."""
    out = _Out()
    new = _step(state, event, now, timers, out)
    old_status, new_status = ocpp_status(state), ocpp_status(new)
    if old_status is not new_status:
        out.add(StatusChanged(old_status, new_status))
    return new, out.effects


def _step(s: BayState, ev: Event, now: float, t: Timers, out: _Out) -> BayState:
    match ev:
        case TokenPresented():
            return _token(s, ev, now, t, out)
        case HoldPlaced(hold=hold):
            if s.phase is not Phase.IDLE or s.fault or not s.node_online or not s.available:
                out.add(Refused("bay_busy", f"bay {s.bay_id} cannot be held now"))
                return s
            return replace(s, phase=Phase.HELD, hold=hold)
        case HoldCancelled(hold_id=hold_id):
            if s.hold is None or s.hold.hold_id != hold_id:
                out.add(Refused("unknown_hold", f"no hold {hold_id} on bay {s.bay_id}"))
                return s
            out.add(HoldEnded(s.hold, "cancelled"))
            phase = Phase.IDLE if s.phase is Phase.HELD else s.phase
            return replace(s, hold=None, phase=phase)
        case DoorChanged(closed=closed):
            return _door(replace(s, door_closed=closed), closed, now, t, out)
        case LockChanged(locked=locked):
            return replace(s, locked=locked)
        case Telemetry():
            return _telemetry(s, ev, now, t, out)
        case StopRequested(reason=reason, session_id=sid):
            if s.session is None or (sid is not None and s.session.session_id != sid):
                out.add(Refused("no_session", f"no such session on bay {s.bay_id}"))
                return s
            return _stop(s, reason, now, t, out)
        case NodeOnline(online=online):
            if online:
                return replace(s, node_online=True)
            if s.session is not None:
                out.add(Notice("node_offline", "bay node offline: session suspended"))
            return replace(s, node_online=False)
        case FaultRaised(code=code, stop=stop):
            s = replace(s, fault=code)
            if s.session is not None and stop:
                reason = StopReason.EMERGENCY_STOP if code == "emergency_stop" else StopReason.FAULT
                s = _stop(s, reason, now, t, out)
            out.add(SetRelay(False))
            return s
        case FaultCleared():
            return replace(s, fault=None)
        case AvailabilityChanged(available=available):
            if available:
                return replace(s, available=True, pending_unavailable=False)
            if s.phase is Phase.IDLE:
                return replace(s, available=False, pending_unavailable=False)
            return replace(s, pending_unavailable=True)
        case SetpointChanged(current_a=amps):
            s = replace(s, setpoint_a=amps)
            if s.phase is Phase.CHARGING and amps <= 0:
                return replace(s, phase=Phase.SUSPENDED_EVSE)
            if s.phase is Phase.SUSPENDED_EVSE and amps > 0:
                return replace(s, phase=Phase.CHARGING, deadline=None)
            return s
        case ModeChanged(mode=mode, session_id=sid):
            if s.session is None or (sid is not None and s.session.session_id != sid):
                out.add(Refused("no_session", f"no such session on bay {s.bay_id}"))
                return s
            sess = replace(s.session, mode=mode)
            out.add(UpdateSession(sess))
            return replace(s, session=sess)
        case Tick():
            return _tick(s, now, t, out)
    raise AssertionError(f"unhandled event {ev!r}")


def _token(s: BayState, ev: TokenPresented, now: float, t: Timers, out: _Out) -> BayState:
    if s.session is not None:
        if ev.token == s.session.token:
            return _stop(s, StopReason.LOCAL, now, t, out)
        out.add(Refused("bay_in_use", "This bay is in use."))
        return s
    if s.fault is not None or not s.node_online:
        out.add(Refused("bay_faulted", "This bay is out of order."))
        return s
    if not s.available:
        out.add(Refused("bay_unavailable", "This bay is not available."))
        return s
    if s.phase is Phase.FINISHING:
        out.add(Refused("bay_finishing", "The previous session is still finishing."))
        return s
    reservation_id = None
    if s.phase is Phase.HELD and s.hold is not None:
        if s.hold.token != ev.token:
            out.add(Refused("bay_reserved", "This bay is reserved for someone else."))
            return s
        reservation_id = s.hold.reservation_id
        out.add(HoldEnded(s.hold, "used"))
    meter = s.meter_wh or 0
    session = Session(
        session_id=ev.session_id,
        token=ev.token,
        auth_source=ev.auth_source,
        started_at=now,
        meter_start_wh=meter,
        meter_wh=meter,
        mode=ev.mode,
        reservation_id=reservation_id,
        quota_wh=ev.quota_wh,
        quota_s=ev.quota_s,
    )
    out.add(OpenSession(session))
    if s.kind is BayKind.LOCKER:
        out.add(SetLock(False))
    out.add(SetRelay(True))
    return replace(
        s,
        phase=Phase.AUTHORIZED,
        session=session,
        hold=None,
        deadline=now + t.connection_timeout_s,
    )


def _stop(s: BayState, reason: StopReason, now: float, t: Timers, out: _Out) -> BayState:
    assert s.session is not None
    out.add(SetRelay(False))
    out.add(CloseSession(s.session, reason, now))
    if s.kind is BayKind.LOCKER:
        if reason in (StopReason.EMERGENCY_STOP, StopReason.DOOR_FORCED):
            # Keep the door as it is: nobody should be sent to an unsafe compartment.
            return replace(s, phase=Phase.FINISHING, session=None, deadline=now + t.exit_grace_s)
        out.add(SetLock(False))
        return replace(s, phase=Phase.FINISHING, session=None, deadline=now + t.exit_grace_s)
    if s.pilot in (PilotState.A, PilotState.NONE):
        return _to_idle(replace(s, session=None, deadline=None), out)
    return replace(s, phase=Phase.FINISHING, session=None, deadline=None)


def _to_idle(s: BayState, out: _Out) -> BayState:
    if s.pending_unavailable:
        return replace(s, phase=Phase.IDLE, available=False, pending_unavailable=False)
    return replace(s, phase=Phase.IDLE)


def _door(s: BayState, closed: bool, now: float, t: Timers, out: _Out) -> BayState:
    if s.kind is not BayKind.LOCKER:
        return s
    if not closed and s.locked and s.session is not None:
        out.add(Notice("door_forced", "Door opened while locked: tamper alarm."))
        return _stop(s, StopReason.DOOR_FORCED, now, t, out)
    if closed and s.phase in (Phase.AUTHORIZED, Phase.CHARGING, Phase.SUSPENDED_EV):
        out.add(SetLock(True))
    if closed and s.phase is Phase.FINISHING:
        out.add(SetLock(True))
        return _to_idle(replace(s, deadline=None), out)
    return s


def _telemetry(s: BayState, ev: Telemetry, now: float, t: Timers, out: _Out) -> BayState:
    s = replace(s, pilot=ev.pilot)
    if s.meter_wh is None or ev.energy_wh >= s.meter_wh:
        # The node's counter is monotonic; a lower value means the node was reset,
        # and the session keeps the energy it already had.
        s = replace(s, meter_wh=ev.energy_wh)
    sess = s.session
    if sess is None:
        if s.kind is BayKind.EVSE and s.phase is Phase.FINISHING and ev.pilot is PilotState.A:
            return _to_idle(s, out)
        return s
    drawing = ev.current_a >= CURRENT_DETECT_A
    meter = max(sess.meter_wh, s.meter_wh or 0)
    sess = replace(
        sess,
        meter_wh=meter,
        peak_power_w=max(sess.peak_power_w, ev.power_w),
        last_current_at=now if drawing else sess.last_current_at,
    )
    if sess != s.session:
        out.add(UpdateSession(sess))
    s = replace(s, session=sess)
    if s.kind is BayKind.EVSE and ev.pilot is PilotState.A and s.phase is not Phase.AUTHORIZED:
        return _stop(s, StopReason.EV_DISCONNECTED, now, t, out)
    if _quota_reached(sess, now):
        return _stop(s, StopReason.QUOTA, now, t, out)
    if drawing and s.phase in (Phase.AUTHORIZED, Phase.SUSPENDED_EV):
        return replace(s, phase=Phase.CHARGING, deadline=None)
    if not drawing and s.phase is Phase.CHARGING:
        if s.setpoint_a <= 0:
            return replace(s, phase=Phase.SUSPENDED_EVSE)
        if ev.pilot is PilotState.B or (
            sess.last_current_at is not None and now - sess.last_current_at >= t.suspend_after_s
        ):
            return replace(s, phase=Phase.SUSPENDED_EV)
    return s


def _quota_reached(sess: Session, now: float) -> bool:
    if sess.quota_wh is not None and sess.energy_wh >= sess.quota_wh:
        return True
    return sess.quota_s is not None and now - sess.started_at >= sess.quota_s


def _tick(s: BayState, now: float, t: Timers, out: _Out) -> BayState:
    if s.phase is Phase.HELD and s.hold is not None and now >= s.hold.expires_at:
        out.add(HoldEnded(s.hold, "expired"))
        return replace(s, phase=Phase.IDLE, hold=None)
    if s.session is not None and _quota_reached(s.session, now):
        return _stop(s, StopReason.QUOTA, now, t, out)
    if s.deadline is None or now < s.deadline:
        return s
    if s.phase is Phase.AUTHORIZED and s.session is not None:
        return _stop(s, StopReason.CONNECTION_TIMEOUT, now, t, out)
    if s.phase is Phase.FINISHING and s.kind is BayKind.LOCKER:
        if s.door_closed is False:
            # A lock cannot latch an open door: wait for it to close (then _door locks).
            out.add(Notice("door_left_open", "Exit grace over: please close the door."))
            return replace(s, deadline=None)
        out.add(Notice("exit_grace_over", "Exit grace over: door locked again."))
        out.add(SetLock(True))
        return _to_idle(replace(s, deadline=None), out)
    return replace(s, deadline=None)
