"""The one output rule (controller/core/outputs.py): table, properties, and through a running station.

Station tests use a real Station and Journal with the fake node hub; the same
rule through the real serial driver and node simulator is in
tests/test_installer_safety.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_sync.smart import Profile, TxContext, composite, parse_time
from controller.core.auth import free_vend_step
from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.outputs import (
    Output,
    OutputInputs,
    TestEnd,
    TestOutput,
    Why,
    decide,
    floor_steps,
    forbids_outputs,
)
from controller.core.station import Station
from controller.ports import PilotState
from tests.support.fake_nodes import FakeHub, FakeNode
from tests.support.watch import BayWatcher

NOW = 1000.0
TEST = TestOutput(True, 16.0, NOW + 30)


def inp(**kw: object) -> OutputInputs:
    base: dict[str, object] = {"now": NOW, "max_current_a": 16.0}
    base.update(kw)
    return OutputInputs(**base)  # type: ignore[arg-type]


OFF = (False, 0.0)

# (case, inputs, (relay, amps), why, test_end)
TABLE: list[tuple[str, OutputInputs, tuple[bool, float], Why, TestEnd | None]] = [
    ("idle", inp(), OFF, Why.IDLE, None),
    ("session at its setpoint", inp(want_relay=True, session=True, setpoint_a=10), (True, 10.0), Why.SESSION, None),
    ("setpoint above the bay's maximum", inp(want_relay=True, session=True, setpoint_a=40), (True, 16.0), Why.SESSION, None),
    ("paused by the load manager", inp(want_relay=True, session=True, setpoint_a=0), OFF, Why.SESSION, None),
    ("setpoint not a number", inp(want_relay=True, session=True, setpoint_a=math.nan), OFF, Why.SESSION, None),
    ("negative setpoint", inp(want_relay=True, session=True, setpoint_a=-3), OFF, Why.SESSION, None),
    ("session that may not draw", inp(want_relay=False, session=True, setpoint_a=16), OFF, Why.SESSION, None),
    ("hold: nothing to draw", inp(want_relay=False, setpoint_a=16), OFF, Why.IDLE, None),
    ("installer test", inp(test=TEST), (True, 16.0), Why.TEST, None),
    ("test above the bay's maximum", inp(test=TestOutput(True, 32, NOW + 5)), (True, 16.0), Why.TEST, None),
    ("test with relay off", inp(test=TestOutput(False, 10, NOW + 5)), OFF, Why.TEST, None),
    ("test ran out", inp(test=TestOutput(True, 10, NOW)), OFF, Why.IDLE, TestEnd.EXPIRED),
    ("test before the first load decision", inp(test=TEST, load_decided=False), (True, 16.0), Why.TEST, None),
    ("session starts: the test ends", inp(test=TEST, session=True, want_relay=True, setpoint_a=8), (True, 8.0), Why.SESSION, TestEnd.SESSION),
    # Every forced "off" applies to every purpose: session, hold, test alike.
    ("e-stop pressed, session", inp(estop_pressed=True, want_relay=True, session=True, setpoint_a=16), OFF, Why.EMERGENCY_STOP, None),
    ("e-stop pressed, test", inp(estop_pressed=True, test=TEST), OFF, Why.EMERGENCY_STOP, TestEnd.EMERGENCY_STOP),
    ("e-stop released but latched", inp(safe_causes={"emergency_stop"}, test=TEST, want_relay=True, setpoint_a=16), OFF, Why.EMERGENCY_STOP, TestEnd.EMERGENCY_STOP),
    ("bay fault, test", inp(fault="node_fault", test=TEST), OFF, Why.FAULT, TestEnd.FAULT),
    ("bay fault, session", inp(fault="overcurrent", want_relay=True, session=True, setpoint_a=16), OFF, Why.FAULT, None),
    ("node offline, test", inp(node_online=False, test=TEST), OFF, Why.NODE_OFFLINE, TestEnd.NODE_OFFLINE),
    ("unknown safe-mode cause: off", inp(safe_causes={"tamper"}, want_relay=True, session=True, setpoint_a=16), OFF, Why.SAFE_MODE, None),
    # A failed grid meter keeps sessions (the load manager's fallback budget) but ends tests.
    ("grid meter failed, session", inp(safe_causes={"grid_meter"}, want_relay=True, session=True, setpoint_a=6), (True, 6.0), Why.SESSION, None),
    ("grid meter failed, test", inp(safe_causes={"grid_meter"}, test=TEST), OFF, Why.IDLE, TestEnd.SAFE_MODE),
    ("journal not writable, test", inp(safe_causes={"journal"}, test=TEST), OFF, Why.IDLE, TestEnd.SAFE_MODE),
    ("waiting for the load manager", inp(want_relay=True, session=True, setpoint_a=16, load_decided=False), OFF, Why.WAITING, None),
]  # fmt: skip


@pytest.mark.parametrize(("case", "i", "out", "why", "end"), TABLE, ids=[t[0] for t in TABLE])
def test_the_output_rule(
    case: str, i: OutputInputs, out: tuple[bool, float], why: Why, end: TestEnd | None
) -> None:
    got = decide(i)
    assert (got.relay_on, got.current_a) == out
    assert got.why is why and got.test_end is end


def test_forced_off_goes_out_even_before_the_load_managers_first_decision() -> None:
    waiting = decide(inp(want_relay=True, session=True, setpoint_a=16, load_decided=False))
    assert not waiting.send  # the node keeps its lease or its safe share
    stopped = decide(inp(estop_pressed=True, load_decided=False))
    assert stopped.send and stopped.forced_off and not stopped.relay_on


def test_safe_mode_causes_that_keep_sessions_are_named() -> None:
    assert not forbids_outputs("grid_meter") and not forbids_outputs("journal")
    assert forbids_outputs("emergency_stop") and forbids_outputs("something_new")


_amps = st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 80)
_inputs = st.builds(
    OutputInputs,
    now=st.just(NOW),
    max_current_a=st.floats(0, 80),
    want_relay=st.booleans(),
    session=st.booleans(),
    setpoint_a=_amps,
    load_decided=st.booleans(),
    fault=st.none() | st.just("node_fault"),
    node_online=st.booleans(),
    estop_pressed=st.booleans(),
    safe_causes=st.frozensets(st.sampled_from(["emergency_stop", "grid_meter", "journal", "x"])),
    test=st.none() | st.builds(TestOutput, st.booleans(), _amps, st.floats(NOW - 5, NOW + 5)),
)


@given(_inputs)
def test_the_output_never_exceeds_any_limit(i: OutputInputs) -> None:
    out: Output = decide(i)
    assert 0.0 <= out.current_a <= max(0.0, i.max_current_a)
    assert out.relay_on or out.current_a == 0.0
    forced = (
        i.estop_pressed
        or i.fault is not None
        or not i.node_online
        or any(forbids_outputs(c) for c in i.safe_causes)
    )
    if forced:
        assert not out.relay_on and out.send
    if out.why is Why.TEST:  # a test runs only on an idle bay with no safe-mode cause at all
        assert not i.session and not i.safe_causes and i.test is not None
        assert out.current_a <= max(0.0, i.test.current_a)
    else:
        assert out.current_a <= max(0.0, i.setpoint_a if i.want_relay else 0.0)
    if i.test is not None and (i.safe_causes or forced or i.session):
        assert out.test_end is not None


# --------------------------------------------------------------------------- wire limits

FLOORS = [(6.06, 10, 60), (6.1, 10, 61), (4.35, 10, 43), (4.35, 100, 435), (0.0, 10, 0)]


@pytest.mark.parametrize(("value", "per", "steps"), FLOORS)
def test_floor_steps(value: float, per: int, steps: int) -> None:
    assert floor_steps(value, per) == steps


@given(st.floats(0, 1e6), st.sampled_from([1, 10, 100, 1000]))
def test_floor_steps_never_rounds_up(value: float, per: int) -> None:
    n = floor_steps(value, per)
    assert n / per <= value < (n + 1) / per


def test_the_composite_schedule_reports_limits_floored() -> None:
    start = parse_time("2026-01-01T00:00:00Z")
    prof = Profile.from_ocpp(
        1,
        {
            "charging_profile_id": 1,
            "stack_level": 0,
            "charging_profile_purpose": "TxDefaultProfile",
            "charging_profile_kind": "Absolute",
            "charging_schedule": {
                "charging_rate_unit": "A",
                "start_schedule": "2026-01-01T00:00:00Z",
                "charging_schedule_period": [{"start_period": 0, "limit": 6.06}],
            },
        },
        start,
    )
    assert composite([prof], TxContext(1, 3), start, 60, default_a=32) == [(0, 6.0)]


# --------------------------------------------------------------------------- in a running station

LEASE_S = 0.9
PERIOD_S = LEASE_S / 3  # the output loop renews every third of the lease


class _Undecided:
    """The output loop's view of a load manager before its first decision."""

    steps = 0


