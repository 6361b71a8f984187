"""The retained state documents: the station as a whole and each bay (plain JSON-able dicts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from controller.core.bays import BayRuntime

if TYPE_CHECKING:
    from controller.core.station import Station

# What binds a bay's setpoint (controller.load.Reason) without the site holding it back.
_NOT_SITE = frozenset(
    {"inactive", "faulted", "bay_max", "eco_cap", "solar_surplus", "solar_no_surplus"}
)


def limited_by_site(station: Station, rt: BayRuntime) -> bool:
    """The bay's session gets less than its maximum because of the site (capacity, limits)."""
    load = station.load
    if load is None or load.last is None or rt.state.session is None:
        return False
    why = load.last.allocation.limits.get(rt.cfg.id)
    if why is None:
        return False
    return str(why[0]) not in _NOT_SITE


def bay_state(station: Station, rt: BayRuntime) -> dict[str, Any]:
    snap = station.snapshots.bay(rt)
    sess = snap["session"]
    cur = snap["current_a"] or [0.0, 0.0, 0.0]
    return {
        "status": snap["status"],
        "available": snap["available"],
        "node_online": snap["node_online"],
        "power_w": round(snap["power_w"] or 0.0),
        "current_a": [round(c, 1) for c in cur],
        "setpoint_a": snap["setpoint_a"],
        "energy_wh": sess["energy_wh"] if sess else None,
        "session_id": sess["id"] if sess else None,
        "mode": sess["mode"] if sess else None,
        "limited_by_site": limited_by_site(station, rt),
        "fault": snap["fault_message"] if snap["fault"] else None,
    }


def site_state(station: Station) -> dict[str, Any]:
    snap = station.snapshots.station()
    power = 0.0
    current = [0.0, 0.0, 0.0]
    for rt in station.bays.values():
        tel = rt.telemetry if rt.state.node_online else None
        if tel is not None:
            power += tel.power_w
            for i in range(3):
                current[i] += tel.current_a[i]
    ext = snap.get("external") or {}
    return {
        "accepting_sessions": snap["accepting_sessions"],
        "safe_mode": sorted(snap["blocked"]),
        "emergency_stop": snap["emergency_stop_pressed"],
        "power_w": round(power),
        "current_a": [round(c, 1) for c in current],
        "limited_by_site": any(limited_by_site(station, rt) for rt in station.bays.values()),
        "grid_operator": bool(ext.get("grid_operator", False)),
        "external_fallback": bool(ext.get("fallback", False)),
        "storage_warning": snap["storage"]["warning"],
    }
