"""A bay's current when no load manager runs (no ``[site]``): its maximum, capped by profiles.

The central system's charging profiles still bind such a station: a bay's
setpoint is the least of its maximum, its connector's profile limit and an
equal share of the station's limit (ChargePointMaxProfile), floored to the
0.1 A the wire carries. Without a load manager nothing moves a budget between
bays, so the station's limit is split equally over every bay, in use or not:
the shares always add up to at most the limit, whoever plugs in. A cap below
the bay's minimum current pauses it (0 A, relay off) rather than charge below
what the vehicle accepts.
"""

from __future__ import annotations

from controller.core.outputs import floor_steps


def floor_a(amps: float) -> float:
    """Down to the 0.1 A the wire carries, never up (a share of 6.99999 A is 6.9 A)."""
    return floor_steps(amps, 10) / 10.0


def direct_setpoint_a(
    max_a: float,
    min_a: float,
    *,
    connector_cap_a: float | None,
    station_cap_a: float | None,
    bays: int,
) -> float:
    """The bay's setpoint in A: 0 (paused) or between ``min_a`` and ``max_a``."""
    amps = max_a
    if connector_cap_a is not None:
        amps = min(amps, connector_cap_a)
    if station_cap_a is not None:
        amps = min(amps, station_cap_a / max(1, bays))
    amps = floor_a(max(0.0, amps))
    return amps if amps >= min_a and amps > 0 else 0.0
