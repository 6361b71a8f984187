"""allocate(): table-driven cases for each behaviour the design asks for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from controller.load.allocate import (
    Allocation,
    AllocationInput,
    BayInput,
    GridInput,
    Mode,
    Reason,
    allocate,
)
from controller.load.model import LoadConfig
from controller.load.topology import Topology
from controller.ports import Freshness, MeterReading, MeterSample

FRESH, STALE, FAILED = Freshness.FRESH, Freshness.STALE, Freshness.FAILED


def topo(
    main: Any = 32,
    bays: list[dict[str, Any]] | None = None,
    circuits: list[dict[str, Any]] | None = None,
    rules: list[dict[str, Any]] | None = None,
    **site: Any,
) -> Topology:
    if bays is None:
        bays = [{"id": f"b{i}", "max_current_a": 16} for i in range(3)]
    cfg = LoadConfig.model_validate(
        {
            "site": {"main_limit_a": main, "circuits": circuits or [], **site},
            "bays": bays,
            "rules": rules or [],
        }
    )
    return Topology.from_config(cfg)


def on(bay_id: str, order: int = 0, **kw: Any) -> BayInput:
    return BayInput(bay_id, active=True, session_order=order, **kw)


def run(
    t: Topology,
    bays: list[BayInput],
    grid: tuple[float | None, float | None, float | None] = (0.0, 0.0, 0.0),
    fresh: Freshness = FRESH,
    prev: Mapping[str, float] | None = None,
    **kw: Any,
) -> Allocation:
    return allocate(
        AllocationInput(
            topology=t,
            bays=tuple(bays),
            grid=GridInput(grid, fresh),
            previous_a=prev or {},
            **kw,
        )
    )


def sp(a: Allocation) -> dict[str, float]:
    return dict(a.setpoints_a)


# ------------------------------------------------------------------ fair share

FAIR_CASES: list[
    tuple[str, Topology, list[BayInput], tuple[float, float, float], dict[str, float]]
] = [
    (
        "plenty: everyone at max",
        topo(main=63),
        [on("b0"), on("b1"), on("b2")],
        (0, 0, 0),
        {"b0": 16, "b1": 16, "b2": 16},
    ),
    (
        "equal split of 32 A",
        topo(),
        [on("b0"), on("b1"), on("b2")],
        (0, 0, 0),
        {"b0": 10.6, "b1": 10.6, "b2": 10.6},
    ),
    ("non-EV load reduces budget", topo(), [on("b0"), on("b1")], (12, 8, 8), {"b0": 10, "b1": 10}),
    (
        "measured EV current is not counted as building load",
        topo(),
        [on("b0", measured_a=(10, 10, 10)), on("b1", measured_a=(10, 10, 10))],
        (22, 22, 22),
        {"b0": 15, "b1": 15},
    ),
    (
        "inactive bay gets 0",
        topo(),
        [on("b0"), BayInput("b1")],
        (0, 0, 0),
        {"b0": 16, "b1": 0, "b2": 0},
    ),
    (
        "circuit limits its own bays, others get the rest",
        topo(
            main=40,
            circuits=[{"id": "c", "limit_a": 16}],
            bays=[
                {"id": "b0", "circuit_id": "c", "max_current_a": 32},
                {"id": "b1", "circuit_id": "c", "max_current_a": 32},
                {"id": "b2", "max_current_a": 32},
            ],
        ),
        [on("b0"), on("b1"), on("b2")],
        (0, 0, 0),
        {"b0": 8, "b1": 8, "b2": 24},
    ),
    (
        "single-phase bays are limited on their phase only",
        topo(
            main=16,
            bays=[
                {"id": "b0", "phases": 1, "phase": "L1", "max_current_a": 16},
                {"id": "b1", "phases": 1, "phase": "L1", "max_current_a": 16},
                {"id": "b2", "phases": 1, "phase": "L2", "max_current_a": 16},
            ],
        ),
        [on("b0"), on("b1"), on("b2")],
        (0, 0, 0),
        {"b0": 8, "b1": 8, "b2": 16},
    ),
    (
        "single-phase bays on three phases",
        topo(
            main=16,
            bays=[
                {"id": f"b{i}", "phases": 1, "phase": f"L{i + 1}", "max_current_a": 16}
                for i in range(3)
            ],
        ),
        [on("b0"), on("b1"), on("b2")],
        (0, 0, 0),
        {"b0": 16, "b1": 16, "b2": 16},
    ),
    (
        "eco capped, its share goes to the others",
        topo(main=40),
        [on("b0", mode=Mode.ECO), on("b1"), on("b2")],
        (0, 0, 0),
        {"b0": 10, "b1": 15, "b2": 15},
    ),
    (
        "confirmed boost goes to max first",
        topo(main=32),
        [on("b0", mode=Mode.BOOST, boost_confirmed=True), on("b1"), on("b2")],
        (0, 0, 0),
        {"b0": 16, "b1": 8, "b2": 8},
    ),
    (
        "unconfirmed boost is standard",
        topo(main=30),
        [on("b0", mode=Mode.BOOST), on("b1"), on("b2")],
        (0, 0, 0),
        {"b0": 10, "b1": 10, "b2": 10},
    ),
    (
        "heterogeneous minimums: fair from the floors",
        topo(
            main=30,
            bays=[
                {"id": "b0", "min_current_a": 10, "max_current_a": 16},
                {"id": "b1", "max_current_a": 16},
            ],
        ),
        [on("b0"), on("b1")],
        (0, 0, 0),
        {"b0": 15, "b1": 15},
    ),
]


@pytest.mark.parametrize(
    ("case", "t", "bays", "grid", "expected"), FAIR_CASES, ids=[c[0] for c in FAIR_CASES]
)
def test_fair_share(
    case: str,
    t: Topology,
    bays: list[BayInput],
    grid: tuple[float, float, float],
    expected: dict[str, float],
) -> None:
    got = sp(run(t, bays, grid))
    for bay_id, want in expected.items():
        assert got[bay_id] == pytest.approx(want), f"{case}: {got}"


def test_newcomer_gets_fair_share_not_leftovers() -> None:
    t = topo(main=32)
    first = run(t, [on("b0", 0), on("b1", 1)])
    assert sp(first)["b0"] == 16 and sp(first)["b1"] == 16
    second = run(
        t,
        [on("b0", 0, measured_a=(16, 16, 16)), on("b1", 1, measured_a=(16, 16, 16)), on("b2", 2)],
        grid=(32, 32, 32),
        prev=first.setpoints_a,
    )
    assert sp(second) == {"b0": 10.6, "b1": 10.6, "b2": 10.6}
    cuts = {d.bay_id: d for d in second.decisions}
    assert cuts["b0"].old_a == 16 and cuts["b0"].new_a == 10.6
    assert cuts["b0"].reason is Reason.CIRCUIT_LIMIT and cuts["b0"].source == "main:L1"


# ------------------------------------------------------------------ shortage and rotation


def test_shortage_pauses_by_queue_and_rotates_on_slot() -> None:
    t = topo(main=13, bays=[{"id": f"b{i}", "max_current_a": 16} for i in range(3)])
    a = run(t, [on("b0", 0), on("b1", 1), on("b2", 2)])
    assert sp(a) == {"b0": 6.5, "b1": 6.5, "b2": 0}
    assert a.limits["b2"][0] is Reason.SHORTAGE
    assert a.rotation == ("b0", "b1", "b2")
    # Without a new slot the queue is stable: no flapping.
    same = run(t, [on("b0", 0), on("b1", 1), on("b2", 2)], prev=a.setpoints_a, rotation=a.rotation)
    assert sp(same) == sp(a) and same.rotation == a.rotation
    rot = run(
        t,
        [on("b0", 0), on("b1", 1), on("b2", 2)],
        prev=a.setpoints_a,
        rotation=a.rotation,
        rotate=True,
    )
    assert rot.rotation == ("b2", "b0", "b1")
    nxt = run(
        t, [on("b0", 0), on("b1", 1), on("b2", 2)], prev=rot.setpoints_a, rotation=rot.rotation
    )
    assert sp(nxt) == {"b0": 6.5, "b1": 0, "b2": 6.5}


def test_keep_on_wins_admission_over_queue_order() -> None:
    t = topo(main=12, bays=[{"id": f"b{i}", "max_current_a": 16} for i in range(3)])
    a = run(
        t,
        [on("b0", 0), on("b1", 1), on("b2", 2, keep_on=True)],
        prev={"b2": 6},
        rotation=("b0", "b1", "b2"),
    )
    assert sp(a) == {"b0": 6, "b1": 0, "b2": 6}


def test_cannot_start_while_anti_flapping() -> None:
    t = topo(main=32)
    a = run(t, [on("b0"), on("b1", can_start=False)])
    assert sp(a) == {"b0": 16, "b1": 0, "b2": 0}
    assert a.limits["b1"] == (Reason.ANTI_FLAP, "")
    # A bay already on is not affected by can_start.
    b = run(t, [on("b0"), on("b1", can_start=False)], prev={"b1": 10})
    assert sp(b)["b1"] == 16


def test_overloaded_site_pauses_everyone() -> None:
    a = run(topo(), [on("b0"), on("b1")], grid=(40, 0, 0), prev={"b0": 16, "b1": 16})
    assert sp(a) == {"b0": 0, "b1": 0, "b2": 0}
    assert {d.reason for d in a.decisions} == {Reason.SHORTAGE}


# ------------------------------------------------------------------ meter freshness


def test_stale_meter_allows_decreases_but_no_increase() -> None:
    t = topo(main=32)
    prev = {"b0": 8.0, "b1": 16.0}
    a = run(t, [on("b0"), on("b1"), on("b2")], grid=(0, 0, 0), fresh=STALE, prev=prev)
    got = sp(a)
    assert got["b0"] <= 8 and got["b2"] == 0
    assert got["b1"] <= 16
    assert a.limits["b2"][0] is Reason.METER_STALE
    dec = run(t, [on("b0"), on("b1")], grid=(20, 20, 20), fresh=STALE, prev=prev)
    assert sum(sp(dec).values()) <= 12 + 1e-9


@pytest.mark.parametrize(
    ("grid", "fresh"),
    [((0.0, 0.0, 0.0), FAILED), ((0.0, None, 0.0), FRESH)],
    ids=["failed", "missing-phase"],
)
def test_failed_meter_uses_fallback_budget(
    grid: tuple[float, float | None, float], fresh: Freshness
) -> None:
    t = topo(main=32, main_guaranteed_headroom_a=16, fallback_budget_a=12)
    a = run(t, [on("b0"), on("b1")], grid=grid, fresh=fresh, prev={"b0": 16, "b1": 16})
    assert sp(a) == {"b0": 6, "b1": 6, "b2": 0}
    assert a.grid_freshness is FAILED
    assert a.ev_budget_a["main:L1"] == 12


def test_failed_meter_without_guaranteed_headroom_pauses_all() -> None:
    a = run(topo(), [on("b0")], fresh=FAILED, prev={"b0": 16})
    assert sp(a)["b0"] == 0


def test_grid_input_from_meter_reading() -> None:
    ok = GridInput.from_reading(
        MeterReading("grid", 1.0, FRESH, MeterSample(1.0, current_a=(1.0, 2.0, 3.0)))
    )
    assert ok.current_a == (1.0, 2.0, 3.0) and ok.freshness is FRESH and ok.at == 1.0
    gone = GridInput.from_reading(MeterReading("grid", 2.0, FAILED, None, "timeout"))
    assert gone.freshness is FAILED


def test_unfresh_bay_measurement_is_not_subtracted() -> None:
    t = topo()
    meas = (10.0, 10.0, 10.0)
    trusted = run(t, [on("b0", measured_a=meas)], grid=(20, 20, 20))
    untrusted = run(t, [on("b0", measured_a=meas, measured_fresh=False)], grid=(20, 20, 20))
    assert sp(trusted)["b0"] == 16
    assert sp(untrusted)["b0"] == 12


# ------------------------------------------------------------------ external caps, rules


def test_external_caps_bay_and_station() -> None:
    t = topo(main=63)
    a = run(t, [on("b0", external_cap_a=7), on("b1"), on("b2")], station_cap_a=27)
    assert sp(a) == {"b0": 7, "b1": 10, "b2": 10}
    assert a.limits["b0"][0] is Reason.EXTERNAL_CAP
    assert a.limits["b1"] == (Reason.STATION_CAP, "L1")


def test_external_cap_never_raises_above_site_limit() -> None:
    a = run(topo(main=20), [on("b0", external_cap_a=100), on("b1")], station_cap_a=100)
    assert sum(sp(a).values()) <= 20


def test_rules_cap_bays_and_site_power() -> None:
    t = topo(
        main=63,
        rules=[
            {"id": "evening", "kind": "bay_current_cap", "amps": 10, "bays": ["b0"]},
            {"id": "site11", "kind": "site_power_cap", "kw": 11.04},
        ],
    )
    a = run(t, [on("b0"), on("b1")], rules=t.config.rules)
    # 11.04 kW / 230 V = 48 A over all phases = 16 A per phase for two 3-phase bays.
    assert sp(a) == {"b0": 8, "b1": 8, "b2": 0}
    assert a.limits["b0"] == (Reason.SITE_POWER, "site11")
    b = run(t, [on("b0"), on("b1")], rules=t.config.rules[:1])
    assert sp(b)["b0"] == 10 and b.limits["b0"] == (Reason.RULE, "evening")


def test_contradicting_rules_lower_wins_and_conflict_reported() -> None:
    t = topo(
        main=63,
        rules=[
            {"id": "all10", "kind": "bay_current_cap", "amps": 10, "priority": 1},
            {"id": "b0fast", "kind": "bay_current_cap", "amps": 16, "bays": ["b0"], "priority": 5},
        ],
    )
    a = run(t, [on("b0"), on("b1")], rules=t.config.rules)
    assert sp(a)["b0"] == 10
    assert len(a.conflicts) == 1
    c = a.conflicts[0]
    assert (c.kind, c.applied, c.overridden, c.targets) == (
        "contradiction",
        "all10",
        ("b0fast",),
        ("b0",),
    )


def test_rule_below_minimum_pauses_and_is_reported() -> None:
    t = topo(main=63, rules=[{"id": "tiny", "kind": "bay_current_cap", "amps": 4}])
    a = run(t, [on("b0")], rules=t.config.rules)
    assert sp(a)["b0"] == 0
    assert [c.kind for c in a.conflicts] == ["below_min"]


# ------------------------------------------------------------------ solar


def test_solar_only_from_surplus_with_hysteresis() -> None:
    t = topo(main=63, bays=[{"id": "s", "phases": 1, "phase": "L1", "max_current_a": 16}])
    s = on("s", mode=Mode.SOLAR)
    # 6 A * 230 V = 1380 W minimum; start needs +300 W margin.
    assert sp(run(t, [s], pv_surplus_w=1500, pv_freshness=FRESH))["s"] == 0
    started = run(t, [s], pv_surplus_w=1700, pv_freshness=FRESH)
    assert sp(started)["s"] == 7.3
    # Once running it holds at minimum down to 300 W below the minimum power.
    assert sp(run(t, [s], pv_surplus_w=1100, pv_freshness=FRESH, prev={"s": 6}))["s"] == 6
    assert sp(run(t, [s], pv_surplus_w=1000, pv_freshness=FRESH, prev={"s": 6}))["s"] == 0
    # A surplus that is not fresh is no surplus.
    gone = run(t, [s], pv_surplus_w=5000, pv_freshness=STALE, prev={"s": 6})
    assert sp(gone)["s"] == 0 and gone.limits["s"][0] is Reason.SOLAR_NO_SURPLUS


def test_solar_never_exceeds_circuit_limit() -> None:
    t = topo(main=10, bays=[{"id": "s", "max_current_a": 16}])
    assert sp(run(t, [on("s", mode=Mode.SOLAR)], pv_surplus_w=50000, pv_freshness=FRESH))["s"] == 10


def test_faulted_bay_gets_zero_and_decision_says_why() -> None:
    a = run(topo(), [on("b0", faulted=True)], prev={"b0": 10})
    assert sp(a)["b0"] == 0
    assert a.decisions[0].reason is Reason.FAULTED and a.decisions[0].old_a == 10


def test_main_reserve_is_kept_free_while_metered() -> None:
    t = topo(main=32, main_reserve_a=4, main_guaranteed_headroom_a=16)
    a = run(t, [on("b0"), on("b1")])
    assert sp(a) == {"b0": 14, "b1": 14, "b2": 0}
    assert a.ev_budget_a["main:L1"] == 28
    failed = run(t, [on("b0"), on("b1")], fresh=FAILED, prev={"b0": 14, "b1": 14})
    assert sp(failed) == {"b0": 8, "b1": 8, "b2": 0}
