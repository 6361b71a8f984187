"""The plausibility gate of meter readings: the pure rules, table-driven and by property."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.plausibility import (
    ENERGY_SLACK_WH,
    PHYSICAL_MAX_CURRENT_A,
    REMIND_S,
    Bounds,
    EnergyMark,
    MeterGate,
    bounds_for,
    check_sample,
)
from controller.ports import Freshness, MeterReading, MeterSample

GRID = bounds_for("grid", main_limit_a=(32.0, 32.0, 32.0))  # 64 A a phase


def sample(**kw: Any) -> MeterSample:
    """A plausible three-phase sample (10 A at 230 V, PF 0.9), with ``kw`` replacing fields."""
    base: dict[str, Any] = {
        "at": 100.0,
        "voltage_v": (230.0, 231.0, 229.0),
        "current_a": (10.0, 10.0, 10.0),
        "power_w": (2070.0, 2079.0, 2061.0),
        "power_total_w": 6210.0,
        "frequency_hz": 50.0,
        "import_wh": 1_000_000.0,
        "export_wh": 5_000.0,
    }
    base.update(kw)
    return MeterSample(**base)


def problems(
    s: MeterSample, bounds: Bounds = GRID, marks: dict[str, EnergyMark] | None = None
) -> set[str]:
    found, _ = check_sample(s, bounds, marks or {})
    return {p.quantity for p in found}


def test_bounds_follow_the_role() -> None:
    assert GRID.current_a == (64.0, 64.0, 64.0)
    assert bounds_for("grid", main_limit_a=(40.0, 32.0, 25.0)).current_a == (80.0, 64.0, 50.0)
    assert bounds_for("bay", bay_max_a=16.0).current_a == (32.0, 32.0, 32.0)
    assert bounds_for("pv", rating_a=20.0).current_a == (20.0, 20.0, 20.0)
    assert bounds_for("pv", main_limit_a=(32.0,) * 3).current_a == (64.0, 64.0, 64.0)
    assert bounds_for("pv").current_a == (PHYSICAL_MAX_CURRENT_A,) * 3
    assert bounds_for("grid").current_a == (PHYSICAL_MAX_CURRENT_A,) * 3  # no [site]
    assert bounds_for("grid", main_limit_a=(32.0,) * 3, rating_a=100.0).current_a == (100.0,) * 3


@pytest.mark.parametrize(
    ("change", "bad"),
    [
        ({}, set()),
        # The finding: float32 max, 1e30 A, negative current.
        ({"current_a": (3.4e38, 10.0, 10.0)}, {"current_l1"}),
        ({"current_a": (10.0, -3.4e38, 10.0)}, {"current_l2"}),
        ({"current_a": (10.0, 10.0, 1e30)}, {"current_l3"}),
        ({"current_a": (-6.5, 10.0, 10.0)}, {"current_l1"}),
        ({"current_a": (64.0, 10.0, 10.0), "power_w": (None,) * 3, "power_total_w": None}, set()),
        (
            {"current_a": (64.1, 10.0, 10.0), "power_w": (None,) * 3, "power_total_w": None},
            {"current_l1"},
        ),
        # ~0 current while the phase carries 2 kW: the building would look empty.
        ({"current_a": (1e-41, 10.0, 10.0)}, {"power_l1", "power_total"}),
        ({"current_a": (0.0, 0.0, 0.0)}, {"power_l1", "power_l2", "power_l3", "power_total"}),
        # Voltage and frequency windows, both edges.
        ({"voltage_v": (100.0, 300.0, 230.0), "power_w": (900.0, 2079.0, 2061.0)}, set()),
        ({"voltage_v": (99.9, 230.0, 230.0)}, {"voltage_l1"}),
        ({"voltage_v": (230.0, 300.1, 230.0)}, {"voltage_l2"}),
        ({"voltage_v": (230.0, 230.0, 0.0)}, {"voltage_l3"}),
        ({"frequency_hz": 45.0}, set()),
        ({"frequency_hz": 65.0}, set()),
        ({"frequency_hz": 44.9}, {"frequency"}),
        ({"frequency_hz": 0.0}, {"frequency"}),
        # Export is negative power, not negative current.
        ({"power_w": (-2070.0, -2079.0, -2061.0), "power_total_w": -6210.0}, set()),
        # A power factor is at most 1 (10 % tolerance and a 50 W floor).
        ({"power_w": (2530.0, 2079.0, 2061.0), "power_total_w": 6670.0}, set()),
        ({"power_w": (2600.0, 2079.0, 2061.0), "power_total_w": 6740.0}, {"power_l1"}),
        ({"power_total_w": 1e30}, {"power_total"}),
        ({"power_w": (-1e30, 2079.0, 2061.0)}, {"power_l1"}),
        # Missing quantities are skipped, never guessed.
        ({"voltage_v": (None,) * 3, "power_w": (None,) * 3, "power_total_w": None}, set()),
        ({"current_a": (None,) * 3}, set()),
        ({"frequency_hz": None, "import_wh": None, "export_wh": None}, set()),
        ({"import_wh": -1.0}, {"import_energy"}),
    ],
)
def test_rules_per_quantity(change: dict[str, Any], bad: set[str]) -> None:
    assert problems(sample(**change)) == bad


def test_power_is_compared_with_current_only_when_read_in_the_same_request() -> None:
    # 0 A read a second before 2 kW: a load may have switched on between the two requests.
    skewed = sample(
        current_a=(0.0, 10.0, 10.0),
        read_at={"power_l1": 99.0, "power_total": 99.0},
    )
    assert problems(skewed) == set()
    assert problems(dataclasses.replace(skewed, read_at={})) == {"power_l1", "power_total"}
    # Without a voltage the bound uses 300 V: 10 A can carry up to 3.3 kW.
    assert (
        problems(sample(voltage_v=(None,) * 3, power_w=(3000.0, 0.0, 0.0), power_total_w=None))
        == set()
    )


def test_single_phase_meter() -> None:
    one = MeterSample(
        at=1.0,
        voltage_v=(230.0, None, None),
        current_a=(7.0, None, None),
        power_w=(1600.0, None, None),
        power_total_w=1600.0,
        frequency_hz=50.0,
    )
    assert problems(one) == set()
    assert problems(dataclasses.replace(one, current_a=(0.0, None, None))) == {"power_l1"}


def mark(value: float, at: float) -> dict[str, EnergyMark]:
    return {"import_energy": EnergyMark(value, at)}


def test_energy_counter_is_monotonic_and_bounded_by_power_over_time() -> None:
    s = sample(import_wh=1_000_000.0)  # requested at 100.0
    top = GRID.max_power_w  # 3 x 64 A x 300 V = 57.6 kW
    assert problems(s, marks=mark(1_000_000.0, 90.0)) == set()
    assert problems(s, marks=mark(1_000_000.1, 90.0)) == {"import_energy"}  # went back
    allowed = top * 10 / 3600 + ENERGY_SLACK_WH
    assert problems(s, marks=mark(1_000_000.0 - allowed + 1, 90.0)) == set()
    assert problems(s, marks=mark(1_000_000.0 - allowed - 1, 90.0)) == {"import_energy"}
    # The same request seen again (a carried slow value) is no step at all.
    assert problems(s, marks=mark(0.0, 100.0)) == set()
    # The marks move on to the value seen, plausible or not.
    _, marks = check_sample(s, GRID, mark(5.0, 90.0))
    assert marks["import_energy"] == EnergyMark(1_000_000.0, 100.0)


def test_a_garbage_counter_costs_two_readings_and_a_reset_one() -> None:
    values = [1000.0, 1000.5, 9e12, 1001.0, 1001.5, 3.0, 3.2, 3.4]
    marks: dict[str, EnergyMark] = {}
    verdicts = []
    for i, v in enumerate(values):
        found, marks = check_sample(sample(at=float(i), import_wh=v), GRID, marks)
        verdicts.append(not found)
    assert verdicts == [True, True, False, False, True, False, True, True]


# --------------------------------------------------------------------------- properties

volts = st.floats(100.0, 300.0)
amps = st.floats(0.0, 64.0)
pf = st.floats(-1.0, 1.0)


@st.composite
def plausible(draw: st.DrawFn) -> MeterSample:
    v = [draw(volts) for _ in range(3)]
    i = [draw(amps) for _ in range(3)]
    p = [vv * ii * draw(pf) for vv, ii in zip(v, i, strict=True)]
    return MeterSample(
        at=10.0,
        voltage_v=(v[0], v[1], v[2]),
        current_a=(i[0], i[1], i[2]),
        power_w=(p[0], p[1], p[2]),
        power_total_w=sum(p),
        frequency_hz=draw(st.floats(45.0, 65.0)),
        import_wh=draw(st.floats(0.0, 1e10)),
    )


@given(plausible(), st.floats(0.0, 3600.0), st.floats(0.0, 1.0))
def test_physically_possible_readings_always_pass(s: MeterSample, dt: float, load: float) -> None:
    assert s.import_wh is not None
    before = s.import_wh - GRID.max_power_w * load * dt / 3600.0
    found, _ = check_sample(s, GRID, mark(max(0.0, before), s.at - dt))
    assert found == []


_FIELDS = {
    "voltage_l1": ("voltage_v", 0),
    "voltage_l3": ("voltage_v", 2),
    "current_l2": ("current_a", 1),
    "power_l3": ("power_w", 2),
    "frequency": ("frequency_hz", None),
    "power_total": ("power_total_w", None),
}
_OUTSIDE = {
    "voltage_l1": st.one_of(st.floats(-1e38, 99.99), st.floats(300.01, 1e38)),
    "voltage_l3": st.one_of(st.floats(-1e38, 99.99), st.floats(300.01, 1e38)),
    "current_l2": st.one_of(st.floats(-1e38, -1e-9), st.floats(64.001, 3.4e38)),
    "power_l3": st.one_of(st.floats(-3.4e38, -19_200.1), st.floats(19_200.1, 3.4e38)),
    "frequency": st.one_of(st.floats(-1e6, 44.99), st.floats(65.01, 1e6)),
    "power_total": st.one_of(st.floats(-3.4e38, -57_600.1), st.floats(57_600.1, 3.4e38)),
}


@given(plausible(), st.sampled_from(sorted(_FIELDS)), st.data())
def test_any_value_outside_its_bounds_fails_and_is_named(
    s: MeterSample, quantity: str, data: st.DataObject
) -> None:
    value = data.draw(_OUTSIDE[quantity])
    attr, phase = _FIELDS[quantity]
    if phase is None:
        changes: dict[str, Any] = {attr: value}
        bad = dataclasses.replace(s, **changes)
    else:
        t = list(getattr(s, attr))
        t[phase] = value
        changes = {attr: tuple(t)}
        bad = dataclasses.replace(s, **changes)
    assert quantity in problems(bad)
    assert all(math.isfinite(p.value) for p in check_sample(bad, GRID, {})[0])


# --------------------------------------------------------------------------- the gate


def reading(s: MeterSample | None, meter: str = "grid") -> MeterReading:
    fresh = Freshness.FRESH if s is not None else Freshness.FAILED
    return MeterReading(meter, s.at if s else 0.0, fresh, s, "" if s else "timeout")


def test_gate_fails_implausible_readings_and_audits_first_reminder_and_recovery() -> None:
    gate = MeterGate()
    good, bad = sample(), sample(current_a=(3.4e38, 10.0, 10.0))
    out, note = gate.admit(reading(good), GRID, role="grid", now_wall=0.0)
    assert out.freshness is Freshness.FRESH and out.sample is good and note is None
    out, note = gate.admit(reading(bad), GRID, role="grid", now_wall=1.0)
    assert out.freshness is Freshness.FAILED and out.sample is None
    assert "current_l1" in out.error and out.at == bad.at
    assert note is not None and note.kind == "meter_implausible"
    assert note.detail["problems"][0]["quantity"] == "current_l1"
    notes = [
        gate.admit(reading(bad), GRID, role="grid", now_wall=1.0 + i)[1] for i in range(1, 500)
    ]
    assert notes == [None] * 499  # a meter spewing garbage does not flood the audit log
    out, note = gate.admit(reading(bad), GRID, role="grid", now_wall=1.0 + REMIND_S)
    assert note is not None and note.kind == "meter_still_implausible"
    assert note.detail["implausible_readings"] == 501
    # A failed poll (no sample) is neither implausible nor a recovery.
    out, note = gate.admit(reading(None), GRID, role="grid", now_wall=REMIND_S + 2)
    assert note is None and gate.implausible_now("grid")
    out, note = gate.admit(reading(good), GRID, role="grid", now_wall=REMIND_S + 3)
    assert out.freshness is Freshness.FRESH
    assert note is not None and note.kind == "meter_plausible_again"
    assert note.detail["implausible_readings"] == 501 and note.detail["lasted_s"] == REMIND_S + 2
    assert gate.implausible_readings["grid"] == 501
    assert gate.implausible_values[("grid", "current_l1")] == 501
    assert not gate.implausible_now("grid")
