"""Break before make: increases and starts only from room that vehicles have really left.

Findings 2 and 3 of issue 10: a newcomer was switched on in the same step as
the others were cut (32 A site: 10.6 + 10.6 + 6 A commanded while A and B
still drew 16 A each, 38 A at the breaker), and with minimum on/off times at 0
a bay flapped 0 ↔ 6 A every second while the site drew 37.9 A.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from controller.load.allocate import BayInput, GridInput
from controller.load.controller import LoadController, StepInput, StepResult
from controller.load.model import LoadConfig
from controller.ports import Freshness
from tests.support.site_model import SimBay, SiteModel

NOON = dt.datetime(2026, 3, 2, 12, 0)
LIMIT = 32.0


def make(n: int = 3, **site: Any) -> LoadController:
    cfg = LoadConfig.model_validate(
        {
            "site": {
                "main_limit_a": LIMIT,
                "increase_delay_s": 1.0,
                "ramp_step_a": 16.0,
                "ev_response_s": 5.0,
                **site,
            },
            "bays": [{"id": b, "max_current_a": 16} for b in "ABC"[:n]],
        }
    )
    return LoadController(cfg)


def step(ctl: LoadController, now: float, bays: list[BayInput], grid: float) -> StepResult:
    return ctl.step(
        now,
        StepInput(
            bays=tuple(bays),
            grid=GridInput((grid, grid, grid), Freshness.FRESH, now),
            wall_time=NOON,
        ),
    )


def bay(
    bay_id: str,
    draw: float,
    *,
    acked: float | None = None,
    acked_at: float | None = None,
    seen_at: float | None = None,
    order: int = 0,
) -> BayInput:
    return BayInput(
        bay_id,
        active=True,
        measured_a=(draw, draw, draw),
        measured_at=seen_at,
        acked_a=acked,
        acked_at=acked_at,
        session_order=order,
    )


def at_sixteen(ctl: LoadController) -> float:
    """A and B charging at 16 A each, acknowledged and drawn; returns the time."""
    t = 0.0
    while t < 10:
        a, b = ctl.setpoints_a["A"], ctl.setpoints_a["B"]
        step(
            ctl,
            t,
            [
                bay("A", a, acked=a, acked_at=t, seen_at=t),
                bay("B", b, acked=b, acked_at=t, seen_at=t, order=1),
            ],
            grid=a + b,
        )
        t += 0.5
    assert ctl.setpoints_a["A"] == ctl.setpoints_a["B"] == 16
    return t


def test_newcomer_waits_until_the_others_have_followed() -> None:
    ctl = make()
    t = at_sixteen(ctl)
    # C arrives. A and B still draw 16 A: switching C on now would put 38 A on a 32 A breaker.
    r = step(
        ctl,
        t,
        [
            bay("A", 16, acked=16, acked_at=t - 0.5, seen_at=t),
            bay("B", 16, acked=16, acked_at=t - 0.5, seen_at=t, order=1),
            bay("C", 0, order=2),
        ],
        grid=32,
    )
    assert r.setpoints_a == {"A": 10.6, "B": 10.6, "C": 0}
    assert [a.bay_id for a in r.audit] == ["A", "B"]
    # The nodes confirm 10.6 A, the vehicles have not followed yet: still no room.
    for dt_ in (0.25, 0.5, 1.0):
        r = step(
            ctl,
            t + dt_,
            [
                bay("A", 16, acked=10.6, acked_at=t + 0.1, seen_at=t + dt_),
                bay("B", 16, acked=10.6, acked_at=t + 0.1, seen_at=t + dt_, order=1),
                bay("C", 0, order=2),
            ],
            grid=32,
        )
        assert r.setpoints_a["C"] == 0, dt_
    # Both vehicles are seen at 10.6 A: now C starts, and the worst case is 27.2 A.
    r = step(
        ctl,
        t + 1.5,
        [
            bay("A", 10.6, acked=10.6, acked_at=t + 1.2, seen_at=t + 1.5),
            bay("B", 10.6, acked=10.6, acked_at=t + 1.2, seen_at=t + 1.5, order=1),
            bay("C", 0, order=2),
        ],
        grid=21.2,
    )
    assert r.setpoints_a == {"A": 10.6, "B": 10.6, "C": 6}
    assert [(a.bay_id, a.reason) for a in r.audit] == [("C", "start")]


def test_unacknowledged_decrease_counts_at_its_old_value_until_the_ev_response_time() -> None:
    ctl = make()
    t = at_sixteen(ctl)
    others = [bay("A", 16, acked=16, acked_at=t), bay("B", 16, acked=16, acked_at=t, order=1)]
    step(ctl, t, [*others, bay("C", 0, order=2)], grid=32)
    # No node confirms anything (a slow link): the vehicles may still draw 16 A each,
    # whatever the telemetry says, until ev_response_s has passed since the decrease.
    quiet = [bay("A", 10.6, acked=16, acked_at=t), bay("B", 10.6, acked=16, acked_at=t, order=1)]
    for dt_ in (0.5, 2.0, 4.9):
        r = step(ctl, t + dt_, [*quiet, bay("C", 0, order=2)], grid=21.2)
        assert r.setpoints_a["C"] == 0, dt_
    r = step(ctl, t + 5.0, [*quiet, bay("C", 0, order=2)], grid=21.2)
    assert r.setpoints_a["C"] == 6


def test_a_decrease_counts_at_its_old_value_even_while_the_vehicle_draws_less() -> None:
    """A vehicle drawing 9 A of its 16 may take all 16 until the node applies the cut."""
    ctl = make(n=2, main_limit_a=20)
    t = 0.0
    while ctl.setpoints_a["A"] < 16:
        a = ctl.setpoints_a["A"]
        step(ctl, t, [bay("A", min(a, 9), acked=a, acked_at=t)], grid=min(a, 9))
        t += 0.5
    r = step(ctl, t, [bay("A", 9, acked=16, acked_at=t), bay("B", 0, order=1)], grid=9)
    assert r.setpoints_a == {"A": 10, "B": 0}  # 16 A may still flow: 16 + 6 > 20
    r = step(ctl, t + 0.5, [bay("A", 9, acked=16, acked_at=t), bay("B", 0, order=1)], grid=9)
    assert r.setpoints_a["B"] == 0
    # Confirmed: the node now caps the vehicle at 10 A, and 10 + 6 fits.
    acked = bay("A", 9, acked=10, acked_at=t + 0.6, seen_at=t + 0.9)
    r = step(ctl, t + 1.0, [acked, bay("B", 0, order=1)], grid=9)
    assert r.setpoints_a == {"A": 10, "B": 6}


def test_a_vehicle_that_ignores_its_decrease_keeps_holding_the_room() -> None:
    ctl = make()
    t = at_sixteen(ctl)
    step(
        ctl,
        t,
        [
            bay("A", 16, acked=16, acked_at=t),
            bay("B", 16, acked=16, acked_at=t, order=1),
            bay("C", 0, order=2),
        ],
        grid=32,
    )
    for k in range(1, 20):  # 10 s, twice the EV response time
        now = t + k * 0.5
        r = step(
            ctl,
            now,
            [
                bay("A", 16, acked=10.6, acked_at=now, seen_at=now),  # still drawing 16 A
                bay("B", 10.6, acked=10.6, acked_at=now, seen_at=now, order=1),
                bay("C", 0, order=2),
            ],
            grid=26.6,
        )
        assert r.setpoints_a["C"] == 0, now


def test_telemetry_that_lags_a_followed_decrease_is_not_room() -> None:
    """The grid meter sees the vehicles at their new current before their own telemetry does."""
    ctl = make(n=2, increase_hysteresis_a=0.5)
    t = at_sixteen(ctl)
    # A 10 A heat pump: both bays are cut to 11 A and confirm at once.
    fresh = [
        bay("A", 16, acked=16, acked_at=t, seen_at=t),
        bay("B", 16, acked=16, acked_at=t, seen_at=t, order=1),
    ]
    assert step(ctl, t, fresh, grid=42).setpoints_a == {"A": 11, "B": 11}
    # The vehicles follow; the grid meter shows it (10 + 11 + 11 A), their telemetry still
    # shows 16 A. Taken at face value the building would draw 0 A and both bays could rise.
    for k in range(1, 8):
        now = t + k * 0.5
        lagging = [
            bay("A", 16, acked=11, acked_at=t + 0.1, seen_at=now),
            bay("B", 16, acked=11, acked_at=t + 0.1, seen_at=now, order=1),
        ]
        r = step(ctl, now, lagging, grid=32)
        assert r.setpoints_a == {"A": 11, "B": 11}, (now, r.targets_a)


# ------------------------------------------------------------------ in a physical site


def flapping_site(**site: Any) -> SiteModel:
    """Finding 3: 32 A, 6 A of building load, three cars arriving 20 s apart, lagging telemetry."""
    base: dict[str, Any] = {"main_limit_a": LIMIT, "ev_response_s": 5.0, "ramp_step_a": 16}
    cfg = LoadConfig.model_validate(
        {"site": base, "bays": [{"id": b, "max_current_a": 16} for b in "ABC"]}
    )
    cfg = cfg.model_copy(update={"site": cfg.site.model_copy(update=site)})
    bays = [SimBay(b, (0, 1, 2), [(20.0 * i, 1e9, 16.0)]) for i, b in enumerate("ABC")]
    return SiteModel(
        LoadController(cfg),
        bays,
        lambda k: (6.0, 6.0, 6.0),
        rng=random.Random(1),
        period_s=0.25,
        ev_lag_max_s=4.0,
        telemetry_lag_periods=2,
    )


def test_timers_at_zero_may_flap_but_never_overload() -> None:
    """Check-config refuses these timers; if they slipped through, the limit still holds."""
    model = flapping_site(
        min_on_time_s=0.0, min_off_time_s=0.0, increase_delay_s=0.0, increase_hysteresis_a=0.0
    )
    exc = model.run(300)
    assert exc.worst_ratio <= 1.0 + 1e-9, exc
    assert model.energy_ah > 0.5 * (LIMIT - 6) * 3 * 240 / 3600  # still charging, not starved


def test_timers_at_their_minimum_keep_the_limit_and_do_not_flap() -> None:
    model = flapping_site(
        min_on_time_s=30.0, min_off_time_s=30.0, increase_delay_s=1.0, increase_hysteresis_a=0.5
    )
    exc = model.run(300)
    assert exc.worst_ratio <= 1.0 + 1e-9, exc
    health = model.ctl.health(300.0)
    assert all(h.cycles_total <= 2 for h in health.values()), health


def test_a_live_reconfiguration_keeps_decreases_not_yet_followed() -> None:
    ctl = make()
    t = at_sixteen(ctl)
    others = [bay("A", 16, acked=16, acked_at=t), bay("B", 16, acked=16, acked_at=t, order=1)]
    step(ctl, t, [*others, bay("C", 0, order=2)], grid=32)
    # The owner saves a setting while A and B have not confirmed their cut yet.
    new = LoadController(ctl.config.model_copy(update={"rules": ()}))
    new.inherit(ctl, t + 0.2)
    r = step(new, t + 0.5, [*others, bay("C", 0, order=2)], grid=32)
    assert r.setpoints_a == {"A": 10.6, "B": 10.6, "C": 0}


def step_leased(
    ctl: LoadController, now: float, bays: list[BayInput], lease: float, cap: float | None = None
) -> StepResult:
    return ctl.step(
        now,
        StepInput(
            bays=tuple(bays),
            grid=GridInput((0.0, 0.0, 0.0), Freshness.FRESH, now),
            wall_time=NOON,
            lease_a=(lease, lease, lease),
            station_cap_a=cap,
        ),
    )


def leased_at_sixteen(ctl: LoadController, lease: float) -> float:
    """A and B charging at 16 A each under ``lease``, acknowledged and drawn; returns the time."""
    t = 0.0
    while t < 10:
        a, b = ctl.setpoints_a["A"], ctl.setpoints_a["B"]
        step_leased(
            ctl,
            t,
            [
                bay("A", a, acked=a, acked_at=t, seen_at=t),
                bay("B", b, acked=b, acked_at=t, seen_at=t, order=1),
            ],
            lease=lease,
        )
        t += 0.5
    assert ctl.setpoints_a["A"] == ctl.setpoints_a["B"] == 16
    return t


def test_a_newcomer_waits_for_the_others_to_follow_a_cut_lease() -> None:
    """The site's breaker is far away (another station shares it): only the lease binds here.
    The coordinator cuts this station from 32 A to 24 A as C arrives; C may start only once A
    and B draw what the cut left them, or the station draws above its lease meanwhile."""
    ctl = make(main_limit_a=200.0)
    t = leased_at_sixteen(ctl, 32.0)
    drawn = {"A": 16.0, "B": 16.0, "C": 0.0}
    for dt_ in (0.0, 0.25, 0.5, 1.0):
        r = step_leased(
            ctl,
            t + dt_,
            [
                bay("A", drawn["A"], acked=8.0, acked_at=t + 0.1, seen_at=t + dt_),
                bay("B", drawn["B"], acked=8.0, acked_at=t + 0.1, seen_at=t + dt_, order=1),
                bay("C", 0, order=2),
            ],
            lease=24.0,
        )
        assert r.setpoints_a["C"] == 0, dt_  # A and B still draw 32 A of a 24 A lease
        assert r.setpoints_a["A"] + r.setpoints_a["B"] <= 24.0
    # Both vehicles follow: now C starts, and the worst case stays within the lease.
    for k in range(1, 20):
        now = t + 1.0 + k * 0.5
        sp = dict(ctl.setpoints_a)
        r = step_leased(
            ctl,
            now,
            [
                bay("A", sp["A"], acked=sp["A"], acked_at=now, seen_at=now),
                bay("B", sp["B"], acked=sp["B"], acked_at=now, seen_at=now, order=1),
                bay("C", sp["C"], acked=sp["C"], acked_at=now, seen_at=now, order=2),
            ],
            lease=24.0,
        )
        worst = sum(max(sp[b], r.setpoints_a[b]) for b in "ABC")
        assert worst <= 24.0 + 1e-6, (now, sp, r.setpoints_a)
    assert r.setpoints_a["C"] >= 6.0


def test_the_ocpp_station_cap_also_holds_a_newcomer_back() -> None:
    """The same with an OCPP ChargePointMaxProfile lowered under a generous lease."""
    ctl = make(main_limit_a=200.0)
    t = leased_at_sixteen(ctl, 100.0)
    r = step_leased(
        ctl,
        t,
        [
            bay("A", 16, acked=16, acked_at=t - 0.5, seen_at=t),
            bay("B", 16, acked=16, acked_at=t - 0.5, seen_at=t, order=1),
            bay("C", 0, order=2),
        ],
        lease=100.0,
        cap=20.0,
    )
    assert r.setpoints_a["C"] == 0 and r.setpoints_a["A"] + r.setpoints_a["B"] <= 20.0
