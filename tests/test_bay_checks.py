"""Node reports are checked, not trusted (pure bay machine): energy steps, door and lock claims,
and a node whose address is contested."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core import energy_gate
from controller.core.bay import (
    BayKind,
    BayState,
    CloseSession,
    DoorChanged,
    DoorClaimed,
    Event,
    FaultCleared,
    FaultRaised,
    LockChanged,
    LockClaimed,
    MeterReanchored,
    Phase,
    ReadingRejected,
    SetLock,
    SetRelay,
    StopReason,
    StopRequested,
    Telemetry,
    Timers,
    TokenPresented,
    transition,
)
from controller.core.energy_gate import Verdict
from controller.ports import PilotState

T = Timers()
MAX_W = energy_gate.bay_max_power_w(16.0, 3)  # 16 A on three phases: 12.1 kW


def evse_charging(meter: int = 1000) -> BayState:
    s = BayState("b1", BayKind.EVSE, node_online=True, max_power_w=MAX_W)
    s, _ = transition(s, Telemetry(0, 0, meter, PilotState.B), 0.0, T)
    s, _ = transition(s, TokenPresented("CARD", "local", "s1"), 1.0, T)
    s, _ = transition(s, Telemetry(16, 11000, meter, PilotState.C, True), 2.0, T)
    assert s.session is not None
    return s


def run(s: BayState, *steps: tuple[float, Event]) -> tuple[BayState, list[object]]:
    effects: list[object] = []
    for now, ev in steps:
        s, eff = transition(s, ev, now, T)
        effects += eff
    return s, effects


def tel(wh: int, **kw: object) -> Telemetry:
    return Telemetry(16, 11000, wh, PilotState.C, True, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- energy


def test_one_wild_frame_is_rejected_once_and_metering_goes_on() -> None:
    s = evse_charging()
    s, eff = run(s, (3.0, tel(1003)), (4.0, tel(1003 + 5_000_000)), (5.0, tel(1006)))
    rejected = [e for e in eff if isinstance(e, ReadingRejected)]
    assert len(rejected) == 1 and rejected[0].verdict is Verdict.JUMP and rejected[0].first
    assert rejected[0].value_wh == 5_001_003 and rejected[0].booked_wh == 1003
    s, _ = run(s, (6.0, tel(1009)), (7.0, tel(1012)))
    assert s.session is not None and s.session.energy_wh == 12  # the real counter, not 5 MWh


def test_a_counter_going_back_is_rejected_and_the_session_keeps_its_energy() -> None:
    s = evse_charging()
    s, eff = run(s, (3.0, tel(1003)), (4.0, tel(40)), (5.0, tel(41)), (6.0, tel(1006)))
    rejected = [e for e in eff if isinstance(e, ReadingRejected)]
    assert [(r.verdict, r.first) for r in rejected] == [
        (Verdict.BACKWARDS, True),
        (Verdict.BACKWARDS, False),  # one run, one audit record
    ]
    assert s.session is not None and s.session.energy_wh == 6


def test_a_long_gap_allows_what_the_bay_could_deliver_meanwhile() -> None:
    s = evse_charging()
    # 20 minutes without a reading (controller down): up to 12.1 kW * 1.1 for 20 min is fine.
    s, eff = run(s, (1202.0, tel(1000 + 4000)))
    assert not any(isinstance(e, ReadingRejected) for e in eff)
    assert s.session is not None and s.session.energy_wh == 4000


def test_a_counter_that_restarted_is_re_anchored_only_between_sessions() -> None:
    s = evse_charging(meter=90_000)
    s, eff = run(s, *((3.0 + i, tel(10 + 3 * i)) for i in range(6)))
    assert s.meter_wh == 90_000 and not any(isinstance(e, MeterReanchored) for e in eff)
    s = replace(s, session=None)  # the session is over
    s, eff = run(s, *((20.0 + i, tel(40 + 3 * i)) for i in range(3)))
    # The readings that agreed during the session count: the first idle one re-anchors.
    assert [e for e in eff if isinstance(e, MeterReanchored)] == [MeterReanchored(90_000, 40)]
    assert s.meter_wh == 46


# Real frames: every 0.2-5 s a step the bay could deliver; forged frames: wild values.
real_step = st.tuples(st.floats(0.2, 5.0), st.floats(0.0, 1.0))
forged = st.one_of(st.integers(-10_000, -1), st.integers(10_000, 10**9))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(real_step, st.none() | forged), min_size=1, max_size=40))
def test_wild_frames_never_count_and_never_stop_real_metering(
    frames: list[tuple[tuple[float, float], int | None]],
) -> None:
    s = evse_charging(meter=50_000)
    now, real = 2.0, 50_000.0
    for (dt, load), wild in frames:
        now += dt
        real += MAX_W * load * dt / 3600  # the node's true counter
        s, _ = transition(s, tel(int(real)), now, T)
        if wild is not None:
            # A forged frame just after the real one: absurdly high, or behind the counter.
            s, eff = transition(s, tel(max(0, int(real) + wild)), now + 0.01, T)
            assert any(isinstance(e, ReadingRejected) for e in eff)
        assert s.session is not None
        assert s.session.meter_wh == int(real), "every real reading is booked, none forged"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 10.0), st.integers(0, 10**7)), max_size=30))
def test_booked_energy_never_exceeds_what_the_bay_could_deliver(
    frames: list[tuple[float, int]],
) -> None:
    s = evse_charging(meter=0)
    now, booked_steps = 2.0, 0
    for dt, wh in frames:
        now += dt
        before = s.meter_wh
        s, _ = transition(s, tel(wh), now, T)
        booked_steps += s.meter_wh != before
    assert s.session is not None
    bound = energy_gate.allowed_step_wh(MAX_W, now - 2.0) + booked_steps * (
        energy_gate.allowed_step_wh(MAX_W, 0.0)
    )
    assert s.session.energy_wh <= bound


# --------------------------------------------------------------------------- door and lock


def locker_charging() -> BayState:
    s = BayState("b1", BayKind.LOCKER, node_online=True, meter_wh=5, max_power_w=MAX_W)
    s = replace(s, door_closed=True, locked=True)
    s, _ = run(
        s,
        (1.0, TokenPresented("BIKE", "local", "s1")),
        (2.0, LockChanged(False)),
        (3.0, DoorChanged(False)),
        (4.0, DoorChanged(True)),  # bike in, door shut: the station locks it
        (5.0, LockChanged(True)),
        (6.0, Telemetry(1.5, 345, 6, door_closed=True, locked=True)),
    )
    assert s.session is not None and s.locked and s.door_closed and s.fault is None
    return s


def test_a_door_opened_event_the_sensors_deny_faults_instead_of_ending_the_session() -> None:
    s, eff = run(
        locker_charging(),
        (7.0, DoorClaimed(False)),  # "door forced open" ...
        (8.0, Telemetry(1.5, 345, 7, door_closed=True, locked=True)),  # ... sensors: shut, latched
    )
    assert s.fault == "door_contradiction"
    assert s.session is not None, "the session is not ended as DoorForced"
    assert not any(isinstance(e, CloseSession) for e in eff)
    assert SetRelay(False) in eff  # paused, safe
    s, eff = run(s, (9.0, FaultCleared()))
    assert s.fault is None and SetRelay(True) in eff


def test_a_real_forced_door_still_stops_the_session() -> None:
    s, eff = run(
        locker_charging(),
        (7.0, DoorClaimed(False)),
        (8.0, DoorChanged(False)),  # the telemetry agrees: open while latched
        (8.0, Telemetry(0, 0, 7, door_closed=False, locked=True)),
    )
    assert [e.reason for e in eff if isinstance(e, CloseSession)] == [StopReason.DOOR_FORCED]
    assert s.fault is None


def test_a_door_closed_event_with_the_door_open_does_not_lock_it() -> None:
    s = BayState("b1", BayKind.LOCKER, node_online=True, meter_wh=5, max_power_w=MAX_W)
    s = replace(s, door_closed=True, locked=True)
    s, _ = run(
        s,
        (1.0, TokenPresented("BIKE", "local", "s1")),
        (2.0, LockChanged(False)),
        (3.0, DoorChanged(False)),  # open: the driver puts the bike in
    )
    s, eff = run(
        s,
        (4.0, DoorClaimed(True)),
        (5.0, Telemetry(0, 0, 5, door_closed=False, locked=False)),
    )
    assert SetLock(True) not in eff
    assert s.fault == "door_contradiction" and s.door_closed is False


def test_a_lock_event_the_feedback_denies_faults() -> None:
    s, _ = run(
        locker_charging(),
        (7.0, LockClaimed(False)),
        (8.0, Telemetry(1.5, 345, 7, door_closed=True)),
    )
    assert s.fault is None, "a node reporting no lock feedback: nothing to contradict"
    s, _ = run(
        locker_charging(),
        (7.0, LockClaimed(False)),
        (8.0, Telemetry(1.5, 345, 7, door_closed=True, locked=True)),
    )
    assert s.fault == "lock_contradiction" and s.locked is True


def test_a_door_that_bounced_between_two_reports_is_no_contradiction() -> None:
    s, _ = run(
        locker_charging(),
        (7.0, DoorClaimed(False)),
        (7.1, DoorClaimed(True)),
        (8.0, Telemetry(1.5, 345, 7, door_closed=True, locked=True)),
    )
    assert s.fault is None and s.session is not None


def test_a_node_without_door_reports_has_its_events_taken_at_the_next_telemetry() -> None:
    _, eff = run(locker_charging(), (7.0, DoorClaimed(False)), (8.0, Telemetry(1.5, 345, 7)))
    assert [e.reason for e in eff if isinstance(e, CloseSession)] == [StopReason.DOOR_FORCED]


# --------------------------------------------------------------------------- contested address


def test_reports_from_a_contested_address_are_ignored_until_the_owner_clears() -> None:
    s, eff = run(evse_charging(), (3.0, FaultRaised("address_conflict", stop=False)))
    assert SetRelay(False) in eff and s.session is not None
    # The intruder says the car left and sends door / fault noise: none of it counts.
    s, eff = run(
        s,
        (4.0, Telemetry(0, 0, 1001, PilotState.A, False)),
        (5.0, FaultRaised("overcurrent", stop=False)),
    )
    assert s.session is not None and s.fault == "address_conflict"
    assert not any(isinstance(e, CloseSession) for e in eff)
    s, eff = run(s, (6.0, FaultCleared()), (7.0, tel(1004)))
    assert s.fault is None and SetRelay(True) in eff and s.session is not None
    s, eff = run(s, (8.0, FaultRaised("emergency_stop")))
    assert s.fault == "emergency_stop" and s.session is None


def test_a_quick_exit_through_the_unlocked_door_frees_the_locker() -> None:
    """The rider opens and shuts the unlocked door between two reports: the locker is free again."""
    s, _ = run(
        locker_charging(),
        (7.0, StopRequested(StopReason.LOCAL)),  # exit grace: the station unlocks the door
        (7.5, LockChanged(False)),
    )
    assert s.phase is Phase.FINISHING and s.locked is False
    s, eff = run(
        s,
        (8.0, DoorClaimed(False)),
        (8.2, DoorClaimed(True)),
        (9.0, Telemetry(0, 0, 7, door_closed=True, locked=False)),
    )
    assert s.phase is Phase.IDLE and SetLock(True) in eff
    assert s.fault is None


def test_a_forged_open_and_close_of_a_locked_door_changes_nothing() -> None:
    """The same pair of claims on a latched door cannot be told from a forgery: ignored."""
    s, eff = run(
        locker_charging(),
        (7.0, DoorClaimed(False)),
        (7.1, DoorClaimed(True)),
        (8.0, Telemetry(1.5, 345, 7, door_closed=True, locked=True)),
    )
    assert s.session is not None and s.fault is None
    assert not any(isinstance(e, CloseSession) for e in eff)


def test_a_quick_exit_reported_with_the_unlock_in_one_batch_frees_the_locker() -> None:
    """Unlocked, opened and closed before the next report: the report confirms all three."""
    s, _ = run(locker_charging(), (7.0, StopRequested(StopReason.LOCAL)))
    assert s.phase is Phase.FINISHING and s.locked is True  # the unlock is not confirmed yet
    s, eff = run(
        s,
        (7.2, LockClaimed(False)),
        (7.4, DoorClaimed(False)),
        (7.6, DoorClaimed(True)),
        (8.0, LockChanged(False)),  # the station applies what the report's feedback shows first
        (8.0, Telemetry(0, 0, 7, door_closed=True, locked=False)),
    )
    assert s.phase is Phase.IDLE and SetLock(True) in eff and s.fault is None
