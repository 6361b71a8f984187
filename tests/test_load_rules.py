"""Owner rules: time windows and deterministic, safety-first resolution."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import TypeAdapter

from controller.load.model import RuleConfig
from controller.load.rules import active_rules, resolve_rules, rule_active

_rule = TypeAdapter(RuleConfig)


def rule(**kw: Any) -> RuleConfig:
    kw.setdefault("id", "r")
    kw.setdefault("kind", "bay_current_cap")
    kw.setdefault("amps", 10)
    return _rule.validate_python(kw)


MON, TUE, SAT, SUN = (dt.date(2026, 3, d) for d in (2, 3, 7, 8))

WINDOWS = [
    ("no window: always", {}, MON, "03:00", True),
    ("inside", {"from": "18:00", "to": "22:00"}, MON, "18:00", True),
    ("end excluded", {"from": "18:00", "to": "22:00"}, MON, "22:00", False),
    ("before", {"from": "18:00", "to": "22:00"}, MON, "17:59", False),
    ("past midnight, evening part", {"from": "22:00", "to": "06:00"}, MON, "23:30", True),
    ("past midnight, morning part", {"from": "22:00", "to": "06:00"}, TUE, "05:59", True),
    ("past midnight, daytime", {"from": "22:00", "to": "06:00"}, TUE, "12:00", False),
    ("weekend only, saturday", {"days": ["sat", "sun"]}, SAT, "12:00", True),
    ("weekend only, monday", {"days": ["sat", "sun"]}, MON, "12:00", False),
    # The Sunday-night window runs into Monday morning; it belongs to Sunday.
    (
        "sunday night into monday",
        {"from": "22:00", "to": "06:00", "days": ["sun"]},
        MON,
        "02:00",
        True,
    ),
    (
        "friday-night window not on sunday morning",
        {"from": "22:00", "to": "06:00", "days": ["fri"]},
        SUN,
        "02:00",
        False,
    ),
]


@pytest.mark.parametrize(
    ("case", "kw", "day", "hhmm", "want"), WINDOWS, ids=[w[0] for w in WINDOWS]
)
def test_rule_window(case: str, kw: dict[str, Any], day: dt.date, hhmm: str, want: bool) -> None:
    at = dt.datetime.combine(day, dt.time.fromisoformat(hhmm))
    assert rule_active(rule(**kw), at) is want, case


def test_active_rules_filters() -> None:
    rules = [rule(id="a", **{"from": "18:00", "to": "22:00"}), rule(id="b")]
    at = dt.datetime.combine(MON, dt.time(12))
    assert [r.id for r in active_rules(rules, at)] == ["b"]


BAYS = ["b0", "b1", "b2"]
MINS = {b: 6.0 for b in BAYS}


def test_lowest_cap_wins_without_conflict_when_it_has_priority() -> None:
    res = resolve_rules(
        [rule(id="hi", amps=8, priority=5), rule(id="lo", amps=12, priority=1)], BAYS, MINS
    )
    assert res.bay_caps["b0"] == (8, "hi") and res.conflicts == ()


def test_contradiction_is_reported_once_for_all_bays() -> None:
    res = resolve_rules(
        [rule(id="night", amps=8, priority=1), rule(id="owner", amps=16, priority=3)], BAYS, MINS
    )
    assert {b: res.bay_caps[b] for b in BAYS} == {b: (8, "night") for b in BAYS}
    assert len(res.conflicts) == 1
    c = res.conflicts[0]
    assert (c.kind, c.applied, c.overridden, c.targets) == (
        "contradiction",
        "night",
        ("owner",),
        tuple(BAYS),
    )


def test_equal_priority_different_values_is_a_contradiction() -> None:
    res = resolve_rules([rule(id="a", amps=10), rule(id="b", amps=12, bays=["b1"])], BAYS, MINS)
    assert [(c.applied, c.targets) for c in res.conflicts] == [("a", ("b1",))]


def test_site_power_caps() -> None:
    res = resolve_rules(
        [
            _rule.validate_python({"id": "p11", "kind": "site_power_cap", "kw": 11, "priority": 0}),
            _rule.validate_python({"id": "p22", "kind": "site_power_cap", "kw": 22, "priority": 2}),
        ],
        BAYS,
        MINS,
    )
    assert res.site_power == (11000.0, "p11")
    assert res.conflicts[0].targets == ("site",)


def test_resolution_is_independent_of_rule_order() -> None:
    rules = [
        rule(id="a", amps=10, priority=1),
        rule(id="b", amps=10, priority=1),
        rule(id="c", amps=12, priority=2),
    ]
    one = resolve_rules(rules, BAYS, MINS)
    two = resolve_rules(list(reversed(rules)), BAYS, MINS)
    assert one == two and one.bay_caps["b0"] == (10, "a")
