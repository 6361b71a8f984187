"""The installer's current ramp passes only when the measured current follows the commanded one.

A node that confirms every setpoint but measures 0 A (no vehicle or test load,
a dead current sensor, a relay that does not close) must fail the ramp with a
sentence that says what was measured, and the ramp must stop at that step.
The stations are real (journal, station, installer runner); the nodes are the
self-driving fake hub, and one ramp runs through the real serial driver
against the node simulator on a pseudo-terminal.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from local_ui.installer import (
    SETTLE_S,
    InstallerTests,
    TestRun,
    follows,
    ramp_tolerance_a,
    ramp_verdict,
)
from simulators.esp32_node.model import Ev
from tests.test_api_rig import Rig, running_station
from tests.test_installer_safety import station_on_a_pty


async def _finished(run: TestRun, timeout: float = 30.0) -> TestRun:
    assert run.task is not None
    async with asyncio.timeout(timeout):
        await asyncio.wait([run.task])
    return run


async def _ramp(rig: Rig, top_a: float = 12, step_a: float = 2) -> TestRun:
    run = await InstallerTests().start(
        rig.station, "bay1", "ramp", actor="user:ian", current_a=top_a, step_a=step_a, hold_s=0.1
    )
    assert run.state == "running"
    return await _finished(run)


@pytest.mark.parametrize(
    ("measured", "commanded", "ok"),
    [
        (6.0, 6.0, True),
        (5.0, 6.0, True),  # 1 A tolerance at low currents
        (4.9, 6.0, False),
        (0.0, 6.0, False),
        (7.1, 6.0, False),
        (14.5, 16.0, True),  # 10 % at high currents
        (14.3, 16.0, False),
        (30.0, 32.0, True),
        (28.7, 32.0, False),
    ],
)
def test_follows_within_the_tolerance(measured: float, commanded: float, ok: bool) -> None:
    assert follows(measured, commanded) is ok
    assert (ramp_verdict(measured, commanded) == "") is ok


def test_verdicts_are_sentences_that_say_what_was_measured() -> None:
    zero = ramp_verdict(0.0, 6.0)
    assert "measured 0.0 A" in zero and "no current flowed" in zero and zero.endswith(".")
    low = ramp_verdict(10.0, 16.0)
    assert "only 10.0 A" in low and f"{ramp_tolerance_a(16):.1f} A" in low
    high = ramp_verdict(9.0, 6.0)
    assert "9.0 A" in high and "more than it was allowed" in high
    assert "no current measurement" in ramp_verdict(None, 6.0)


async def test_a_ramp_with_a_meter_reading_zero_fails_and_says_why(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        node = rig.hub.nodes["bay1"]
        assert not node.plugged  # nothing draws: the node measures 0 A at every setpoint
        run = await _ramp(rig)
        assert run.state == "failed", run.view()
        assert "measured 0.0 A" in run.message and "no current flowed" in run.message
        # The node confirmed the setpoint; the measured current is what failed the step.
        (step,) = run.steps
        assert step["commanded_a"] == 6 and step["reported_a"] == 6
        assert step["measured_a"] == 0.0 and step["follows"] is False and step["ok"] is False
        # It stopped there: nothing above the first step was ever commanded.
        assert max(a for on, a, _ in node.outputs if on) == 6
        await rig.until(lambda: not node.relay_on)


async def test_a_ramp_whose_current_follows_passes(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        rig.hub.plug("bay1")  # a test load that draws what it is offered
        run = await _ramp(rig)
        assert run.state == "passed", run.view()
        assert [s["commanded_a"] for s in run.steps] == [6, 8, 10, 12]
        assert [s["measured_a"] for s in run.steps] == [6, 8, 10, 12]
        assert all(s["follows"] for s in run.steps)


async def test_a_ramp_whose_current_stays_below_fails_at_that_step(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        rig.hub.nodes["bay1"].ev_max_a = 9.0  # the load takes at most 9 A
        rig.hub.plug("bay1")
        run = await _ramp(rig)
        assert run.state == "failed", run.view()
        # 9 A at 10 A is within the 1 A tolerance; 9 A at 12 A is not.
        assert [s["commanded_a"] for s in run.steps] == [6, 8, 10, 12]
        assert [s["ok"] for s in run.steps] == [True, True, True, False]
        assert "At 12 A commanded the bay measured only 9.0 A" in run.message


async def test_a_ramp_on_the_serial_node_simulator_without_a_vehicle_fails(
    tmp_path: Path,
) -> None:
    """Through the real serial driver: the simulated node closes its relay, measures 0 A."""
    async with station_on_a_pty(tmp_path) as rig:
        run = await rig.tests.start(
            rig.station, "bay1", "ramp", actor="user:ian", current_a=16, step_a=10, hold_s=0.1
        )
        await rig.bus.wait_until(lambda: rig.sim.physics.relay_closed)
        await _finished(run, timeout=SETTLE_S + 20)
        assert run.state == "failed", run.view()
        assert "measured 0.0 A" in run.message
        assert len(run.steps) == 1 and run.steps[0]["measured_a"] == 0.0
        await rig.bus.wait_until(lambda: not rig.sim.physics.relay_closed)


async def test_a_ramp_on_the_serial_node_simulator_with_a_vehicle_passes(tmp_path: Path) -> None:
    async with station_on_a_pty(tmp_path) as rig:
        rig.sim.physics.ev = Ev(max_a=32.0, phases=3)
        run = await rig.tests.start(
            rig.station, "bay1", "ramp", actor="user:ian", current_a=16, step_a=10, hold_s=0.1
        )
        await _finished(run, timeout=2 * SETTLE_S + 20)
        assert run.state == "passed", run.view()
        assert [s["measured_a"] for s in run.steps] == [6.0, 16.0]