@contextlib.asynccontextmanager
async def running(tmp: Path, *, load: bool = False) -> AsyncIterator[tuple[Station, FakeHub]]:
    raw: dict[str, object] = {
        "station": {"id": "out-1", "data_dir": str(tmp)},
        "timers": {"tick_s": 0.05, "lease_s": LEASE_S},
        "buses": [{"id": "bus1", "port": "/dev/null"}],
        "bays": [
            {"id": f"b{i}", "connector": i, "bus": "bus1", "address": i, "max_current_a": 16}
            for i in (1, 2)
        ],
    }
    if load:
        raw["site"] = {"main_limit_a": 32}
    cfg = parse_config(raw)
    journal = await Journal.open(tmp / "journal.sqlite3")
    hub = FakeHub()
    station = Station(cfg, journal, hubs={"bus1": hub})
    station.authorizer.add(free_vend_step())
    await station.restore()
    if load:
        station.runner.load = _Undecided()  # a load manager that has not decided yet
    task = asyncio.create_task(station.run())
    try:
        await asyncio.wait_for(hub.running.wait(), 5)
        watch = BayWatcher(station)
        for b in ("b1", "b2"):
            hub.telemetry(b, pilot=PilotState.B)
            await watch.status(b, "Available")
        yield station, hub
    finally:
        station.request_stop("test")
        await asyncio.wait_for(task, 5)
        await journal.close()


