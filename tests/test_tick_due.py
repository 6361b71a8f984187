"""The station's ticker takes a transition only for bays with a timer run out.

A tick that finds nothing due changes nothing (``tick_due`` is the first test of the
bay machine's tick), so the ticker skips it: a charging bay without a quota costs no
locked transition a second. A bay whose timer has run out still takes it at once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from controller.core.bay import (
    BayKind,
    BayState,
    Event,
    Hold,
    HoldPlaced,
    Phase,
    StopReason,
    Telemetry,
    Tick,
    Timers,
    TokenPresented,
    tick_due,
    transition,
)
from controller.core.config import parse_config
from controller.ports import PilotState
from tests.support.passive import passive_station, report

T = Timers(connection_timeout_s=60)


def _charging(**quota: Any) -> BayState:
    s = BayState(bay_id="b", kind=BayKind.EVSE, node_online=True, meter_wh=0)
    s, _ = transition(s, TokenPresented("CARD", "local", "s1", **quota), 0.0, T)
    s, _ = transition(s, Telemetry(16, 11000, 10, PilotState.C, True), 1.0, T)
    assert s.phase is Phase.CHARGING
    return s


def test_a_charging_bay_without_quota_has_nothing_due() -> None:
    s = _charging()
    assert not any(tick_due(s, now, T) for now in (2.0, 600.0, 86_400.0))


def test_each_timer_is_due_once_it_has_run_out() -> None:
    authorized, _ = transition(
        BayState(bay_id="b", kind=BayKind.EVSE, node_online=True, meter_wh=0),
        TokenPresented("CARD", "local", "s1"),
        0.0,
        T,
    )
    assert authorized.deadline is not None
    assert not tick_due(authorized, authorized.deadline - 0.5, T)
    assert tick_due(authorized, authorized.deadline, T)

    timed = _charging(quota_s=60.0)
    assert not tick_due(timed, 59.0, T) and tick_due(timed, 60.0, T)

    held, _ = transition(
        BayState(bay_id="b", kind=BayKind.LOCKER, node_online=True),
        HoldPlaced(Hold("h1", "CARD", 100.0)),
        0.0,
        T,
    )
    assert held.phase is Phase.HELD
    assert not tick_due(held, 99.0, T) and tick_due(held, 100.0, T)


class _Clock:
    """Time only the test moves."""

    def __init__(self) -> None:
        self.t = 1_000_000.0

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()  # the station's own timers never fire: the test ticks


async def test_the_ticker_takes_only_the_due_bay(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "station": {"id": "tick", "data_dir": str(tmp_path)},
            "timers": {"connection_timeout_s": 60},
            "buses": [{"id": "b1"}],
            "bays": [
                {"id": f"bay{i}", "connector": i, "bus": "b1", "address": i} for i in (1, 2, 3)
            ],
        }
    )
    clock = _Clock()
    ticked: list[str] = []

    async with passive_station(cfg, tmp_path / "journal.sqlite3", clock=clock) as (station, _):
        apply = station.runner.apply

        async def counting(bay_id: str, event: Event, *, actor: str | None = None) -> Any:
            if isinstance(event, Tick):
                ticked.append(bay_id)
            return await apply(bay_id, event, actor=actor)

        for b in cfg.bays:
            await station.nodes.take(report(b.node_id, clock.t, 0.0, PilotState.A))
            assert (await station.commands.present_token(b.id, f"T-{b.id}")).ok
        # bay2 and bay3 are plugged in and charge; bay1's driver never plugs in.
        for b in cfg.bays[1:]:
            await station.nodes.take(report(b.node_id, clock.t, 16.0, PilotState.C))
        station.runner.apply = counting  # type: ignore[method-assign]
        try:
            clock.t += 30.0
            await station.runner.tick()
            assert ticked == []  # nothing due anywhere: no transition taken
            clock.t += 31.0  # bay1's connection timeout has run out
            await station.runner.tick()
            assert ticked == ["bay1"]
            bays = station.bays
            assert bays["bay1"].state.session is None
            assert bays["bay1"].state.phase is Phase.IDLE
            assert all(bays[b].state.phase is Phase.CHARGING for b in ("bay2", "bay3"))
            closed = await station.journal.sessions(bay_id="bay1")  # the timeout is recorded
            assert [s["stop_reason"] for s in closed] == [StopReason.CONNECTION_TIMEOUT.value]
        finally:
            station.runner.apply = apply  # type: ignore[method-assign]
