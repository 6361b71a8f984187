"""Smart Charging: the pure schedule arithmetic (stack levels, validity, recurrency, units), and
profiles applied as bay caps by a station without a load manager (real websocket CSMS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ocpp.v16 import call

from cloud_sync.smart import Profile, TxContext, check, composite, connector_limit_a, parse_time
from tests.test_ocpp_support import CP, rig

DAY = 86_400
T0 = parse_time("2024-03-04T00:00:00Z")


def prof(
    pid: int,
    purpose: str,
    periods: list[tuple[int, float]],
    *,
    connector: int = 0,
    level: int = 0,
    kind: str = "Absolute",
    unit: str = "A",
    start: str | None = "2024-03-04T00:00:00Z",
    **extra: Any,
) -> Profile:
    sched: dict[str, Any] = {
        "charging_rate_unit": unit,
        "charging_schedule_period": [{"start_period": s, "limit": v} for s, v in periods],
    }
    if start:
        sched["start_schedule"] = start
    for k in ("duration",):
        if k in extra:
            sched[k] = extra.pop(k)
    d = {
        "charging_profile_id": pid,
        "stack_level": level,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": kind,
        "charging_schedule": sched,
        **extra,
    }
    return Profile.from_ocpp(connector, d, T0)


def test_stack_levels_and_fallback_to_lower_level() -> None:
    low = prof(1, "TxDefaultProfile", [(0, 16)], level=0)
    high = prof(2, "TxDefaultProfile", [(0, 6)], level=1, duration=3600)
    ctx = TxContext(1, 3)
    assert connector_limit_a([low, high], ctx, T0 + 10) == 6
    assert connector_limit_a([low, high], ctx, T0 + 3600) == 16  # the higher one ended


def test_connector_profile_overrides_connector_zero_default_and_tx_wins() -> None:
    dflt0 = prof(1, "TxDefaultProfile", [(0, 16)])
    dflt1 = prof(2, "TxDefaultProfile", [(0, 20)], connector=1)
    tx = prof(3, "TxProfile", [(0, 8), (600, 10)], connector=1, kind="Relative", start=None)
    idle = TxContext(1, 3)
    assert connector_limit_a([dflt0, dflt1, tx], idle, T0) == 20
    assert connector_limit_a([dflt0, dflt1, tx], TxContext(2, 3), T0) == 16
    running = TxContext(1, 3, tx_start=T0 + 100)
    assert connector_limit_a([dflt0, dflt1, tx], running, T0 + 200) == 8
    assert connector_limit_a([dflt0, dflt1, tx], running, T0 + 700) == 10


def test_watts_become_amps_with_the_phases() -> None:
    p = prof(1, "TxDefaultProfile", [(0, 7360)], unit="W")
    assert connector_limit_a([p], TxContext(1, 1), T0) == 32.0
    assert round(connector_limit_a([p], TxContext(1, 3), T0) or 0, 3) == round(7360 / 690, 3)
    cp = prof(2, "ChargePointMaxProfile", [(0, 11040)], unit="W")
    assert connector_limit_a([cp], TxContext(0), T0) == 16.0


def test_daily_recurrency_and_validity() -> None:
    evening = prof(
        1,
        "TxDefaultProfile",
        [(0, 32), (18 * 3600, 10), (22 * 3600, 32)],
        kind="Recurring",
        recurrency_kind="Daily",
        valid_to="2024-03-10T00:00:00Z",
    )
    ctx = TxContext(1, 3)
    assert connector_limit_a([evening], ctx, T0 + 3 * DAY + 19 * 3600) == 10
    assert connector_limit_a([evening], ctx, T0 + 3 * DAY + 23 * 3600) == 32
    assert connector_limit_a([evening], ctx, T0 + 7 * DAY + 19 * 3600) is None  # expired


def test_composite_is_the_minimum_per_interval() -> None:
    cp = prof(1, "ChargePointMaxProfile", [(0, 20), (1800, 12)])
    tx = prof(2, "TxDefaultProfile", [(0, 16), (900, 25), (2700, 6)])
    out = composite([cp, tx], TxContext(1, 3), T0, 3600, default_a=32)
    assert out == [(0, 16.0), (900, 20.0), (1800, 12.0), (2700, 6.0)]
    watts = composite([cp, tx], TxContext(1, 3), T0, 900, unit="W", default_a=32)
    assert watts == [(0, 16 * 690.0)]


def test_check_refuses_bad_schedules() -> None:
    assert check(prof(1, "TxDefaultProfile", [(10, 6)]), max_stack=10, max_periods=5)
    assert check(prof(1, "TxDefaultProfile", [(0, 6), (0, 7)]), max_stack=10, max_periods=5)
    assert check(prof(1, "TxDefaultProfile", [(0, 6)], level=11), max_stack=10, max_periods=5)
    assert check(
        prof(1, "TxDefaultProfile", [(0, 6)], kind="Recurring"), max_stack=10, max_periods=5
    )
    assert check(prof(1, "TxDefaultProfile", [(0, 6)]), max_stack=10, max_periods=5) is None


@given(
    st.lists(
        st.tuples(st.integers(0, 3000), st.floats(0, 64).map(lambda x: round(x, 1))),
        min_size=1,
        max_size=6,
    ),
    st.lists(
        st.tuples(st.integers(0, 3000), st.floats(0, 64).map(lambda x: round(x, 1))),
        min_size=1,
        max_size=6,
    ),
)
def test_composite_never_above_any_profile(
    a: list[tuple[int, float]], b: list[tuple[int, float]]
) -> None:
    def norm(ps: list[tuple[int, float]]) -> list[tuple[int, float]]:
        seen: dict[int, float] = {0: ps[0][1]}
        for s, v in ps[1:]:
            seen.setdefault(s, v)
        return sorted(seen.items())

    pa, pb = prof(1, "ChargePointMaxProfile", norm(a)), prof(2, "TxDefaultProfile", norm(b))
    out = composite([pa, pb], TxContext(1, 3), T0, 3600, default_a=80)
    assert out[0][0] == 0
    for i, (start, limit) in enumerate(out):
        end = out[i + 1][0] if i + 1 < len(out) else 3600
        for t in (start, (start + end) // 2, end - 1):
            la = connector_limit_a([pa], TxContext(0), T0 + t)
            lb = connector_limit_a([pb], TxContext(1, 3), T0 + t)
            assert limit <= min(x for x in (la, lb, 80) if x is not None) + 1e-6


# --------------------------------------------------------------------------- without a load manager


def _profile(pid: int, purpose: str, limit: float, unit: str = "A", **extra: Any) -> dict[str, Any]:
    return {
        "chargingProfileId": pid,
        "stackLevel": 0,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute" if purpose != "TxProfile" else "Relative",
        "chargingSchedule": {
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
            **({"startSchedule": "2020-01-01T00:00:00Z"} if purpose != "TxProfile" else {}),
        },
        **extra,
    }


@pytest.mark.timeout(60)
async def test_profiles_cap_the_bays_directly_without_a_load_manager(tmp_path: Path) -> None:
    """Finding 10: with no ``[site]``, an accepted profile used to change nothing at all."""
    async with rig(tmp_path, bays=2) as r:
        assert r.station.load is None
        await r.online()
        node = r.hub.node(r.bay(1).cfg.node_id)

        async def output(want: tuple[bool, float]) -> None:
            await r.until(lambda: (node.relay_on, node.setpoint_a) == want)

        async def set_(connector: int, prof: dict[str, Any]) -> None:
            resp = await r.sim.call(
                CP, call.SetChargingProfile(connector_id=connector, cs_charging_profiles=prof)
            )
            assert resp.status == "Accepted"

        await r.start_session(1, "T1")
        await output((True, 16.0))  # the bay's maximum
        # The connectors' default caps the bay.
        await set_(0, _profile(1, "TxDefaultProfile", 10.0))
        await output((True, 10.0))
        # The station's maximum is shared equally by its two bays, floored to the
        # wire's 0.1 A: 19.5 A -> 9.75 A -> 9.7 A each.
        await set_(0, _profile(2, "ChargePointMaxProfile", 19.5))
        await output((True, 9.7))
        # 10 A for the station: 5 A a bay is below the 6 A minimum, so the bay pauses.
        await set_(0, _profile(2, "ChargePointMaxProfile", 10.0))
        await output((False, 0.0))
        assert r.bay(1).state.session is not None  # paused, not stopped
        resp = await r.sim.call(CP, call.ClearChargingProfile(id=2))
        assert resp.status == "Accepted"
        await output((True, 10.0))
        # A TxProfile of the running transaction wins over the default.
        await r.drained()
        await set_(1, _profile(3, "TxProfile", 8.0, transactionId=1))
        await output((True, 8.0))
        resp = await r.sim.call(CP, call.ClearChargingProfile())
        assert resp.status == "Accepted"
        await output((True, 16.0))
        # Watts: 4.6 kW on a three-phase bay is 6.67 A, floored to 6.6 A.
        await set_(1, _profile(4, "TxDefaultProfile", 4600.0, unit="W"))
        await output((True, 6.6))
