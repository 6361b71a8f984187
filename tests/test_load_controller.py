"""LoadController: time on top of the allocation (ramps, anti-flapping, overcurrent, audit)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from controller.load.allocate import BayInput, GridInput, Mode
from controller.load.controller import LoadController, StepInput, StepResult
from controller.load.model import LoadConfig
from controller.ports import Freshness

NOON = dt.datetime(2026, 3, 2, 12, 0)  # a Monday


def make(
    main: float = 32, n: int = 2, rules: list[dict[str, Any]] | None = None, **site: Any
) -> LoadController:
    defaults: dict[str, Any] = {
        "min_on_time_s": 30,
        "min_off_time_s": 30,
        "increase_delay_s": 2.0,
        "increase_hysteresis_a": 1.0,
        "ramp_step_a": 2.0,
        "overcurrent_s": 3.0,
        "overcurrent_tolerance_a": 2.0,
        "ev_response_s": 5.0,
    }
    defaults.update(site)
    cfg = LoadConfig.model_validate(
        {
            "site": {"main_limit_a": main, **defaults},
            "bays": [{"id": f"b{i}", "max_current_a": 16} for i in range(n)],
            "rules": rules or [],
        }
    )
    return LoadController(cfg)


def step(
    ctl: LoadController,
    now: float,
    bays: list[BayInput],
    grid: float = 0.0,
    fresh: Freshness = Freshness.FRESH,
    grid_at: float | None = None,
    wall: dt.datetime = NOON,
) -> StepResult:
    return ctl.step(
        now,
        StepInput(
            bays=tuple(bays),
            grid=GridInput((grid, grid, grid), fresh, now if grid_at is None else grid_at),
            wall_time=wall,
        ),
    )


def on(bay: str, order: int = 0, **kw: Any) -> BayInput:
    return BayInput(bay, active=True, session_order=order, **kw)


def test_start_at_minimum_then_ramp_after_delay() -> None:
    ctl = make()
    r = step(ctl, 0.0, [on("b0")])
    assert r.targets_a["b0"] == 16 and r.setpoints_a["b0"] == 6
    assert [a.reason for a in r.audit] == ["start"]
    seen = [r.setpoints_a["b0"]]
    for k in range(1, 12):
        seen.append(step(ctl, k * 0.5, [on("b0")]).setpoints_a["b0"])
    # Held for 2 s (increase_delay_s) from the first step that wants more, then +2 A per step.
    assert seen[:5] == [6, 6, 6, 6, 6]
    assert seen[5:11] == [8, 10, 12, 14, 16, 16]
    assert all(b - a <= 2 for a, b in itertools.pairwise(seen))


def test_decrease_is_immediate_and_audited() -> None:
    ctl = make()
    for k in range(20):
        step(ctl, k * 0.5, [on("b0")])
    assert ctl.setpoints_a["b0"] == 16
    r = step(ctl, 10.0, [on("b0", measured_a=(16, 16, 16))], grid=16 + 24)
    assert r.setpoints_a["b0"] == 8
    rec = next(a for a in r.audit if a.bay_id == "b0")
    assert (rec.old_a, rec.new_a, rec.reason, rec.source) == (16, 8, "circuit_limit", "main:L1")


def _follow(ctl: LoadController, t: float, building: float) -> StepResult:
    """One step where the EV draws exactly its setpoint."""
    cur = ctl.setpoints_a["b0"]
    return step(ctl, t, [on("b0", measured_a=(cur, cur, cur))], grid=cur + building)


def test_small_increases_within_hysteresis_are_ignored() -> None:
    ctl = make(main=32)
    for k in range(20):
        _follow(ctl, k * 0.5, 17)
    assert ctl.setpoints_a["b0"] == 15
    # Building load drops by 0.8 A: a target 0.8 A higher is within the hysteresis.
    for k in range(20, 40):
        r = _follow(ctl, k * 0.5, 16.2)
    assert r.targets_a["b0"] == 15.8 and r.setpoints_a["b0"] == 15


def test_target_flapping_does_not_ramp() -> None:
    ctl = make(main=32)
    for k in range(20):
        _follow(ctl, k * 0.5, 22)
    assert ctl.setpoints_a["b0"] == 10
    # Load alternates each second: the increase never persists for increase_delay_s.
    for k in range(20, 60):
        r = _follow(ctl, k * 0.5, 16 if (k // 2) % 2 else 22)
        assert r.setpoints_a["b0"] == 10


def test_min_off_and_min_on_times() -> None:
    ctl = make(main=12, n=2, min_on_time_s=30, min_off_time_s=40, rotation_slot_s=1)
    r = step(ctl, 0.0, [on("b0", 0), on("b1", 1)])
    assert r.setpoints_a == {"b0": 6, "b1": 6}
    # A building load takes 6 A: one bay must pause at once, despite min on time.
    r = step(ctl, 1.0, [on("b0", 0), on("b1", 1)], grid=6)
    paused = [b for b, v in r.setpoints_a.items() if v == 0]
    assert len(paused) == 1
    # The load goes away; the paused bay may not restart before min off time.
    for t in range(2, 41):
        r = step(ctl, float(t), [on("b0", 0), on("b1", 1)])
        assert r.setpoints_a[paused[0]] == 0, t
    r = step(ctl, 41.5, [on("b0", 0), on("b1", 1)])
    # The running bay makes room first; nothing confirms it here, so the paused bay
    # starts once the running one's vehicle has had ev_response_s to follow.
    running = next(b for b in r.setpoints_a if b != paused[0])
    assert r.setpoints_a == {running: 6, paused[0]: 0}
    assert step(ctl, 46.0, [on("b0", 0), on("b1", 1)]).setpoints_a[paused[0]] == 0
    assert step(ctl, 46.5, [on("b0", 0), on("b1", 1)]).setpoints_a[paused[0]] == 6


def test_relay_cycle_budget_and_health_counters() -> None:
    ctl = make(main=32, n=1, relay_cycles_per_hour=3)
    t = 0.0
    starts = 0
    for _ in range(6):
        r = step(ctl, t, [on("b0")])
        starts += r.setpoints_a["b0"] > 0 and any(a.reason == "start" for a in r.audit)
        t += 1
        step(ctl, t, [BayInput("b0")])
        t += 30  # minimum off time
    assert starts == 3
    h = ctl.health(t)["b0"]
    assert (h.cycles_total, h.cycles_last_hour) == (3, 3)
    assert ctl.health(t + 3600)["b0"].cycles_last_hour == 0
    assert step(ctl, t + 3600, [on("b0")]).setpoints_a["b0"] == 6


def test_overcurrent_reduces_then_faults() -> None:
    ctl = make(main=63, n=1)
    for k in range(20):
        step(ctl, k * 0.5, [on("b0")])
    assert ctl.setpoints_a["b0"] == 16
    t = 10.0
    drawing = on("b0", measured_a=(20, 20, 20))
    r = step(ctl, t, [drawing], grid=20)
    while r.setpoints_a["b0"] == 16:
        t += 0.5
        r = step(ctl, t, [drawing], grid=20)
    assert 13.0 <= t <= 14.0 and r.setpoints_a["b0"] == 6  # first: reduce to minimum
    assert any(a.reason == "overcurrent" for a in r.audit)
    while not r.new_faults:
        t += 0.5
        r = step(ctl, t, [drawing], grid=20)
        assert t < 30
    assert r.new_faults == ("b0",) and r.setpoints_a["b0"] == 0 and not r.relay_on["b0"]
    assert r.health["b0"].faulted and "overcurrent" in r.health["b0"].fault_reason
    # Latched until cleared, even with a healthy draw.
    assert step(ctl, t + 60, [on("b0")]).setpoints_a["b0"] == 0
    ctl.clear_fault("b0", t + 61, NOON)
    assert step(ctl, t + 62, [on("b0")]).setpoints_a["b0"] == 6


def test_vehicle_following_a_decrease_is_not_overcurrent() -> None:
    ctl = make(main=63, n=1, overcurrent_s=1.0)
    for k in range(20):
        step(ctl, k * 0.5, [on("b0")])
    # The site gets busy: setpoint to 6 A; the EV takes 4 s to follow (< ev_response_s).
    for k in range(9):
        r = step(ctl, 10 + k * 0.5, [on("b0", measured_a=(16, 16, 16))], grid=16 + 57)
        assert r.setpoints_a["b0"] == 6 and not r.new_faults
        assert not any(a.reason.startswith("overcurrent") for a in r.audit)


def test_old_grid_reading_counts_as_failed() -> None:
    ctl = make(main=32, n=1, grid_meter_timeout_s=3)
    for k in range(20):
        step(ctl, k * 0.5, [on("b0")])
    r = step(ctl, 20.0, [on("b0")], grid_at=16.0)
    assert r.grid_freshness is Freshness.FAILED and r.setpoints_a["b0"] == 0


def test_stale_meter_holds_setpoints() -> None:
    ctl = make(main=32, n=2)
    step(ctl, 0.0, [on("b0")])
    r = step(ctl, 0.5, [on("b0"), on("b1")], fresh=Freshness.STALE)
    assert r.setpoints_a == {"b0": 6, "b1": 0}
    for k in range(2, 20):
        r = step(ctl, k * 0.5, [on("b0"), on("b1")], fresh=Freshness.STALE)
    assert r.setpoints_a == {"b0": 6, "b1": 0}


def test_mode_change_applies_at_next_step() -> None:
    ctl = make(main=63, n=1)
    for k in range(20):
        step(ctl, k * 0.5, [on("b0")])
    r = step(ctl, 10.0, [on("b0", mode=Mode.ECO)])
    assert r.setpoints_a["b0"] == 10
    assert r.audit[0].reason == "eco_cap"


def test_rule_window_and_conflict_reported_once() -> None:
    rules = [
        {"id": "evening", "kind": "bay_current_cap", "amps": 10, "from": "18:00", "to": "23:00"},
        {
            "id": "vip",
            "kind": "bay_current_cap",
            "amps": 16,
            "bays": ["b0"],
            "from": "18:00",
            "to": "23:00",
            "priority": 9,
        },
    ]
    ctl = make(main=63, n=1, rules=rules)
    for k in range(20):
        r = step(ctl, k * 0.5, [on("b0")])
    assert r.setpoints_a["b0"] == 16 and not r.conflicts
    evening = NOON.replace(hour=18, minute=1)
    r = step(ctl, 10.0, [on("b0")], wall=evening)
    assert r.setpoints_a["b0"] == 10
    changes = [a for a in r.audit if not a.reason.startswith("rule_conflict")]
    assert [(a.bay_id, a.source) for a in changes] == [("b0", "evening")]
    conflicts = [a for a in r.audit if a.reason.startswith("rule_conflict")]
    assert len(conflicts) == 1 and "vip" in conflicts[0].detail
    r = step(ctl, 10.5, [on("b0")], wall=evening)
    assert r.conflicts and not r.audit


def test_rotation_over_slots_lets_everyone_charge() -> None:
    ctl = make(main=12, n=3, rotation_slot_s=60, min_on_time_s=30, min_off_time_s=30)
    charged = {"b0": 0.0, "b1": 0.0, "b2": 0.0}
    bays = [on("b0", 0), on("b1", 1), on("b2", 2)]
    for k in range(0, 600):
        r = step(ctl, float(k), bays)
        assert sum(r.setpoints_a.values()) <= 12
        for b, v in r.setpoints_a.items():
            charged[b] += v > 0
    assert min(charged.values()) >= 150, charged
