"""A whole evening through ``edge-station sim run-scenario``, checked in the journal afterwards.

``simulate`` (four EV bays) and the shipped ``evening-peak`` scenario run as
their own processes. Afterwards the journal must hold four sessions, one per
car, each closed when its car left, with energy from the node's counter; when
the oven step leaves 16 A of the 38 A the site may use, the setpoints the
station sent (its ``setpoint_changed`` events) must fit in them once the
decrease had time to go out, and the load manager must have recorded why.
Also: shipped scenarios parse, and a broken one is refused before it starts.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from simulators.scenario import ScenarioError, load
from tests.support.procs import EDGE_STATION, Proc
from tests.support.sim_rig import SimStation, start_simulation

SCENARIOS = Path(__file__).resolve().parents[1] / "simulators" / "scenarios"
SITE_A = 38.0  # main limit 40 A minus the 2 A reserve (simulate's built-in site)
OVEN_A = 22.0  # the scenario's building load during dinner
SETTLE_S = 3.0  # a decrease goes out at once; this covers a meter poll and the step itself


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_scenarios_are_valid(path: Path) -> None:
    sc = load(path)
    assert sc.steps and sc.description


def test_a_broken_scenario_is_refused_before_it_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[steps]]\nat = 1\ndo = "plug"\n\n[[steps]]\ndo = "explode"\n')
    with pytest.raises(ScenarioError, match="step 1 \\(plug\\) needs a bay"):
        load(bad)
    bad.write_text('[[steps]]\ndo = "grid"\namps = 3\nvolts = 400\n')
    with pytest.raises(ScenarioError, match="unknown key\\(s\\) volts"):
        load(bad)
    bad.write_text("steps = [")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load(bad)


@pytest.fixture
def evening(tmp_path: Path) -> SimStation:
    return start_simulation(
        tmp_path / "data", ["--bays", "4", "--kind", "evse", "--no-demo-drivers"]
    )


@pytest.mark.long  # about 90 s of simulated evening: make test-long
@pytest.mark.timeout(400)
def test_an_evening_peak_through_run_scenario(evening: SimStation) -> None:
    st = evening
    try:
        run = Proc([EDGE_STATION, "sim", "--dir", str(st.data), "run-scenario", "evening-peak"])
        seen: dict[str, float] = {}  # step text -> wall time it was reported
        deadline = time.monotonic() + 300
        while run.popen.poll() is None and time.monotonic() < deadline:
            with run.log._cond:
                run.log._cond.wait(1.0)
            for line in list(run.log.raw):
                seen.setdefault(line, time.time())
        rc = run.popen.wait(10)
        out = "\n".join(run.log.raw)
        assert rc == 0, out
        assert "Scenario 'Evening peak with four cars' done." in out
        oven_at = next(t for ln, t in seen.items() if "draws 22 / 22 / 22 A" in ln)
        curve_at = next(t for ln, t in seen.items() if "daily curve again" in ln)

        sessions = st.journal("SELECT * FROM sessions ORDER BY started_at")
        assert [s["bay_id"] for s in sessions] == ["bay1", "bay2", "bay3", "bay4"]
        assert [s["token"] for s in sessions] == ["CAR-1", "CAR-2", "CAR-3", "CAR-4"]
        for s in sessions:
            assert s["state"] == "closed" and s["stop_reason"] == "EVDisconnected", s
            assert s["energy_wh"] > 0 and s["energy_wh"] == s["meter_stop_wh"] - s["meter_start_wh"]

        # Replay the setpoints the station sent; during dinner they must fit the 16 A left.
        events = st.journal("SELECT at, bay_id, kind, data FROM events ORDER BY id")
        setpoint: dict[str, float] = {}
        worst = 0.0
        for e in events:
            if e["kind"] == "setpoint_changed":
                setpoint[e["bay_id"]] = float(e["data"]["current_a"])
                if oven_at + SETTLE_S <= e["at"] <= curve_at:
                    worst = max(worst, sum(setpoint.values()))
        # Every car loads L1 (three-phase cars, and the one-phase car on its L1).
        assert worst <= SITE_A - OVEN_A, f"{worst} A of setpoints during dinner"
        at_settle = _sum_at(events, oven_at + SETTLE_S)
        assert at_settle <= SITE_A - OVEN_A, f"{at_settle} A of setpoints after the oven"
        before_oven = _sum_at(events, oven_at)
        assert before_oven > SITE_A - OVEN_A, "the oven step changed nothing: a vacuous check"

        throttles = st.journal("SELECT at, detail FROM audit WHERE kind = 'throttle'")
        lowered = [
            t["detail"]
            for t in throttles
            if oven_at <= t["at"] <= oven_at + SETTLE_S
            and t["detail"]["new_a"] < t["detail"]["old_a"]
        ]
        assert lowered, "no throttling decision audited for the oven"
        assert all(d["reason"] in ("circuit_limit", "shortage") for d in lowered), lowered
    finally:
        assert st.stop() == 0


def _sum_at(events: list[dict[str, object]], at: float) -> float:
    current: dict[str, float] = {}
    for e in events:
        if e["kind"] == "setpoint_changed" and float(e["at"]) <= at:  # type: ignore[arg-type]
            data = e["data"]
            assert isinstance(data, dict)
            current[str(e["bay_id"])] = float(data["current_a"])
    return sum(current.values())
