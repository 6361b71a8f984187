"""Operations: the station's health verdict (``GET /healthz``, the watchdog's view).

:func:`health` is cheap (no journal query), computed from the running station.
Unhealthy (503) when the station has not started, the journal cannot be
written (until it has written what waits and a probe write succeeded), a
safe-mode cause refuses sessions (emergency stop, journal, config), the event
loop lags or stalls, or every node is offline. Other trouble (low disk space,
an optional service restarting, a meter, some nodes, OCPP offline,
non-refusing safe-mode causes) is a warning and stays 200. Metrics live in :mod:`controller.ops.metrics`, the ``status``
command in :mod:`controller.cli.status`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from controller.core.bay import ocpp_status
from controller.core.station import Station
from controller.ops.looplag import monitor_of
from controller.ports import Freshness

log = structlog.get_logger(__name__)

LAG_LIMIT_S = 0.5  # loop lag (latest or p99 over the window) above this is unhealthy
JOURNAL_TTL_S = 5.0  # journal figures in /metrics are at most this old
METRICS_TOKEN_ENV = "EDGE_STATION_METRICS_TOKEN"
EXIT_OK, EXIT_UNHEALTHY, EXIT_UNREACHABLE = 0, 1, 2

# --------------------------------------------------------------------------- health


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    message: str


@dataclass(slots=True)
class Health:
    ok: bool
    reasons: list[Problem]
    warnings: list[Problem]
    body: dict[str, Any] = field(default_factory=dict)


def upstream_online(station: Station) -> bool | None:
    up = station.upstream
    online = getattr(up, "online", None) if up is not None else None
    return bool(online) if online is not None else None


def health(station: Station, *, lag_limit_s: float = LAG_LIMIT_S) -> Health:
    reasons: dict[str, Problem] = {}
    warnings: list[Problem] = []

    def bad(code: str, message: str) -> None:
        reasons.setdefault(code, Problem(code, message))

    guard = station.guard
    if not station.journal.writable or guard.blocked:
        bad("journal", "The journal cannot be written; the station refuses new sessions.")
    if not station.healthy():
        bad("not_started", "The station has not started yet.")
    for c in station.safety.causes.values():
        if c.refuse_sessions or c.latched:
            bad(c.cause, c.message)
        else:
            warnings.append(Problem(c.cause, c.message))
    low = guard.warning()
    if low is not None:
        warnings.append(Problem("disk_low", low))
    for svc in station.supervisor.failing():
        warnings.append(
            Problem("service_restarting", f"The {svc.name} service failed and is restarting.")
        )

    lag = monitor_of(station)
    lag_body: dict[str, Any] | None = None
    if lag is not None:
        s = lag.stats()
        silent = lag.silent_for()
        lag_body = {
            "latest_s": _r(s.latest_s),
            "max_s": _r(s.max_s),
            "p99_s": _r(s.p99_s),
            "limit_s": lag_limit_s,
        }
        worst = max(s.latest_s or 0.0, s.p99_s or 0.0)
        if silent is not None and silent > lag.stale_after_s:
            bad("loop_stalled", f"The loop-lag monitor has been silent for {silent:.1f} s.")
        elif worst > lag_limit_s:
            bad(
                "loop_lag",
                f"The event loop lags {worst * 1000:.0f} ms (limit {lag_limit_s * 1000:.0f} ms).",
            )

    bays = list(station.bays.values())
    online = [rt.cfg.id for rt in bays if rt.state.node_online]
    if bays and not online:
        bad("all_nodes_offline", "No bay node is online.")
    elif len(online) < len(bays):
        off = [rt.cfg.id for rt in bays if not rt.state.node_online]
        warnings.append(Problem("nodes_offline", "Nodes offline: " + ", ".join(off)))
    now_m = station.clock.monotonic()
    for name, m in station.meters.inputs.items():
        if m.reading.freshness is not Freshness.FRESH:
            warnings.append(
                Problem("meter", f"Meter {name} ({m.role}) is {m.reading.freshness.value}.")
            )
    cloud = upstream_online(station)
    if cloud is False:
        warnings.append(Problem("ocpp_offline", "The central system is not connected."))

    ok = not reasons
    body: dict[str, Any] = {
        "status": "ok" if ok else "unhealthy",
        "station": station.cfg.station.id,
        "name": station.cfg.station.name,
        "uptime_s": round(now_m - station.started_at, 1),
        "reasons": [_problem(p) for p in reasons.values()],
        "warnings": [_problem(p) for p in warnings],
        "journal": {"writable": station.journal.writable},
        "storage": guard.snapshot(),
        "services": [s.snapshot() for s in station.supervisor.states.values() if not s.core],
        "loop_lag": lag_body,
        "nodes": {"online": len(online), "total": len(bays)},
        "bays": [
            {
                "id": rt.cfg.id,
                "status": ocpp_status(rt.state).value,
                "node_online": rt.state.node_online,
            }
            for rt in bays
        ],
        "safe_mode": station.safety.snapshot(),
        "emergency_stop_pressed": station.safety.stop_input_pressed,
        "accepting_sessions": not station.safety.blockers,
        "ocpp": None if cloud is None else {"connected": cloud},
        "software": station.firmware.software.view(),
        "firmware_update": _firmware_update(station),
    }
    return Health(ok, list(reasons.values()), warnings, body)


def _firmware_update(station: Station) -> dict[str, Any]:
    """The node firmware update's stage and each node's state and percent (no messages)."""
    fw = station.firmware.view()
    return {
        "status": fw["status"],
        "version": fw["version"],
        "last": fw["last"],
        "nodes": [
            {k: n[k] for k in ("bay_id", "state", "percent", "version_before", "version_after")}
            for n in fw["nodes"]
        ],
    }


def _problem(p: Problem) -> dict[str, str]:
    return {"code": p.code, "message": p.message}


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(v, nd)
