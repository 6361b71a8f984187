"""The bay state machine: table-driven flows for both kinds, and a Hypothesis stateful test."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from controller.core.bay import (
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
    LockChanged,
    LockClaimed,
    NodeOnline,
    OpenSession,
    Phase,
    Reconcile,
    Refused,
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
    ocpp_status,
    transition,
)
from controller.ports import PilotState

T = Timers(connection_timeout_s=60, exit_grace_s=30, suspend_after_s=20)


def online(kind: BayKind, **kw: object) -> BayState:
    # A bay whose node has reported (its energy counter is known): it can start sessions.
    return replace(BayState("b1", kind, node_online=True, meter_wh=0), **kw)  # type: ignore[arg-type]


def run(state: BayState, *steps: tuple[float, Event]) -> tuple[BayState, list[list[Effect]]]:
    effects = []
    for now, ev in steps:
        state, eff = transition(state, ev, now, T)
        effects.append(eff)
    return state, effects


def kinds(effects: list[Effect]) -> list[type]:
    return [type(e) for e in effects]


def tok(token: str = "CARD1", sid: str = "s1", **kw: object) -> TokenPresented:
    return TokenPresented(token, "local", sid, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- EVSE


def test_evse_full_session() -> None:
    s = online(BayKind.EVSE, meter_wh=1000)
    s, (_, e2, e3, _, e5) = run(
        s,
        (0, Telemetry(0, 0, 1000, PilotState.B)),
        (1, tok()),
        (2, Telemetry(16, 11000, 1000, PilotState.C, True)),
        (3602, Telemetry(16, 11000, 12000, PilotState.C, True)),
        (3603, Telemetry(0, 0, 12000, PilotState.A, False)),
    )
    assert kinds(e2)[:3] == [OpenSession, SetRelay, StatusChanged]
    assert StatusChanged(Status.PREPARING, Status.CHARGING) in e3
    close = [e for e in e5 if isinstance(e, CloseSession)]
    assert len(close) == 1
    assert close[0].reason is StopReason.EV_DISCONNECTED
    assert close[0].session.energy_wh == 11000
    assert close[0].session.peak_power_w == 11000
    assert s.phase is Phase.IDLE and ocpp_status(s) is Status.AVAILABLE


def test_evse_stop_while_plugged_goes_finishing_until_unplugged() -> None:
    s = online(BayKind.EVSE, meter_wh=0)
    s, _ = run(
        s, (0, Telemetry(0, 0, 0, PilotState.B)), (1, tok()), (2, StopRequested(StopReason.REMOTE))
    )
    assert ocpp_status(s) is Status.FINISHING
    s, (eff,) = run(s, (3, Telemetry(0, 0, 0, PilotState.A)))
    assert ocpp_status(s) is Status.AVAILABLE
    assert StatusChanged(Status.FINISHING, Status.AVAILABLE) in eff


@pytest.mark.parametrize(
    ("start", "event", "code"),
    [
        (online(BayKind.EVSE, fault="overcurrent"), tok(), "bay_faulted"),
        (BayState("b1", BayKind.EVSE, node_online=False), tok(), "bay_faulted"),
        (online(BayKind.EVSE, available=False), tok(), "bay_unavailable"),
        (
            online(BayKind.EVSE, phase=Phase.HELD, hold=Hold("h1", "OTHER", 100.0)),
            tok(),
            "bay_reserved",
        ),
        (online(BayKind.EVSE), StopRequested(StopReason.LOCAL), "no_session"),
        (online(BayKind.EVSE), HoldCancelled("nope"), "unknown_hold"),
    ],
)
def test_refusals(start: BayState, event: Event, code: str) -> None:
    s, eff = transition(start, event, 10, T)
    assert s == start
    assert [e.code for e in eff if isinstance(e, Refused)] == [code]


def test_same_token_stops_own_session_other_token_refused() -> None:
    s, _ = run(online(BayKind.EVSE), (0, tok("A")))
    s2, eff = transition(s, tok("B", "s2"), 1, T)
    assert s2 == s and any(isinstance(e, Refused) and e.code == "bay_in_use" for e in eff)
    s3, eff = transition(s, tok("A", "s3"), 2, T)
    assert s3.session is None
    assert [e.reason for e in eff if isinstance(e, CloseSession)] == [StopReason.LOCAL]


def test_connection_timeout_closes_session_without_energy() -> None:
    s, _ = run(online(BayKind.EVSE), (0, tok()))
    s, (eff,) = run(s, (59, Tick()))
    assert s.session is not None
    s, (eff,) = run(s, (60, Tick()))
    assert [e.reason for e in eff if isinstance(e, CloseSession)] == [StopReason.CONNECTION_TIMEOUT]
    assert SetRelay(False) in eff


def test_suspended_states() -> None:
    s, _ = run(online(BayKind.EVSE), (0, tok()), (1, Telemetry(10, 6900, 0, PilotState.C, True)))
    assert ocpp_status(s) is Status.CHARGING
    s2, _ = run(s, (2, SetpointChanged(0)))
    assert ocpp_status(s2) is Status.SUSPENDED_EVSE
    s2, _ = run(s2, (3, SetpointChanged(8)))
    assert ocpp_status(s2) is Status.CHARGING
    s3, _ = run(replace(s, setpoint_a=16), (2, Telemetry(0, 0, 0, PilotState.B, True)))
    assert ocpp_status(s3) is Status.SUSPENDED_EV
    s3, _ = run(s3, (3, Telemetry(9, 6000, 1, PilotState.C, True)))
    assert ocpp_status(s3) is Status.CHARGING


@pytest.mark.parametrize(
    ("quota", "steps", "reason_at"),
    [
        ({"quota_wh": 500}, [(10, 400), (20, 500)], 1),
        ({"quota_s": 60.0}, [(30, 10), (61, 20)], 1),
    ],
)
def test_quota_ends_session(
    quota: dict[str, float], steps: list[tuple[float, int]], reason_at: int
) -> None:
    s, _ = run(online(BayKind.EVSE, meter_wh=0), (0, tok("CARD1", "s1", **quota)))
    results = []
    for now, wh in steps:
        s, eff = transition(s, Telemetry(10, 2300, wh, PilotState.C, True), now, T)
        results.append([e.reason for e in eff if isinstance(e, CloseSession)])
    assert results[reason_at] == [StopReason.QUOTA]
    assert all(r == [] for i, r in enumerate(results) if i != reason_at)


def test_energy_never_decreases_when_node_counter_resets() -> None:
    s, _ = run(
        online(BayKind.EVSE, meter_wh=5000),
        (0, tok()),
        (1, Telemetry(10, 2300, 5600, PilotState.C)),
    )
    assert s.session is not None and s.session.energy_wh == 600
    s, _ = run(s, (2, Telemetry(10, 2300, 10, PilotState.C)))
    assert s.session is not None and s.session.energy_wh == 600


# --------------------------------------------------------------------------- locker


def test_locker_golden_flow() -> None:
    s = online(BayKind.LOCKER, door_closed=True, locked=True, meter_wh=200)
    hold = Hold("h1", "BIKE", expires_at=900.0, reservation_id=7)
    s, eff = run(
        s,
        (0, HoldPlaced(hold)),
        (100, tok("BIKE")),  # arrives within grace and scans
        (101, LockChanged(False)),
        (102, DoorChanged(False)),
        (110, DoorChanged(True)),
        (111, LockChanged(True)),
        (112, Telemetry(1.5, 350, 200)),  # current detected
        (3712, Telemetry(1.5, 350, 550)),
        (3713, StopRequested(StopReason.LOCAL)),  # ends by user
        (3714, LockChanged(False)),
        (3720, DoorChanged(False)),  # takes the device
        (3730, DoorChanged(True)),  # door closed: finalized
    )
    assert StatusChanged(Status.AVAILABLE, Status.RESERVED) in eff[0]
    assert HoldEnded(hold, "used") in eff[1]
    opened = [e for e in eff[1] if isinstance(e, OpenSession)]
    assert opened[0].session.reservation_id == 7
    assert SetLock(False) in eff[1]
    assert SetLock(True) in eff[4]
    assert StatusChanged(Status.PREPARING, Status.CHARGING) in eff[6]
    closed = [e for e in eff[8] if isinstance(e, CloseSession)]
    assert closed[0].session.energy_wh == 350
    assert SetLock(False) in eff[8] and SetRelay(False) in eff[8]
    assert ocpp_status(s) is Status.AVAILABLE
    assert SetLock(True) in eff[11]


def test_locker_hold_expires_and_frees_bay() -> None:
    s = online(BayKind.LOCKER, door_closed=True)
    s, eff = run(s, (0, HoldPlaced(Hold("h1", "X", 50.0))), (49, Tick()), (50, Tick()))
    assert eff[1] == []
    assert any(isinstance(e, HoldEnded) and e.outcome == "expired" for e in eff[2])
    assert ocpp_status(s) is Status.AVAILABLE
    # only one active hold per bay
    s, _ = run(s, (60, HoldPlaced(Hold("h2", "X", 500.0))))
    s2, eff2 = transition(s, HoldPlaced(Hold("h3", "Y", 500.0)), 61, T)
    assert s2 == s and any(isinstance(e, Refused) for e in eff2)


def test_locker_door_forced_open_while_charging_stops() -> None:
    s = online(BayKind.LOCKER, door_closed=True, meter_wh=0)
    s, _ = run(s, (0, tok()), (1, LockChanged(True)), (2, Telemetry(1, 230, 5)))
    s, (eff,) = run(s, (3, DoorChanged(False)))
    assert [e.reason for e in eff if isinstance(e, CloseSession)] == [StopReason.DOOR_FORCED]
    assert SetRelay(False) in eff


def test_locker_exit_grace_waits_for_open_door_then_locks() -> None:
    s = online(BayKind.LOCKER, door_closed=True, meter_wh=0)
    s, _ = run(s, (0, tok()), (1, StopRequested(StopReason.LOCAL)), (2, DoorChanged(False)))
    s, (eff,) = run(s, (40, Tick()))  # exit grace (30 s) over with the door open
    assert ocpp_status(s) is Status.FINISHING and SetLock(True) not in eff
    s, (eff,) = run(s, (41, DoorChanged(True)))
    assert SetLock(True) in eff and ocpp_status(s) is Status.AVAILABLE


def test_node_offline_faults_and_suspends_then_recovers() -> None:
    s, _ = run(online(BayKind.EVSE), (0, tok()))
    s, (eff,) = run(s, (1, NodeOnline(False)))
    assert ocpp_status(s) is Status.FAULTED and s.session is not None
    assert not any(isinstance(e, CloseSession) for e in eff)
    s, _ = run(s, (2, NodeOnline(True)))
    assert ocpp_status(s) is Status.PREPARING


def test_emergency_stop_fault_stops_session() -> None:
    s, _ = run(online(BayKind.EVSE), (0, tok()))
    s, (eff,) = run(s, (1, FaultRaised("emergency_stop")))
    assert [e.reason for e in eff if isinstance(e, CloseSession)] == [StopReason.EMERGENCY_STOP]
    assert ocpp_status(s) is Status.FAULTED
    s, _ = run(s, (2, FaultCleared()))
    assert ocpp_status(s) is Status.AVAILABLE


def test_change_availability_scheduled_while_session_runs() -> None:
    s, _ = run(online(BayKind.EVSE), (0, tok()), (1, AvailabilityChanged(False)))
    assert s.pending_unavailable and ocpp_status(s) is Status.PREPARING
    s, _ = run(s, (2, StopRequested(StopReason.REMOTE)))
    assert ocpp_status(s) is Status.UNAVAILABLE


# --------------------------------------------------------------------------- stateful


class BayMachine(RuleBasedStateMachine):
    """Random event sequences; the invariants of the issue must hold after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.state = BayState("b1", BayKind.LOCKER, node_online=True, door_closed=True, meter_wh=0)
        self.counter = 0
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.energy: dict[str, int] = {}

    def step(self, ev: Event) -> None:
        before = self.state
        self.state, effects = transition(self.state, ev, self.now, T)
        for e in effects:
            if isinstance(e, OpenSession):
                assert before.session is None
                self.opened.append(e.session.session_id)
            if isinstance(e, CloseSession):
                self.closed.append(e.session.session_id)
        if self.state.session is not None:
            sid = self.state.session.session_id
            e_wh = self.state.session.energy_wh
            assert e_wh >= self.energy.get(sid, 0), "a session's energy never decreases"
            self.energy[sid] = e_wh

    @rule(kind=st.sampled_from([BayKind.EVSE, BayKind.LOCKER]))
    def switch_kind(self, kind: BayKind) -> None:
        if self.state.session is None and self.state.phase is Phase.IDLE:
            self.state = replace(self.state, kind=kind)

    @rule(dt=st.floats(0, 200))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.step(Tick())

    @rule(token=st.sampled_from(["A", "B"]))
    def token(self, token: str) -> None:
        self.counter += 1
        self.step(TokenPresented(token, "local", f"s{self.counter}"))

    @rule(token=st.sampled_from(["A", "B"]), ttl=st.floats(1, 500))
    def hold(self, token: str, ttl: float) -> None:
        self.counter += 1
        self.step(HoldPlaced(Hold(f"h{self.counter}", token, self.now + ttl)))

    @precondition(lambda self: self.state.hold is not None)
    @rule()
    def cancel_hold(self) -> None:
        assert self.state.hold is not None
        self.step(HoldCancelled(self.state.hold.hold_id))

    @rule(
        current=st.floats(0, 32),
        dwh=st.integers(-50, 500),
        pilot=st.sampled_from(list(PilotState)),
        plug=st.none() | st.integers(0, 2),
        boot=st.integers(0, 1),
        door=st.none() | st.booleans(),
        locked=st.none() | st.booleans(),
        restart=st.booleans(),
    )
    def telemetry(
        self,
        current: float,
        dwh: int,
        pilot: PilotState,
        plug: int | None,
        boot: int,
        door: bool | None,
        locked: bool | None,
        restart: bool,
    ) -> None:
        meter = max(0, (self.state.meter_wh or 0) + dwh)
        tel = Telemetry(
            current,
            current * 230,
            meter,
            pilot,
            current > 0,
            plug,
            None if plug is None else boot,
            door,
            locked,
        )
        self.step(Reconcile(tel) if restart else tel)

    @rule(closed=st.booleans())
    def door_claim(self, closed: bool) -> None:
        self.step(DoorClaimed(closed))

    @rule(locked=st.booleans())
    def lock_claim(self, locked: bool) -> None:
        self.step(LockClaimed(locked))

    @rule(closed=st.booleans())
    def door(self, closed: bool) -> None:
        self.step(DoorChanged(closed))

    @rule(locked=st.booleans())
    def lock(self, locked: bool) -> None:
        self.step(LockChanged(locked))

    @rule(reason=st.sampled_from(list(StopReason)))
    def stop(self, reason: StopReason) -> None:
        self.step(StopRequested(reason))

    @rule(up=st.booleans())
    def node(self, up: bool) -> None:
        self.step(NodeOnline(up))

    @rule(stop=st.booleans(), code=st.sampled_from(["f", "address_conflict", "emergency_stop"]))
    def fault(self, stop: bool, code: str) -> None:
        self.step(FaultRaised(code, stop))

    @rule()
    def clear(self) -> None:
        self.step(FaultCleared())

    @rule(available=st.booleans())
    def availability(self, available: bool) -> None:
        self.step(AvailabilityChanged(available))

    @rule(amps=st.sampled_from([0.0, 6.0, 16.0]))
    def setpoint(self, amps: float) -> None:
        self.step(SetpointChanged(amps))

    @invariant()
    def at_most_one_open_session(self) -> None:
        open_now = set(self.opened) - set(self.closed)
        assert len(open_now) <= 1
        if self.state.session is not None:
            assert open_now == {self.state.session.session_id}
        else:
            assert open_now == set()

    @invariant()
    def open_session_never_available(self) -> None:
        if self.state.session is not None:
            assert ocpp_status(self.state) is not Status.AVAILABLE

    @invariant()
    def closed_exactly_once(self) -> None:
        assert len(self.closed) == len(set(self.closed))
        assert set(self.closed) <= set(self.opened)


TestBayMachine = BayMachine.TestCase
TestBayMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
