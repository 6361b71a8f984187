"""Read-only views of the station for the UI: bays, station status, load, sessions, receipts,
and the live messages the pages get for the station's events.

Optional parts may be absent: the load manager's status (``station.load_status()``) and
the central-system link (``station.upstream``). What is absent is reported as ``None``
and the pages hide it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from controller.core.bays import BayRuntime
from controller.core.events import (
    BayChanged,
    BayNotice,
    BookingsChanged,
    Event,
    ScanResult,
    SettingsChanged,
    StationChanged,
    TestEnded,
)
from controller.core.station import Station
from controller.ops.session_csv import mask_token
from local_ui.context import jsonable

NOMINAL_V = 230.0


def bay_view(station: Station, rt: BayRuntime, *, public: bool = False) -> dict[str, Any]:
    snap = station.snapshots.bay(rt)
    snap["phases"] = rt.cfg.phases
    snap["min_current_a"] = rt.cfg.min_current_a
    snap["max_power_w"] = round(rt.cfg.max_current_a * NOMINAL_V * rt.cfg.phases, 1)
    sp = snap.get("setpoint_a") or 0.0
    why = site_limit(station, rt, sp) if snap["session"] else None
    snap["limited_by_site"] = why is not None
    snap["limit_reason"] = why
    # A session waiting out the relay's minimum off time: when it may start (wall clock).
    wait = station.load.start_wait_s(rt.cfg.id) if station.load and snap["session"] else 0.0
    snap["starts_at"] = round(station.clock.wall() + wait, 1) if wait > 0 and not sp else None
    if public and snap.get("session"):
        snap["session"] = {k: v for k, v in snap["session"].items() if k != "token"}
    elif snap.get("session") and rt.state.session is not None:
        snap["session"]["token"] = mask_token(rt.state.session.token)
    # Plain JSON values already (tests/test_ui_views_plain.py walks every phase): the kiosk
    # asks for every bay each second, and a copy through ``jsonable`` was a fifth of it.
    return snap


# What binds a bay's setpoint (controller.load.Reason) that is not the site holding it back.
_NOT_SITE = frozenset(
    {"inactive", "faulted", "bay_max", "eco_cap", "solar_surplus", "solar_no_surplus"}
)
_REASON_TEXT = {
    "circuit_limit": "site capacity",
    "shortage": "site capacity",
    "anti_flap": "site capacity",
    "rule": "owner rule",
    "site_power_cap": "site power cap",
    "grid_meter_stale": "grid meter",
    "grid_meter_failed": "grid meter",
    "external_cap": "operator limit",
    "station_cap": "operator limit",
    "controller_cap": "overcurrent protection",
}


def site_limit(station: Station, rt: BayRuntime, setpoint_a: float) -> str | None:
    """Why the load manager holds a charging bay below its maximum, or None when it does not."""
    load = station.load
    if load is None or not 0 < setpoint_a < rt.cfg.max_current_a - 0.05:
        return None
    res = load.last
    limit = res.allocation.limits.get(rt.cfg.id) if res is not None else None
    if limit is None:
        return "site capacity"
    reason = str(limit[0])
    if reason in _NOT_SITE:
        return None  # Eco, the bay's own maximum, Solar, or still ramping up to it
    return _REASON_TEXT.get(reason, reason)


# What the pages show (StatusChanged and SessionClosed are for the central system).
UI_EVENTS: tuple[type[Event], ...] = (
    BayChanged,
    StationChanged,
    BayNotice,
    ScanResult,
    BookingsChanged,
    SettingsChanged,
    TestEnded,
)


def ui_message(station: Station, event: Event, public: bool) -> dict[str, Any] | None:
    """The live message a page gets for ``event`` (None: pages do not show it)."""
    match event:
        case BayChanged(bay_id=bay_id):
            rt = station.bays.get(bay_id)
            return {"type": "bay", "bay": bay_view(station, rt, public=public)} if rt else None
        case StationChanged():
            return {"type": "station", "station": station_view(station)}
        case BayNotice(bay_id=bay_id, code=code, message=message):
            return {"type": "notice", "bay_id": bay_id, "code": code, "message": message}
        case ScanResult(bay_id=bay_id, ok=ok, code=code, message=message, session_id=sid):
            return {
                "type": "scan",
                "bay_id": bay_id,
                "ok": ok,
                "code": code,
                "message": message,
                "session_id": sid,
            }
        case BookingsChanged():
            return {"type": "bookings"}
        case SettingsChanged(section=section, values=values):
            return {"type": "settings", "section": section, "values": dict(values)}
        case TestEnded(bay_id=bay_id, reason=reason, message=message):
            return {"type": "test_ended", "bay_id": bay_id, "reason": reason, "message": message}
    return None


def cloud_online(station: Station) -> bool | None:
    up = station.upstream
    return None if up is None else bool(up.online)


def pv_available(station: Station) -> bool:
    return station.meters.pv_available


def _per_phase(v: Any) -> list[float] | None:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return [float(v)] * 3
    if isinstance(v, list | tuple) and v and all(isinstance(x, int | float) for x in v):
        return [float(x) for x in v]
    return None


def load_view(station: Station) -> dict[str, Any] | None:
    """Building load vs limit and the chargers' share, per phase, if a load manager reports it.

    Accepts a mapping (or an object with attributes) with ``limit_a``,
    ``building_a`` (everything on the main breaker, chargers included) and
    ``chargers_a``; each a number or a per-phase list.
    """
    status: Any = station.load_status()
    if status is None:
        return None

    def get(key: str) -> Any:
        if isinstance(status, dict):
            return status.get(key)
        return getattr(status, key, None)

    limit = _per_phase(get("limit_a"))
    building = _per_phase(get("building_a"))
    if limit is None or building is None:
        return None
    chargers = _per_phase(get("chargers_a")) or [0.0] * len(building)
    phases = []
    for i, lim in enumerate(limit):
        total = building[i] if i < len(building) else 0.0
        ev = chargers[i] if i < len(chargers) else 0.0
        pct = 100.0 * total / lim if lim > 0 else 100.0
        level = "ok" if pct < 80 else "warn" if pct < 95 else "high"
        phases.append(
            {
                "phase": f"L{i + 1}",
                "limit_a": round(lim, 1),
                "building_a": round(total, 1),
                "chargers_a": round(ev, 1),
                "other_a": round(max(0.0, total - ev), 1),
                "pct": round(pct, 1),
                "level": level,
            }
        )
    freshness = get("freshness")
    conflicts = get("conflicts")
    return {
        "phases": phases,
        "freshness": str(freshness) if freshness is not None else None,
        "conflicts": [str(c) for c in conflicts] if isinstance(conflicts, list) else [],
    }


def station_view(station: Station) -> dict[str, Any]:
    snap = station.snapshots.station()
    snap["accepting_sessions"] = not station.safety.blockers
    snap["cloud_online"] = cloud_online(station)
    snap["pv_available"] = pv_available(station)
    snap["tariff"] = station.cfg.tariff.model_dump(mode="json")
    snap["exit_grace_s"] = station.cfg.timers.exit_grace_s
    snap["now"] = station.clock.wall()
    snap["load"] = load_view(station)
    return jsonable(snap)  # type: ignore[no-any-return]


def iso_local(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def session_view(row: dict[str, Any], *, mask: bool = True) -> dict[str, Any]:
    d = dict(row)
    tok = str(d.get("token", ""))
    if mask:
        d["token"] = mask_token(tok)
    started, stopped = d.get("started_at"), d.get("stopped_at")
    d["duration_s"] = round(stopped - started, 1) if started and stopped else None
    d.pop("tariff", None)
    return d


def receipt(station: Station, row: dict[str, Any]) -> dict[str, Any]:
    energy = int(row.get("energy_wh") or 0)
    started = float(row["started_at"])
    stopped = row.get("stopped_at")
    duration = (float(stopped) - started) if stopped else None
    rt = station.bays.get(str(row["bay_id"]))
    return {
        "session_id": row["id"],
        "station": station.cfg.station.name,
        "bay_id": row["bay_id"],
        "kind": rt.cfg.kind if rt else "evse",
        "started_at": started,
        "stopped_at": stopped,
        "duration_s": round(duration, 1) if duration is not None else None,
        "energy_wh": energy,
        "cost": row.get("cost"),
        "currency": row.get("currency") or station.cfg.tariff.currency,
        "stop_reason": row.get("stop_reason"),
        "mode": row.get("mode"),
        "state": row.get("state"),
        "exit_grace_s": station.cfg.timers.exit_grace_s,
    }


def receipt_text(r: dict[str, Any]) -> str:
    """What the receipt's QR code holds: plain text a phone can show or keep."""
    mins = int((r.get("duration_s") or 0) // 60)
    cost = r.get("cost")
    lines = [
        f"{r['station']} receipt",
        f"Session {r['session_id']} bay {r['bay_id']}",
        f"Start {iso_local(r['started_at'])}",
        f"End {iso_local(r.get('stopped_at'))}",
        f"Energy {r['energy_wh'] / 1000:.3f} kWh",
        f"Time {mins} min",
        f"Cost {cost:.2f} {r['currency']}" if isinstance(cost, int | float) else "Cost n/a",
    ]
    return "\n".join(lines)
