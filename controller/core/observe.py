"""Safe mode and observation of the station: causes, audit, live updates, snapshots, meters."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import structlog

from controller.core.bay import (
    FaultCleared,
    FaultRaised,
    fault_message,
    ocpp_status,
    offline_reason,
)
from controller.core.directcaps import direct_setpoint_a
from controller.core.journal import JournalError
from controller.core.journalguard import BLOCKED_MESSAGE
from controller.core.plausibility import bounds_for
from controller.ports import (
    ChargingLimits,
    LinkStats,
    MeterReading,
)

if TYPE_CHECKING:
    pass

from controller.core.runtime import BayRuntime, MeterInput, Outcome, StationBase, _mask

log = structlog.get_logger(__name__)


class StationObserver(StationBase):
    # ------------------------------------------------------------------ safe mode

    @property
    def blockers(self) -> dict[str, str]:
        """Safe-mode causes that refuse new sessions (cause -> message)."""
        return self.safe.refusing

    def _block(self, cause: str, message: str) -> None:
        if cause == "journal":
            message = BLOCKED_MESSAGE  # one sentence, whichever part saw the failure first
        entry = self.safe.enter(cause, message, self.clock.wall())
        if entry is not None:
            log.error("safe_mode.entered", cause=cause, message=message)
            self._outputs_changed()  # installer tests end at once; some causes forbid outputs
            self._spawn_audit("safe_mode_entered", "station", {"cause": cause, "message": message})
            self._publish({"type": "station", "station": self.station_snapshot()})

    def _unblock(self, cause: str, *, actor: str = "station", owner: bool = False) -> bool:
        entry = self.safe.leave(cause, owner=owner)
        if entry is None:
            return False
        log.info("safe_mode.left", cause=cause, actor=actor)
        self._spawn_audit("safe_mode_left", actor, {"cause": cause})
        self._publish({"type": "station", "station": self.station_snapshot()})
        return True

    block = _block
    unblock = _unblock

    def _spawn_audit(self, kind: str, actor: str, detail: dict[str, Any]) -> None:
        # Safe-mode changes happen inside callbacks and transitions; the audit row
        # is written by a job of the station's task runner (its TaskGroup owns it).
        if kind == "safe_mode_entered" and detail.get("cause") == "journal":
            return  # cannot be journaled; the log line stands for it
        self.tasks.spawn(self._audit(kind, actor, detail), name=f"audit:{kind}", drain=True)

    async def settle(self) -> None:
        """Wait for background jobs such as audit writes (tests, shutdown)."""
        await self.tasks.settle()

    def _outputs_changed(self) -> None:
        """Every bay's output loop decides again now (a safety input changed)."""
        for rt in self.bays.values():
            rt.output_changed.set()

    async def emergency_stop(self, pressed: bool) -> None:
        """The emergency-stop input changed. Pressed: all relays off, all sessions stopped, latched."""
        self.stop_input_pressed = pressed
        self._outputs_changed()  # relays off at once, installer tests included
        if not pressed:
            log.info("emergency_stop.released", note="latched until an owner clears it")
            self._publish({"type": "station", "station": self.station_snapshot()})
            return
        self._block("emergency_stop", "Emergency stop: the station is stopped.")
        for bay_id in list(self.bays):
            await self.apply(bay_id, FaultRaised("emergency_stop"), actor="emergency_stop")

    async def clear_emergency_stop(self, *, actor: str) -> Outcome:
        if self.stop_input_pressed:
            return Outcome(False, "still_pressed", "Release the emergency stop first.")
        if not self._unblock("emergency_stop", actor=actor, owner=True):
            return Outcome(False, "not_active", "No emergency stop to clear.")
        for bay_id, rt in self.bays.items():
            if rt.state.fault == "emergency_stop":
                await self.apply(bay_id, FaultCleared(), actor=actor)
        return Outcome(True, "cleared", "Emergency stop cleared.")

    async def _audit(self, kind: str, actor: str, detail: dict[str, Any]) -> None:
        try:
            await self.journal.audit(self.clock.wall(), actor, kind, detail)
        except JournalError:
            self.guard.failed()

    audit = _audit

    # ------------------------------------------------------------------ observing

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=256)
        self._listeners.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._listeners.discard(q)

    @contextlib.asynccontextmanager
    async def updates(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        q = self.subscribe()
        try:
            yield q
        finally:
            self.unsubscribe(q)

    def _publish(self, msg: dict[str, Any]) -> None:
        for q in list(self._listeners):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(msg)

    publish = _publish

    def bay_snapshot(self, rt: BayRuntime) -> dict[str, Any]:
        """What a bay shows now. Every measured figure comes with its age: ``measured_at``
        (wall clock) is when the node measured power, current, relay and the session's
        energy; ``at`` is when this snapshot was taken (elapsed time and cost). A node
        that is offline has no live figures: power, current and relay are ``None``
        (unknown), never its last telemetry passed off as live."""
        s = rt.state
        now = self.clock.wall()
        tel = rt.telemetry
        # Telemetry is stamped with the driver's monotonic clock (as the load loop reads it).
        age = max(0.0, time.monotonic() - tel.at) if tel is not None else None
        live = tel if s.node_online else None
        session = None
        if s.session is not None:
            sess = s.session
            elapsed = max(0.0, now - sess.started_at)
            t = rt.tariff or self.cfg.tariff
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

    def _setpoint(self, rt: BayRuntime) -> float:
        if self.load is None:
            # No load manager: the bay's maximum, capped by the central system's profiles.
            up = self.upstream
            caps: dict[int, float | None] = (
                up.current_limits_a(self.clock.wall()) if isinstance(up, ChargingLimits) else {}
            )
            return direct_setpoint_a(
                rt.cfg.max_current_a,
                rt.cfg.min_current_a,
                connector_cap_a=caps.get(rt.cfg.connector),
                station_cap_a=caps.get(0),
                bays=len(self.bays),
            )
        return rt.load_setpoint_a

    def set_load_setpoint(self, bay_id: str, amps: float) -> None:
        """The load manager's setpoint for a bay; sent at once when it changes."""
        rt = self.bay(bay_id)
        if rt.load_setpoint_a != amps:
            rt.load_setpoint_a = amps
            rt.output_changed.set()

    def load_status(self) -> dict[str, Any] | None:
        return self.load.status() if self.load is not None else None

    def on_meter_reading(
        self,
        reading: MeterReading,
        *,
        role: str,
        bay_id: str | None = None,
        max_current_a: float | None = None,
    ) -> None:
        """A meter published (called on the loop by the meter adapter).

        The plausibility gate comes first: an implausible reading goes on as FAILED.
        """
        site, rt = self.cfg.site, self.bays.get(bay_id or "")
        bounds = bounds_for(
            role,
            main_limit_a=site.main_limit_a if site is not None else None,
            bay_max_a=rt.cfg.max_current_a if rt is not None else None,
            rating_a=max_current_a,
        )
        reading, note = self.meter_gate.admit(
            reading, bounds, role=role, now_wall=self.clock.wall()
        )
        if note is not None:
            log.warning(note.kind, **note.detail)
            self._spawn_audit(note.kind, "meter", note.detail)
        prev = self.meters.get(reading.meter)
        self.meters[reading.meter] = MeterInput(role, bay_id, reading)
        if role in ("grid", "pv"):
            self.load_changed.set()
        if prev is None or prev.reading.freshness != reading.freshness:
            log.info(
                "meter.freshness",
                meter=reading.meter,
                role=role,
                freshness=reading.freshness.value,
                error=reading.error or None,
            )

    def meter_of(self, role: str) -> MeterInput | None:
        for m in self.meters.values():
            if m.role == role:
                return m
        return None

    @property
    def pv_available(self) -> bool:
        return self.meter_of("pv") is not None

    def healthy(self) -> bool:
        """For the watchdog: the station has started and its loop runs (we are called).

        A journal that cannot write is not a reason to be restarted (a restart frees no
        space and would lose the transitions that wait for it): ``/healthz`` reports it.
        """
        return self._started.is_set()

    def station_snapshot(self) -> dict[str, Any]:
        return {
            "id": self.cfg.station.id,
            "name": self.cfg.station.name,
            "blocked": dict(self.blockers),
            "safe_mode": self.safe.snapshot(),
            "emergency_stop_pressed": self.stop_input_pressed,
            "accepting_sessions": not self.blockers,
            "storage": {**self.guard.snapshot(), "warning": self.guard.warning()},
            "bays": len(self.bays),
            "uptime_s": round(time.monotonic() - self.started_at, 1),
        }

    def link_stats(self) -> dict[str, LinkStats]:
        return {bay_id: rt.node.stats() for bay_id, rt in self.bays.items() if rt.node is not None}
