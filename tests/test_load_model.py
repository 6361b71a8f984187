"""Load config models: valid configs parse, and every error names its field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from controller.load.model import (
    BayCurrentCapRule,
    BayLoadConfig,
    LoadConfig,
    RuleConfig,
    SiteConfig,
    SitePowerCapRule,
    bay_phase_map,
)


def _cfg(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "site": {
            "main_limit_a": 32,
            "main_guaranteed_headroom_a": 10,
            "circuits": [
                {"id": "garage", "limit_a": [20, 20, 16]},
                {"id": "row", "parent": "garage", "limit_a": 16},
            ],
        },
        "bays": [
            {"id": "b1", "circuit_id": "row", "max_current_a": 16},
            {"id": "b2", "circuit_id": "garage", "phases": 1, "phase": "L2", "max_current_a": 16},
        ],
        "rules": [
            {"id": "night", "kind": "bay_current_cap", "amps": 10, "from": "18:00", "to": "06:00"}
        ],
    }
    for key, value in over.items():
        section, _, name = key.partition("__")
        if name:
            cfg[section][name] = value
        else:
            cfg[section] = value
    return cfg


def test_valid_config_parses_with_scalar_per_phase_values() -> None:
    cfg = LoadConfig.model_validate(_cfg())
    assert cfg.site.main_limit_a == (32.0, 32.0, 32.0)
    assert cfg.site.circuits[0].limit_a == (20.0, 20.0, 16.0)
    assert cfg.site.effective_fallback_a == (10.0, 10.0, 10.0)
    assert isinstance(cfg.rules[0], BayCurrentCapRule)
    assert cfg.rules[0].from_time is not None and cfg.rules[0].from_time.hour == 18


def test_a_single_phase_bay_loads_the_phase_it_names_wherever_it_is_listed() -> None:
    bays = [
        BayLoadConfig(id="a", phases=1, phase="L3", max_current_a=16),
        BayLoadConfig(id="b", phases=1, phase="L1", max_current_a=16),
        BayLoadConfig(id="three", max_current_a=16),
    ]
    want = {"a": (2,), "b": (0,), "three": (0, 1, 2)}
    assert bay_phase_map(bays) == want
    # Reordering [[bays]] moves nothing (it used to: "auto" was the list index % 3).
    assert bay_phase_map(list(reversed(bays))) == want


def test_a_single_phase_bay_without_phase_is_refused_by_name() -> None:
    with pytest.raises(ValidationError) as err:
        LoadConfig.model_validate(
            _cfg(bays=[{"id": "garage-left", "phases": 1, "max_current_a": 16}])
        )
    assert "bays.0" in str(err.value) and "'garage-left' is single-phase" in str(err.value)
    with pytest.raises(ValidationError, match="Input should be 'L1', 'L2' or 'L3'"):
        BayLoadConfig.model_validate({"id": "x", "phases": 1, "phase": "auto", "max_current_a": 16})


# ------------------------------------------------------------------ timers


@pytest.mark.parametrize(
    ("field", "value", "minimum", "why"),
    [
        ("min_on_time_s", 0, "30 s", "flap"),
        ("min_on_time_s", 29, "30 s", "flap"),
        ("min_off_time_s", 0, "30 s", "flap"),
        ("ev_response_s", 0, "5 s", "IEC 61851-1"),
        ("increase_delay_s", 0, "1 s", "single meter reading"),
        ("increase_hysteresis_a", 0, "0.5 A", "meter noise"),
    ],
)
def test_timers_below_their_safe_minimum_are_refused_with_minimum_and_reason(
    field: str, value: float, minimum: str, why: str
) -> None:
    with pytest.raises(ValidationError) as err:
        SiteConfig.model_validate({"main_limit_a": 32, field: value})
    [e] = err.value.errors()
    assert e["loc"] == (field,), e
    assert e["msg"].startswith(f"Value error, {value:g} "), e
    assert f"safe minimum of {minimum}" in e["msg"] and why in e["msg"], e


def test_every_timer_below_its_minimum_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as err:
        LoadConfig.model_validate(
            _cfg(site__min_on_time_s=0, site__min_off_time_s=0, site__increase_delay_s=0)
        )
    assert [e["loc"] for e in err.value.errors()] == [
        ("site", "min_on_time_s"),
        ("site", "min_off_time_s"),
        ("site", "increase_delay_s"),
    ]


def test_switch_times_also_cover_a_slow_vehicle() -> None:
    """The floor is never below the EV response time."""
    slow = {"main_limit_a": 32, "ev_response_s": 40}
    with pytest.raises(
        ValidationError, match=r"min_off_time_s\n.* 30 s is below the safe minimum of 40"
    ):
        SiteConfig.model_validate({**slow, "min_on_time_s": 40, "min_off_time_s": 30})
    ok = SiteConfig.model_validate({**slow, "min_on_time_s": 40, "min_off_time_s": 40})
    assert ok.min_off_time_s == 40


def test_defaults_and_allowed_minimums_are_valid() -> None:
    SiteConfig.model_validate({"main_limit_a": 32})
    SiteConfig.model_validate(
        {
            "main_limit_a": 32,
            "min_on_time_s": 30,
            "min_off_time_s": 30,
            "ev_response_s": 5,
            "increase_delay_s": 1,
            "increase_hysteresis_a": 0.5,
        }
    )


# ------------------------------------------------------------------ single-phase sites


def test_single_phase_site_takes_single_phase_bays_on_l1_only() -> None:
    site = {"phases": 1, "main_limit_a": 40}
    cfg = LoadConfig.model_validate(
        {"site": site, "bays": [{"id": "a", "phases": 1, "phase": "L1", "max_current_a": 16}]}
    )
    assert cfg.site.phase_indices == (0,)
    with pytest.raises(ValidationError, match=r"bays\[0\].phases: bay 'a' is three-phase"):
        LoadConfig.model_validate({"site": site, "bays": [{"id": "a", "max_current_a": 16}]})
    with pytest.raises(ValidationError, match=r"bays\[0\].phases: bay 'a' is wired to L2"):
        LoadConfig.model_validate(
            {"site": site, "bays": [{"id": "a", "phases": 1, "phase": "L2", "max_current_a": 16}]}
        )
    # Only L1 is checked on a single-phase site: [40, 0, 0] is a valid limit.
    SiteConfig.model_validate({"phases": 1, "main_limit_a": [40, 0, 0], "main_reserve_a": 2})


def test_rule_union_is_discriminated_by_kind() -> None:
    rule = TypeAdapter(RuleConfig).validate_python(
        {"id": "cap", "kind": "site_power_cap", "kw": 11}
    )
    assert isinstance(rule, SitePowerCapRule) and rule.kw == 11


BAD: list[tuple[str, dict[str, Any], str]] = [
    (
        "circuit limit below bay minimum",
        _cfg(
            site__circuits=[
                {"id": "garage", "limit_a": [20, 5, 20]},
                {"id": "row", "parent": "garage", "limit_a": 16},
            ]
        ),
        "bays[0].min_current_a: 6.0 A does not fit circuit 'garage' limit_a 5.0 A on L2",
    ),
    (
        "main limit below bay minimum",
        _cfg(site__main_limit_a=4, site__main_guaranteed_headroom_a=0),
        "site.main_limit_a",
    ),
    (
        "unknown parent",
        _cfg(site__circuits=[{"id": "row", "parent": "nope", "limit_a": 16}]),
        "circuits[0].parent",
    ),
    (
        "cycle",
        _cfg(
            site__circuits=[
                {"id": "a", "parent": "b", "limit_a": 16},
                {"id": "b", "parent": "a", "limit_a": 16},
            ]
        ),
        "parent: cycle",
    ),
    (
        "duplicate circuit",
        _cfg(site__circuits=[{"id": "a", "limit_a": 16}, {"id": "a", "limit_a": 16}]),
        "circuits[1].id",
    ),
    (
        "unknown circuit of bay",
        _cfg(bays=[{"id": "b1", "circuit_id": "x", "max_current_a": 16}]),
        "bays[0].circuit_id",
    ),
    (
        "duplicate bay",
        _cfg(bays=[{"id": "b1", "max_current_a": 16}, {"id": "b1", "max_current_a": 16}]),
        "bays[1].id",
    ),
    ("max below min", _cfg(bays=[{"id": "b1", "max_current_a": 5}]), "max_current_a"),
    (
        "safe share below min",
        _cfg(bays=[{"id": "b1", "max_current_a": 16, "safe_current_a": 3}]),
        "safe_current_a",
    ),
    (
        "headroom above limit",
        _cfg(site__main_guaranteed_headroom_a=40),
        "main_guaranteed_headroom_a",
    ),
    ("fallback above headroom", _cfg(site__fallback_budget_a=12), "fallback_budget_a"),
    ("eco below min", _cfg(site__eco_current_a=5), "site.eco_current_a"),
    (
        "rule on unknown bay",
        _cfg(rules=[{"id": "r", "kind": "bay_current_cap", "amps": 10, "bays": ["zz"]}]),
        "rules[0].bays",
    ),
    (
        "half a window",
        _cfg(rules=[{"id": "r", "kind": "bay_current_cap", "amps": 10, "from": "18:00"}]),
        "from/to",
    ),
    ("negative power cap", _cfg(rules=[{"id": "r", "kind": "site_power_cap", "kw": -1}]), "kw"),
    (
        "phase name",
        _cfg(bays=[{"id": "b1", "phases": 1, "phase": "L4", "max_current_a": 16}]),
        "phase",
    ),
]


@pytest.mark.parametrize(("case", "raw", "field"), BAD, ids=[b[0] for b in BAD])
def test_invalid_config_error_names_the_field(case: str, raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        LoadConfig.model_validate(raw)
    text = str(err.value)
    assert field in text, f"{case}: {text}"


def test_site_config_alone_rejects_reserved_main_id() -> None:
    with pytest.raises(ValidationError, match="reserved"):
        SiteConfig.model_validate({"main_limit_a": 32, "circuits": [{"id": "main", "limit_a": 16}]})