async def next_outputs(node: FakeNode, count: int) -> list[tuple[bool, float]]:
    """The next ``count`` outputs the station sends to ``node`` (renewals included)."""
    start = len(node.outputs)
    await node.wait_output(lambda _o: len(node.outputs) >= start + count, timeout=count + 5)
    return [(r, a) for r, a, _ in node.outputs[start : start + count]]


async def start_test(station: Station, bay: str, amps: float = 16.0) -> None:
    out = await station.commands.installer_test_output(
        bay, relay_on=True, current_a=amps, hold_s=30, actor="user:ian"
    )
    assert out.ok, out
    await station.bays[bay].node.wait_output(lambda o: o[:2] == (True, amps))  # type: ignore[union-attr]


async def test_emergency_stop_ends_an_installer_test_within_one_period(tmp_path: Path) -> None:
    async with running(tmp_path) as (station, hub):
        node = hub.nodes["b1"]
        await start_test(station, "b1")
        sent = len(node.outputs)
        await station.safety.emergency_stop(True)
        await node.wait_output(lambda o: not o[0], timeout=PERIOD_S)
        assert all(o[:2] == (True, 16.0) for o in node.outputs[:sent])
        assert [o for o in await next_outputs(node, 3) if o != (False, 0.0)] == []
        assert station.bays["b1"].test_output is None
        # Latched after release: still off, and a new test is refused until an owner clears it.
        await station.safety.emergency_stop(False)
        refused = await station.commands.installer_test_output(
            "b1", relay_on=True, current_a=6, hold_s=5, actor="user:ian"
        )
        assert not refused.ok and refused.code == "safe_mode"
        assert await next_outputs(node, 2) == [(False, 0.0)] * 2
        await station.settle()
        audit = await station.journal.audit_log()
        ended = [a for a in audit if a["kind"] == "installer_test_ended"]
        assert [json.loads(a["detail"])["reason"] for a in ended] == ["emergency_stop"]


