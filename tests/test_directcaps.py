"""Bay setpoints without a load manager: the maximum, capped by charging profiles, floored."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.directcaps import direct_setpoint_a, floor_a


@pytest.mark.parametrize(
    ("connector", "station", "bays", "expected"),
    [
        (None, None, 3, 16.0),  # no profile: the bay's maximum
        (10.0, None, 3, 10.0),
        (32.0, None, 3, 16.0),  # a profile never raises a bay above its maximum
        (None, 30.0, 3, 10.0),  # the station's limit, shared equally
        (None, 20.0, 3, 6.6),  # 6.666 A floored, never rounded up
        (None, 17.0, 3, 0.0),  # 5.67 A is below the 6 A minimum: paused
        (5.9, None, 1, 0.0),
        (6.0, None, 1, 6.0),
        (0.0, None, 1, 0.0),  # a zero limit pauses
        (8.0, 30.0, 3, 8.0),
    ],
)
def test_table(connector: float | None, station: float | None, bays: int, expected: float) -> None:
    got = direct_setpoint_a(16.0, 6.0, connector_cap_a=connector, station_cap_a=station, bays=bays)
    assert got == expected


def test_floor() -> None:
    assert floor_a(6.06) == 6.0 and floor_a(7.3) == 7.3 and floor_a(6.999) == 6.9


caps = st.one_of(st.none(), st.floats(0.0, 100.0))


@given(st.floats(6.0, 80.0), caps, caps, st.integers(1, 12))
def test_never_above_a_cap_and_shares_fit_the_station(
    max_a: float, connector: float | None, station: float | None, bays: int
) -> None:
    got = direct_setpoint_a(max_a, 6.0, connector_cap_a=connector, station_cap_a=station, bays=bays)
    assert got == 0.0 or 6.0 <= got <= max_a
    for cap in (connector, station / bays if station is not None else None):
        if cap is not None:
            assert got <= cap
    if station is not None:
        assert got * bays <= station + 1e-9
    assert round(got * 10) == pytest.approx(got * 10)  # 0.1 A steps
