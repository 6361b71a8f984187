"""The bay state machine: one pure function per bay, ``transition(state, event, now)``.

It owns the flow of a bay (both kinds, ``evse`` and ``locker``), its timers,
and the mapping onto OCPP 1.6 ChargePointStatus. It does no I/O: it returns
effects (commands and records) that the station supervisor carries out and
journals in one transaction with the event.

Node reports are checked here, not trusted: an energy counter step physics
cannot explain is not booked (``controller.core.energy_gate``), a door or lock event
counts only when the node's telemetry agrees, a session goes on across an
outage only while the node's plug and boot counters say the same vehicle
stayed, and a node whose address is contested is not listened to at all.

The types (state, events, effects) live in ``controller.core.bay_model`` and are
re-exported here. Times (``now``, deadlines) are wall-clock seconds
(``time.time()``) so that timers survive a restart of the controller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.core import energy_gate
from controller.core.bay_model import (
    ANY_BAY_MAX_POWER_W,
    CURRENT_DETECT_A,
    UNTRUSTED_FAULTS,
    AvailabilityChanged,
    BayKind,
    BayState,
    CloseSession,
    DoorChanged,
    DoorClaimed,
    Effect,
    Event,
    FaultCleared,
    FaultRaised,
    Hold,
    HoldCancelled,
    HoldEnded,
    HoldPlaced,
    InterruptionEnded,
    LockChanged,
    LockClaimed,
    MeterReanchored,
    ModeChanged,
    NodeOnline,
    Notice,
    OpenSession,
    Phase,
    ReadingRejected,
    Reconcile,
    Refused,
    Session,
    SetLock,
    SetpointChanged,
    SetRelay,
    Status,
    StatusChanged,
    StopReason,
    StopRequested,
    Telemetry,
    Tick,
    Timers,
    TokenPresented,
    UpdateSession,
    replace,
)
from controller.core.energy_gate import Verdict
from controller.ports import PilotState

__all__ = [
    "ANY_BAY_MAX_POWER_W",
    "CURRENT_DETECT_A",
    "FAULT_MESSAGES",
    "UNTRUSTED_FAULTS",
    "AvailabilityChanged",
    "BayKind",
    "BayState",
    "CloseSession",
    "DoorChanged",
    "DoorClaimed",
    "Effect",
    "Event",
    "FaultCleared",
    "FaultRaised",
    "Hold",
    "HoldCancelled",
    "HoldEnded",
    "HoldPlaced",
    "InterruptionEnded",
    "LockChanged",
    "LockClaimed",
    "MeterReanchored",
    "ModeChanged",
    "NodeOnline",
    "Notice",
    "OpenSession",
    "Phase",
    "ReadingRejected",
    "Reconcile",
    "Refused",
    "Session",
    "SetLock",
    "SetRelay",
    "SetpointChanged",
    "Status",
    "StatusChanged",
    "StopReason",
    "StopRequested",
    "Telemetry",
    "Tick",
    "Timers",
    "TokenPresented",
    "UpdateSession",
    "fault_message",
    "ocpp_status",
    "offline_reason",
    "tick_due",
    "transition",
]


@dataclass(slots=True)
class _Out:
    effects: list[Effect] = field(default_factory=list)

    def add(self, *effects: Effect) -> None:
        self.effects.extend(effects)


# --------------------------------------------------------------------------- status


def ocpp_status(s: BayState) -> Status:
    if s.fault is None and not s.node_online and s.awaiting_node and s.session is not None:
        return Status.SUSPENDED_EVSE  # the controller restarted; the node has not spoken yet
    if s.fault is not None or not s.node_online:
        return Status.FAULTED
    if s.phase is Phase.IDLE:
        return Status.AVAILABLE if s.available else Status.UNAVAILABLE
    if s.phase is Phase.FINISHING and not s.available:
        return Status.UNAVAILABLE  # made inoperative after its transaction ended
    return _PHASE_STATUS[s.phase]


_PHASE_STATUS = {
    Phase.HELD: Status.RESERVED,
    Phase.AUTHORIZED: Status.PREPARING,
    Phase.CHARGING: Status.CHARGING,
    Phase.SUSPENDED_EV: Status.SUSPENDED_EV,
    Phase.SUSPENDED_EVSE: Status.SUSPENDED_EVSE,
    Phase.FINISHING: Status.FINISHING,
}


# Fault codes the station raises itself, and the sentence the owner UI shows for each.
FAULT_MESSAGES: dict[str, str] = {
    "emergency_stop": "The emergency stop was pressed: all charging is stopped.",
    "lock_fault": "The door lock does not respond: please check the lock of this bay.",
    "overcurrent": "The vehicle drew more than allowed: charging on this bay was stopped.",
    "relay_stuck": "The charger's relay does not open: please have this bay checked.",
    "node_fault": "The charger of this bay reports a fault.",
    "address_conflict": (
        "Two devices answer for this bay's charger: charging is paused "
        "until the wiring and addresses are checked."
    ),
    "node_identity": (
        "The charger on this bay is not the one that was installed: charging is paused "
        "until it is checked."
    ),
    "door_contradiction": (
        "The door reports contradict each other: charging is paused until the door is checked."
    ),
    "lock_contradiction": (
        "The lock reports contradict each other: charging is paused until the lock is checked."
    ),
}


def fault_message(code: str | None) -> str | None:
    """The owner-facing sentence for a fault code (a generic one for codes from the node)."""
    if code is None:
        return None
    return FAULT_MESSAGES.get(code, "The charger of this bay reports a fault.")


def offline_reason(s: BayState) -> str | None:
    """Why the bay's node is not heard: ``controller_restart`` (waiting for its first report
    after the station restarted) or ``node_offline``; ``None`` while it reports."""
    if s.node_online:
        return None
    return "controller_restart" if s.awaiting_node else "node_offline"


# --------------------------------------------------------------------------- transition


_DEFAULT_TIMERS = Timers()


def transition(
    state: BayState, event: Event, now: float, timers: Timers = _DEFAULT_TIMERS
) -> tuple[BayState, list[Effect]]:
    """Apply ``event`` at wall time ``now``; return the new state and the effects to carry out."""
    out = _Out()
    new = _step(state, event, now, timers, out)
    old_status, new_status = ocpp_status(state), ocpp_status(new)
    if old_status is not new_status:
        out.add(StatusChanged(old_status, new_status))
    return new, out.effects


_NODE_REPORTS = (Telemetry, Reconcile, DoorChanged, LockChanged, DoorClaimed, LockClaimed)


def _step(s: BayState, ev: Event, now: float, t: Timers, out: _Out) -> BayState:
    if s.fault in UNTRUSTED_FAULTS and isinstance(ev, _NODE_REPORTS):
        return s  # another device may be speaking for the node: nothing it says counts
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
            return _door(replace(s, door_closed=closed, door_claim=None), closed, now, t, out)
        case LockChanged(locked=locked):
            return replace(s, locked=locked, lock_claim=None)
        case DoorClaimed(closed=closed):
            unlocked = s.locked is False or s.lock_claim is False
            if closed and s.door_claim is False and s.door_closed and unlocked:
                return replace(s, door_claim=True, door_cycle=True)
            return replace(
                s, door_claim=None if closed == s.door_closed else closed, door_cycle=False
            )
        case LockClaimed(locked=locked):
            return replace(s, lock_claim=None if locked == s.locked else locked)
        case Telemetry():
            return _telemetry(s, ev, now, t, out)
        case Reconcile(telemetry=tel, clean_restart=clean):
            s = replace(s, node_online=True)
            if s.session is not None and s.interrupted_since is None:
                s = replace(s, interrupted_since=now, interruption="controller_restart")
            return _telemetry(s, tel, now, t, out, restart=True, clean=clean)
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
                return replace(
                    s,
                    node_online=False,
                    awaiting_node=False,
                    interrupted_since=s.interrupted_since if s.interrupted_since else now,
                    interruption=s.interruption or "node_offline",
                )
            return replace(s, node_online=False, awaiting_node=False)
        case FaultRaised(code=code, stop=stop):
            return _fault(s, code, stop, now, t, out)
        case FaultCleared():
            if s.fault is not None and s.session is not None and s.phase in _SESSION_PHASES:
                out.add(SetRelay(True))  # a session the fault only paused goes on
            return replace(s, fault=None)
        case AvailabilityChanged(available=available):
            if available:
                return replace(s, available=True, pending_unavailable=False)
            if s.phase is Phase.IDLE or (s.session is None and s.phase is Phase.FINISHING):
                # No transaction runs (Finishing: it ended, the vehicle is still plugged):
                # the change applies now; only a running transaction makes it wait.
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


_SESSION_PHASES = (Phase.AUTHORIZED, Phase.CHARGING, Phase.SUSPENDED_EV, Phase.SUSPENDED_EVSE)


def _fault(s: BayState, code: str, stop: bool, now: float, t: Timers, out: _Out) -> BayState:
    if s.fault not in UNTRUSTED_FAULTS or code == "emergency_stop":
        s = replace(s, fault=code)  # an untrusted node cannot swap its fault for another
    if s.session is not None and stop:
        reason = StopReason.EMERGENCY_STOP if code == "emergency_stop" else StopReason.FAULT
        s = _stop(s, reason, now, t, out)
    out.add(SetRelay(False))
    return s


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
    if s.phase is Phase.HELD and s.hold is not None and s.hold.token != ev.token:
        out.add(Refused("bay_reserved", "This bay is reserved for someone else."))
        return s
    if s.meter_wh is None:
        # No reading of the node's energy counter yet: the session would have no true start.
        out.add(Refused("bay_starting", "The charger is still starting up. Try again in a moment."))
        return s
    if s.phase is Phase.HELD and s.hold is not None:
        reservation_id = s.hold.reservation_id
        out.add(HoldEnded(s.hold, "used"))
    meter = s.meter_wh or 0
    session = Session(
        plug_count=s.plug_count,
        boot_id=s.boot_id,
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
    if s.interrupted_since is not None:
        out.add(
            InterruptionEnded(
                s.session.session_id,
                s.interrupted_since,
                now,
                s.interruption or "node_offline",
                reason.value,
            )
        )
    sess = s.session
    s = replace(s, interrupted_since=None, interruption=None, awaiting_node=False)
    out.add(SetRelay(False))
    out.add(CloseSession(sess, reason, now))
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


def _telemetry(
    s: BayState,
    ev: Telemetry,
    now: float,
    t: Timers,
    out: _Out,
    *,
    restart: bool = False,
    clean: bool = False,
) -> BayState:
    # Per frame: a new state only for what changed (most frames change the meter alone).
    if ev.plug_count is not None and ev.boot_id is not None:
        if s.pilot is not ev.pilot or s.plug_count != ev.plug_count or s.boot_id != ev.boot_id:
            s = replace(s, pilot=ev.pilot, plug_count=ev.plug_count, boot_id=ev.boot_id)
    elif s.pilot is not ev.pilot:
        s = replace(s, pilot=ev.pilot)
    s = _claims(s, ev, now, t, out)
    booked = _meter(s, ev, now, out)  # the meter's changes, made with the session's below
    sess = s.session
    if sess is None:
        if s.interrupted_since is not None or s.interruption is not None or s.awaiting_node:
            booked.update(interrupted_since=None, interruption=None, awaiting_node=False)
        s = replace(s, **booked)
        if s.kind is BayKind.EVSE and s.phase is Phase.FINISHING and ev.pilot is PilotState.A:
            return _to_idle(s, out)
        return s
    drawing = ev.current_a >= CURRENT_DETECT_A
    meter = max(sess.meter_wh, booked.get("meter_wh", s.meter_wh) or 0)
    sess = replace(
        sess,
        meter_wh=meter,
        peak_power_w=max(sess.peak_power_w, ev.power_w),
        last_current_at=now if drawing else sess.last_current_at,
    )
    if sess.plug_count is None and s.plug_count is not None:
        # A session begun before the node reported continuity adopts what it reports now.
        sess = replace(sess, plug_count=s.plug_count, boot_id=s.boot_id)
    if sess != s.session:
        out.add(UpdateSession(sess))
        booked["session"] = sess
    s = replace(s, **booked)
    reason = _continuity_break(s, sess, ev)
    if reason is None and s.interrupted_since is not None:
        reason = _resume_verdict(s, sess, ev, now, t, restart=restart, clean=clean)
        if reason is None:
            out.add(
                InterruptionEnded(
                    sess.session_id,
                    s.interrupted_since,
                    now,
                    s.interruption or "node_offline",
                    "resumed",
                )
            )
            out.add(SetRelay(True))  # re-armed: the load manager funds it like any start
            s = replace(s, interrupted_since=None, interruption=None, awaiting_node=False)
    if reason is not None:
        return _stop(s, reason, now, t, out)
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


def _meter(s: BayState, ev: Telemetry, now: float, out: _Out) -> dict[str, Any]:
    """Book the node's energy counter if physics allows the step (see ``controller.core.energy_gate``).

    Returns the changes to the bay's state (the caller makes them, with its own, at once).
    """
    if s.meter_wh is None:
        return {"meter_wh": ev.energy_wh, "meter_at": now, "meter_doubt": None}
    verdict = energy_gate.check(s.meter_wh, s.meter_at, ev.energy_wh, now, s.max_power_w)
    if verdict is Verdict.OK:
        return {"meter_wh": ev.energy_wh, "meter_at": now, "meter_doubt": None}
    doubt = energy_gate.doubt_after(s.meter_doubt, ev.energy_wh, now, s.max_power_w)
    if energy_gate.reanchor(doubt, in_session=s.session is not None):
        out.add(MeterReanchored(s.meter_wh, ev.energy_wh))
        return {"meter_wh": ev.energy_wh, "meter_at": now, "meter_doubt": None}
    dt = now - s.meter_at if s.meter_at is not None else 0.0
    allowed = energy_gate.allowed_step_wh(s.max_power_w, dt)
    out.add(ReadingRejected(verdict, ev.energy_wh, s.meter_wh, allowed, s.meter_doubt is None))
    return {"meter_doubt": doubt}


def _claims(s: BayState, ev: Telemetry, now: float, t: Timers, out: _Out) -> BayState:
    """Door and lock EVENTs count only if the sensors agree; a contradiction faults the bay."""
    door, lock, cycle = s.door_claim, s.lock_claim, s.door_cycle
    if door is None and lock is None:
        return s
    s = replace(s, door_claim=None, lock_claim=None, door_cycle=False)
    if lock is not None:
        if ev.locked is None:
            s = replace(s, locked=lock)  # no lock feedback in telemetry: the event is all there is
        elif ev.locked != lock:
            out.add(Notice("lock_contradiction", FAULT_MESSAGES["lock_contradiction"]))
            s = _fault(s, "lock_contradiction", False, now, t, out)
    if door is not None:
        if cycle and ev.door_closed is not False and s.locked is False:
            # Opened and closed again between two reports through an unlocked door: both
            # happened (the sensors can only confirm the end of it).
            s = _door(replace(s, door_closed=False), False, now, t, out)
            return _door(replace(s, door_closed=True), True, now, t, out)
        if ev.door_closed is None:
            s = _door(replace(s, door_closed=door), door, now, t, out)
        elif ev.door_closed != door:
            # e.g. "door opened" while the sensor says closed and the lock is latched: a forged or
            # faulty report must not end a session as DoorForced, nor lock an open door.
            out.add(Notice("door_contradiction", FAULT_MESSAGES["door_contradiction"]))
            s = _fault(s, "door_contradiction", False, now, t, out)
    return s


def _continuity_break(s: BayState, sess: Session, ev: Telemetry) -> StopReason | None:
    """Has the vehicle that began the session left, or has the node lost power since?"""
    if sess.boot_id is not None and ev.boot_id is not None and ev.boot_id != sess.boot_id:
        return StopReason.POWER_LOSS  # the node restarted: it cannot vouch for the plug
    if sess.plug_count is not None and ev.plug_count is not None:
        if ev.plug_count != sess.plug_count:
            return StopReason.EV_DISCONNECTED  # unplugged (and maybe plugged again) meanwhile
    if s.kind is BayKind.EVSE and ev.pilot is PilotState.A and s.phase is not Phase.AUTHORIZED:
        return StopReason.EV_DISCONNECTED
    return None


def _resume_verdict(
    s: BayState, sess: Session, ev: Telemetry, now: float, t: Timers, *, restart: bool, clean: bool
) -> StopReason | None:
    """After an outage with continuity unbroken: continue, unless too long or unprovable."""
    assert s.interrupted_since is not None
    if now - s.interrupted_since > t.max_interruption_s:
        return StopReason.INTERRUPTED_TOO_LONG
    provable = sess.boot_id is not None and ev.boot_id is not None
    if restart and not provable and not ev.relay_on:
        # A node without plug continuity: only a relay still closed says the car stayed.
        return StopReason.REBOOT if clean else StopReason.POWER_LOSS
    return None


def _quota_reached(sess: Session, now: float) -> bool:
    if sess.quota_wh is not None and sess.energy_wh >= sess.quota_wh:
        return True
    return sess.quota_s is not None and now - sess.started_at >= sess.quota_s


def tick_due(s: BayState, now: float, t: Timers) -> bool:
    """Whether a :class:`Tick` at ``now`` can change the bay: one of its timers has run out.

    Most ticks find nothing due (a charging bay with no quota has no timer): the station
    skips those instead of taking a transition per bay per second. ``_tick`` starts with
    this test, so a tick that is not due is one that would return the state unchanged.
    """
    if (
        s.session is not None
        and s.interrupted_since is not None
        and not s.awaiting_node
        and now - s.interrupted_since >= t.max_interruption_s
    ):
        return True
    if s.phase is Phase.HELD and s.hold is not None and now >= s.hold.expires_at:
        return True
    if s.session is not None and _quota_reached(s.session, now):
        return True
    return s.deadline is not None and now >= s.deadline


def _tick(s: BayState, now: float, t: Timers, out: _Out) -> BayState:
    if not tick_due(s, now, t):
        return s
    if (
        s.session is not None
        and s.interrupted_since is not None
        and not s.awaiting_node
        and now - s.interrupted_since >= t.max_interruption_s
    ):
        out.add(Notice("interrupted_too_long", "The charger stayed unreachable: session closed."))
        return _stop(s, StopReason.INTERRUPTED_TOO_LONG, now, t, out)
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
