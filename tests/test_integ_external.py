"""External limits as leases (controller.load.external): pure, on a clock the test moves."""

from __future__ import annotations

import math

import pytest

from controller.load.external import SITE, ExternalConfig, ExternalLimits

CFG = ExternalConfig(
    lease_s=30.0, fallback_site_a=6.0, fallback_bay_a=8.0, grid_operator_w=4200.0, max_a=32.0
)
BAYS = {"b1": 3, "b2": 1}


def fresh(cfg: ExternalConfig = CFG) -> ExternalLimits:
    return ExternalLimits(cfg, BAYS)


def test_the_site_is_on_its_fallback_until_the_first_lease() -> None:
    ext = fresh()
    caps = ext.evaluate(0.0)
    assert caps.site_a == 6.0 and caps.fallback == (SITE,)
    assert ext.status(0.0)["fallback"] is True


def test_without_an_energy_manager_nothing_is_capped() -> None:
    ext = fresh(ExternalConfig(site_leased=False))
    caps = ext.evaluate(0.0)
    assert caps.site_a is None and caps.bays_a == {} and caps.fallback == ()


def test_a_lease_holds_until_it_runs_out_then_the_fallback_holds_and_is_reported_once() -> None:
    ext = fresh()
    change = ext.offer(0.0, scope=SITE, source="mqtt", amps=20.0)
    assert (change.kind, change.old_a, change.new_a) == ("applied", 6.0, 20.0)
    caps = ext.evaluate(29.9)
    assert caps.site_a == 20.0 and caps.fallback == ()
    assert [c.kind for c in caps.changes] == ["applied"]
    caps = ext.evaluate(30.0)
    assert caps.site_a == 6.0 and caps.fallback == (SITE,)
    assert [(c.kind, c.old_a, c.new_a) for c in caps.changes] == [("lapsed", 20.0, 6.0)]
    assert ext.evaluate(31.0).changes == ()  # reported once
    assert ext.counts == {"applied": 1, "lapsed": 1}


def test_a_refreshed_lease_does_not_lapse_and_a_renewal_is_not_audited_again() -> None:
    ext = fresh()
    ext.offer(0.0, scope=SITE, source="modbus", amps=16.0)
    ext.evaluate(0.0)
    for t in (20.0, 40.0, 60.0):
        assert ext.offer(t, scope=SITE, source="modbus", amps=16.0).kind == "applied"
        caps = ext.evaluate(t + 19.0)
        assert caps.site_a == 16.0 and caps.changes == ()


def test_a_lease_may_be_shorter_than_configured_never_longer() -> None:
    ext = fresh()
    ext.offer(0.0, scope=SITE, source="http", amps=10.0, lease_s=5.0)
    assert ext.evaluate(5.0).site_a == 6.0
    ext.offer(10.0, scope=SITE, source="http", amps=10.0, lease_s=3600.0)
    assert ext.evaluate(39.9).site_a == 10.0
    assert ext.evaluate(40.0).site_a == 6.0


def test_a_bay_lease_lapses_to_the_bay_fallback_and_other_bays_stay_uncapped() -> None:
    ext = fresh()
    ext.offer(0.0, scope="b1", source="mqtt", amps=12.0)
    assert ext.evaluate(1.0).bays_a == {"b1": 12.0}
    caps = ext.evaluate(30.0)
    assert caps.bays_a == {"b1": 8.0} and "b1" in caps.fallback
    assert "b1" in str(ext.status(30.0)["messages"])


def test_power_is_turned_into_amps_per_phase_and_floored() -> None:
    ext = fresh()
    ext.offer(0.0, scope=SITE, source="mqtt", watts=11000.0)
    assert ext.evaluate(0.0).site_a == 15.9  # 11000 / 690 = 15.94 -> floored
    ext.offer(0.0, scope="b2", source="mqtt", watts=2300.0)  # single-phase bay
    assert ext.evaluate(0.0).bays_a["b2"] == 10.0


@pytest.mark.parametrize(
    ("scope", "amps", "watts", "why"),
    [
        (SITE, -1.0, None, "at least 0"),
        (SITE, math.nan, None, "at least 0"),
        (SITE, math.inf, None, "at least 0"),
        (SITE, 64.1, None, "plausible"),
        (SITE, None, 1e9, "plausible"),
        (SITE, 10.0, 1000.0, "one of them"),
        (SITE, None, None, "one of them"),
        ("b9", 10.0, None, "no bay"),
    ],
)
def test_a_failed_value_is_refused_and_changes_nothing(
    scope: str, amps: float | None, watts: float | None, why: str
) -> None:
    ext = fresh()
    ext.offer(0.0, scope=SITE, source="mqtt", amps=20.0)
    ext.evaluate(0.0)
    change = ext.offer(1.0, scope=scope, source="mqtt", amps=amps, watts=watts)
    assert change.kind == "refused" and why in change.detail
    caps = ext.evaluate(1.0)
    assert caps.site_a == 20.0 and caps.bays_a == {}
    assert [c.kind for c in caps.changes] == ["refused"]  # audited


def test_the_grid_operator_caps_the_site_at_its_power_whatever_the_lease_says() -> None:
    ext = fresh()
    ext.offer(0.0, scope=SITE, source="mqtt", amps=25.0)
    ext.evaluate(0.0)
    on = ext.grid_operator("gpio", True)
    assert on is not None and on.kind == "grid_operator_on"
    caps = ext.evaluate(1.0)
    assert caps.grid_operator and caps.site_a == 6.0  # 4200 W / (230 V x 3) = 6.08 -> 6.0
    assert "Limited by grid operator" in str(ext.status(1.0)["messages"])
    ext.offer(2.0, scope=SITE, source="mqtt", amps=4.0)  # a lower lease still wins
    assert ext.evaluate(2.0).site_a == 4.0
    assert ext.grid_operator("gpio", True) is None  # no change, nothing to audit
    off = ext.grid_operator("gpio", False)
    assert off is not None and off.kind == "grid_operator_off"
    assert ext.evaluate(3.0).site_a == 4.0


def test_the_grid_operator_is_active_while_any_of_its_sources_says_so() -> None:
    ext = fresh(ExternalConfig(site_leased=False))
    ext.grid_operator("gpio", True)
    ext.grid_operator("modbus", True)
    assert ext.grid_operator("gpio", False) is None
    assert ext.evaluate(0.0).site_a == 6.0
    ext.grid_operator("modbus", False)
    assert ext.evaluate(0.0).site_a is None


def test_next_expiry_is_the_earliest_lease() -> None:
    ext = fresh()
    assert ext.next_expiry() is None
    ext.offer(0.0, scope=SITE, source="mqtt", amps=20.0)
    ext.offer(5.0, scope="b1", source="mqtt", amps=10.0, lease_s=10.0)
    assert ext.next_expiry() == 15.0


def test_a_source_not_read_yet_holds_the_cap_and_its_first_reading_is_not_an_event() -> None:
    ext = fresh(ExternalConfig(site_leased=False))
    ext.assume_grid_operator("gpio")
    assert ext.evaluate(0.0).site_a == 6.0
    assert ext.grid_operator("gpio", False) is None
    caps = ext.evaluate(0.1)
    assert caps.site_a is None and caps.changes == ()
    on = ext.grid_operator("gpio", True)
    assert on is not None and on.kind == "grid_operator_on"