async def test_a_bay_fault_ends_an_installer_test(tmp_path: Path) -> None:
    async with running(tmp_path) as (station, hub):
        node = hub.nodes["b2"]
        await start_test(station, "b2", 10.0)
        await station.commands.raise_fault("b2", "node_fault", actor="node")
        await node.wait_output(lambda o: not o[0], timeout=PERIOD_S)
        assert set(await next_outputs(node, 2)) == {(False, 0.0)}
        refused = await station.commands.installer_test_output(
            "b2", relay_on=True, current_a=6, hold_s=5, actor="user:ian"
        )
        assert not refused.ok and refused.code == "bay_faulted"


async def test_a_failed_grid_meter_ends_tests_but_keeps_sessions_charging(tmp_path: Path) -> None:
    async with running(tmp_path) as (station, hub):
        assert (await station.commands.present_token("b1", "CARD-1")).ok
        await hub.nodes["b1"].wait_output(lambda o: o[:2] == (True, 16.0))
        await start_test(station, "b2")
        station.safety.block(
            "grid_meter", "Grid meter silent: charging within the guaranteed headroom."
        )
        await hub.nodes["b2"].wait_output(lambda o: not o[0], timeout=PERIOD_S)
        assert set(await next_outputs(hub.nodes["b2"], 2)) == {(False, 0.0)}
        assert set(await next_outputs(hub.nodes["b1"], 2)) == {(True, 16.0)}
        assert station.bays["b1"].state.session is not None


async def test_ending_a_test_is_always_allowed(tmp_path: Path) -> None:
    async with running(tmp_path) as (station, hub):
        await start_test(station, "b1")
        station.safety.block("journal", "The journal cannot be written.")
        ended = await station.commands.installer_test_output(
            "b1", relay_on=False, current_a=0, hold_s=0, actor="user:ian"
        )
        assert ended.ok, ended
        assert (await station.commands.end_test_output("b1", actor="user:ian")).ok
        await hub.nodes["b1"].wait_output(lambda o: not o[0], timeout=PERIOD_S)


async def test_an_emergency_stop_goes_out_before_the_first_load_decision(tmp_path: Path) -> None:
    async with running(tmp_path, load=True) as (station, hub):
        node = hub.nodes["b1"]
        assert station.runner.load is not None and station.runner.load.steps == 0
        await station.safety.emergency_stop(True)
        await node.wait_output(lambda o: o[:2] == (False, 0.0), timeout=PERIOD_S)


async def test_background_jobs_belong_to_the_station(tmp_path: Path) -> None:
    async with running(tmp_path) as (station, _hub):

        async def forever() -> None:
            await asyncio.Event().wait()

        task = station.tasks.spawn(forever(), name="job")
        assert task is not None and not task.done()
        station.safety.block("journal", "The journal cannot be written.")
        station.safety.unblock("journal")  # its audit row is a job of the runner too
    assert task.cancelled()  # the station's TaskGroup ended it when the station stopped
    assert not station.tasks.running
    rows = await _audit_kinds(tmp_path)
    assert "safe_mode_left" in rows


async def _audit_kinds(tmp: Path) -> list[str]:
    journal = await Journal.open(tmp / "journal.sqlite3")
    try:
        return [a["kind"] for a in await journal.audit_log()]
    finally:
        await journal.close()
