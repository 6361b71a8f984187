"""What the station shows: plain-data snapshots of a bay and of the station, for the UIs.

A snapshot is read from the live state and never changes it. It is the UI's
shape, not a contract with the central system (OCPP statuses come from
:mod:`controller.core.status`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from controller.core.bay import fault_message, ocpp_status, offline_reason
from controller.core.bays import BayRuntime, Bays
from controller.core.config import StationConfig
from controller.core.journalguard import JournalGuard
from controller.core.safety import SafetySupervisor
from controller.ports import Clock


def _mask(token: str) -> str:
    return token if len(token) <= 4 else "…" + token[-4:]


class Snapshots:
    def __init__(
        self,
        cfg: StationConfig,
        clock: Clock,
        bays: Bays,
        safety: SafetySupervisor,
        guard: JournalGuard,
        started_at: float,
    ) -> None:
        self._cfg = cfg
        self._clock = clock
        self._bays = bays
        self._safety = safety
        self._guard = guard
        self._started_at = started_at
        # What limits the site from outside (energy manager, grid operator), set by the
        # adapter that receives them; None: nothing from outside.
        self.external: Callable[[], dict[str, Any]] | None = None

    def bay(self, rt: BayRuntime) -> dict[str, Any]:
        """What a bay shows now. Every measured figure comes with its age: ``measured_at``
        (wall clock) is when the node measured power, current, relay and the session's
        energy; ``at`` is when this snapshot was taken (elapsed time and cost). A node
        that is offline has no live figures: power, current and relay are ``None``
        (unknown), never its last telemetry passed off as live."""
        s = rt.state
        now = self._clock.wall()
        tel = rt.telemetry
        # Telemetry is stamped with the driver's monotonic clock (as the load loop reads it).
        age = max(0.0, time.monotonic() - tel.at) if tel is not None else None
        live = tel if s.node_online else None
        session = None
        if s.session is not None:
            sess = s.session
            elapsed = max(0.0, now - sess.started_at)
            t = rt.tariff or self._cfg.tariff
            session = {
                "id": sess.session_id,
                "token": _mask(sess.token),
                "mode": sess.mode,
                "started_at": sess.started_at,
                "elapsed_s": round(elapsed, 1),
                "energy_wh": sess.energy_wh,
                "peak_power_w": sess.peak_power_w,
                "cost": round(
                    t.per_session + t.per_kwh * sess.energy_wh / 1000 + t.per_minute * elapsed / 60,
                    2,
                ),
                "currency": t.currency,
                "quota_wh": sess.quota_wh,
                "quota_s": sess.quota_s,
            }
        return {
            "id": rt.cfg.id,
            "connector": rt.cfg.connector,
            "kind": rt.cfg.kind,
            "status": ocpp_status(s).value,
            "phase": s.phase.value,
            "node_online": s.node_online,
            "fault": s.fault,
            "fault_message": fault_message(s.fault),
            # Machine-readable: why the bay is paused, and since when (wall) for its session.
            "offline_reason": offline_reason(s),
            "interrupted_since": s.interrupted_since,
            "available": s.available,
            "pending_unavailable": s.pending_unavailable,
            "setpoint_a": s.setpoint_a,
            "max_current_a": rt.cfg.max_current_a,
            "power_w": round(live.power_w, 1) if live else None,
            "current_a": [round(c, 2) for c in live.current_a] if live else None,
            "relay_on": live.relay_on if live else None,
            "at": now,
            "measured_at": round(now - age, 3) if age is not None else None,
            "measured_age_s": round(age, 3) if age is not None else None,
            "door_closed": s.door_closed,
            "locked": s.locked,
            "pilot": s.pilot.value,
            "hold": (
                {
                    "id": s.hold.hold_id,
                    "expires_at": s.hold.expires_at,
                    "reservation_id": s.hold.reservation_id,
                }
                if s.hold
                else None
            ),
            "session": session,
        }

    def station(self) -> dict[str, Any]:
        blockers = self._safety.blockers
        return {
            "id": self._cfg.station.id,
            "name": self._cfg.station.name,
            "blocked": dict(blockers),
            "safe_mode": self._safety.snapshot(),
            "emergency_stop_pressed": self._safety.stop_input_pressed,
            "accepting_sessions": not blockers,
            "storage": {**self._guard.snapshot(), "warning": self._guard.warning()},
            "bays": len(self._bays),
            "external": self.external() if self.external is not None else None,
            "uptime_s": round(time.monotonic() - self._started_at, 1),
        }


__all__ = ["Snapshots"]
