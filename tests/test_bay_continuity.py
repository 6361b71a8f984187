"""Plug continuity in the pure bay machine: a restart or a node blip is not the end of a session."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.core.accounting import Tariff
from controller.core.bay import (
    BayKind,
    BayState,
    CloseSession,
    Event,
    InterruptionEnded,
    NodeOnline,
    Reconcile,
    SetRelay,
    Status,
    StopReason,
    Telemetry,
    Tick,
    Timers,
    TokenPresented,
    ocpp_status,
    offline_reason,
    transition,
)
from controller.core.persist import build_commit
from controller.ports import PilotState

T = Timers(max_interruption_s=900)
PLUG, BOOT = 7, 41


def charging(plug: int | None = PLUG, boot: int | None = BOOT) -> BayState:
    """An EVSE charging at 11 kW; the node reported ``plug``/``boot`` when the session began."""
    s = BayState("b1", BayKind.EVSE, node_online=True)
    for now, ev in (
        (0.0, Telemetry(0, 0, 1000, PilotState.B, False, plug, boot)),
        (1.0, TokenPresented("CARD", "local", "s1")),
        (2.0, Telemetry(16, 11000, 1000, PilotState.C, True, plug, boot)),
        (62.0, Telemetry(16, 11000, 1183, PilotState.C, True, plug, boot)),
    ):
        s, _ = transition(s, ev, now, T)
    assert s.session is not None
    return s


def restarted(s: BayState, since: float) -> BayState:
    """What ``Station.restore`` makes of a bay with a session: suspended, waiting for its node."""
    return replace(
        s,
        node_online=False,
        setpoint_a=0.0,
        interrupted_since=since,
        interruption="controller_restart",
        awaiting_node=True,
    )


def apply(s: BayState, *steps: tuple[float, Event]) -> tuple[BayState, list[object]]:
    effects: list[object] = []
    for now, ev in steps:
        s, eff = transition(s, ev, now, T)
        effects += eff
    return s, effects


def test_a_session_remembers_the_plug_and_boot_it_began_with() -> None:
    s = charging()
    assert s.session is not None
    assert (s.session.plug_count, s.session.boot_id) == (PLUG, BOOT)


def test_waiting_for_the_node_after_a_restart_is_suspended_evse_not_faulted() -> None:
    s = restarted(charging(), since=62.0)
    assert ocpp_status(s) is Status.SUSPENDED_EVSE
    assert offline_reason(s) == "controller_restart"
    s, _ = apply(s, (65.0, NodeOnline(False)))  # the node did not answer either
    assert ocpp_status(s) is Status.FAULTED
    assert offline_reason(s) == "node_offline"
    assert s.interrupted_since == 62.0 and s.interruption == "controller_restart"


def test_same_plug_and_boot_continues_whatever_the_relay_did() -> None:
    s = restarted(charging(), since=62.0)
    # The lease ran out during the outage: relay open, nothing drawn, counter moved on a bit.
    tel = Telemetry(0, 0, 1190, PilotState.B, False, PLUG, BOOT)
    s, eff = apply(s, (82.0, Reconcile(tel)))
    assert s.session is not None and s.session.session_id == "s1"
    assert s.session.meter_wh == 1190 and s.session.meter_start_wh == 1000
    assert not any(isinstance(e, CloseSession) for e in eff)
    assert SetRelay(True) in eff, "the setpoint is re-armed"
    ended = [e for e in eff if isinstance(e, InterruptionEnded)]
    assert ended == [InterruptionEnded("s1", 62.0, 82.0, "controller_restart", "resumed")]
    assert s.interrupted_since is None and not s.awaiting_node
    assert ocpp_status(s) is not Status.FAULTED


@pytest.mark.parametrize(
    ("plug", "boot", "pilot", "reason"),
    [
        (PLUG, BOOT + 1, PilotState.C, StopReason.POWER_LOSS),  # node power-cycled
        (PLUG + 1, BOOT, PilotState.B, StopReason.EV_DISCONNECTED),  # unplugged, plugged again
        (PLUG + 1, BOOT, PilotState.A, StopReason.EV_DISCONNECTED),  # the car left
        (PLUG, BOOT, PilotState.A, StopReason.EV_DISCONNECTED),  # pilot says so
    ],
)
def test_the_session_ends_only_if_the_car_left_or_the_node_restarted(
    plug: int, boot: int, pilot: PilotState, reason: StopReason
) -> None:
    s = restarted(charging(), since=62.0)
    s, eff = apply(s, (82.0, Reconcile(Telemetry(0, 0, 1190, pilot, False, plug, boot))))
    assert s.session is None
    closes = [e for e in eff if isinstance(e, CloseSession)]
    assert [c.reason for c in closes] == [reason]
    assert closes[0].session.meter_wh == 1190  # billed up to the node's counter
    assert [e.outcome for e in eff if isinstance(e, InterruptionEnded)] == [reason.value]


def test_an_outage_longer_than_the_bound_closes_the_session() -> None:
    s = restarted(charging(), since=62.0)
    tel = Telemetry(0, 0, 1190, PilotState.C, False, PLUG, BOOT)
    s, eff = apply(s, (62.0 + 901, Reconcile(tel)))
    assert s.session is None
    assert [e.reason for e in eff if isinstance(e, CloseSession)] == [
        StopReason.INTERRUPTED_TOO_LONG
    ]


@pytest.mark.parametrize(
    ("relay_on", "clean", "reason"),
    [(True, False, None), (False, False, StopReason.POWER_LOSS), (False, True, StopReason.REBOOT)],
)
def test_a_node_without_continuity_keeps_the_relay_heuristic(
    relay_on: bool, clean: bool, reason: StopReason | None
) -> None:
    s = restarted(charging(plug=None, boot=None), since=62.0)
    tel = Telemetry(10 if relay_on else 0, 6900, 1190, PilotState.C, relay_on)
    s, eff = apply(s, (70.0, Reconcile(tel, clean_restart=clean)))
    closes = [e.reason for e in eff if isinstance(e, CloseSession)]
    assert closes == ([] if reason is None else [reason])


def test_a_node_offline_while_running_suspends_then_resumes_or_times_out() -> None:
    s, eff = apply(charging(), (70.0, NodeOnline(False)))
    assert s.session is not None and s.interrupted_since == 70.0
    assert offline_reason(s) == "node_offline"
    # Back within the bound, same plug and boot: resumed, one interruption record.
    back, eff = apply(
        s,
        (100.0, Tick()),
        (120.0, NodeOnline(True)),
        (121.0, Telemetry(0, 0, 1190, PilotState.C, True, PLUG, BOOT)),
    )
    assert back.session is not None
    assert [e.outcome for e in eff if isinstance(e, InterruptionEnded)] == ["resumed"]
    # Never back: the tick closes it at the bound, and says how long it waited.
    gone, eff = apply(s, (70.0 + 899, Tick()))
    assert gone.session is not None
    gone, eff = apply(gone, (70.0 + 900, Tick()))
    assert gone.session is None
    assert [e.reason for e in eff if isinstance(e, CloseSession)] == [
        StopReason.INTERRUPTED_TOO_LONG
    ]
    ended = [e for e in eff if isinstance(e, InterruptionEnded)]
    assert ended and ended[0].ended_at - ended[0].started_at == 900


def test_a_node_that_rebooted_while_the_controller_ran_ends_the_session_as_power_loss() -> None:
    _, eff = apply(charging(), (70.0, Telemetry(16, 11000, 1200, PilotState.C, True, PLUG, 42)))
    assert [e.reason for e in eff if isinstance(e, CloseSession)] == [StopReason.POWER_LOSS]


def test_the_journal_records_the_interruption_with_start_end_and_cause() -> None:
    s = restarted(charging(), since=62.0)
    ev = Reconcile(Telemetry(0, 0, 1190, PilotState.B, False, PLUG, BOOT))
    new, eff = transition(s, ev, 82.0, T)
    commit = build_commit(
        bay_id="b1",
        connector=1,
        event=ev,
        new=new,
        effects=eff,
        now=82.0,
        tariff=Tariff(),
        checkpoint=False,
    )
    assert commit is not None
    rows = [e for e in commit.events if e.kind == "interruption"]
    assert len(rows) == 1 and rows[0].session_id == "s1"
    assert rows[0].data == {
        "start": 62.0,
        "end": 82.0,
        "duration_s": 20.0,
        "cause": "controller_restart",
        "outcome": "resumed",
    }
    assert not commit.outbox, "no StopTransaction, no other OCPP message"
