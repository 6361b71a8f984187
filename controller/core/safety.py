"""The safety supervisor: safe mode and its causes, the emergency stop.

Each cause (emergency stop, journal not writable, grid meter failed, a
service the station must not run without, ...) is entered and left
explicitly; both are logged, audited and announced. Some causes refuse new
sessions; latched ones (the emergency stop) stay until an owner clears them,
even after the input is released.

This is the one place that forces outputs off: :meth:`SafetySupervisor.forcing`
is what the bay runner's output loop hands to :func:`controller.core.outputs.decide`,
and every change here makes each bay's output loop decide again at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import structlog

from controller.core.audit import AuditLog
from controller.core.bay import Effect, Event, FaultCleared, FaultRaised
from controller.core.bays import Bays
from controller.core.events import EventBus, StationChanged
from controller.core.journalguard import BLOCKED_MESSAGE
from controller.core.outcome import Outcome
from controller.core.status import StatusFeed
from controller.ports import Clock

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SafeCause:
    cause: str
    message: str
    since: float
    refuse_sessions: bool = True
    latched: bool = False


# Known causes and whether each refuses new sessions / latches.
CAUSES: dict[str, tuple[bool, bool]] = {
    "emergency_stop": (True, True),
    "journal": (True, False),
    "grid_meter": (False, False),
    "overcurrent": (False, False),
    "config": (True, False),
}


@dataclass(frozen=True, slots=True)
class Forcing:
    """What safety imposes on every output now (see :func:`controller.core.outputs.decide`)."""

    estop_pressed: bool
    causes: frozenset[str]


class Transitions(Protocol):
    """How the supervisor changes bays (the bay runner)."""

    async def apply(
        self, bay_id: str, event: Event, *, actor: str | None = None
    ) -> list[Effect]: ...


class SafetySupervisor:
    def __init__(
        self, clock: Clock, bays: Bays, events: EventBus, audit: AuditLog, status: StatusFeed
    ) -> None:
        self._clock = clock
        self._bays = bays
        self._events = events
        self._audit = audit
        self._status = status
        self._transitions: Transitions | None = None
        self.causes: dict[str, SafeCause] = {}
        self.stop_input_pressed = False

    def attach(self, transitions: Transitions) -> None:
        """The bay runner, through which the emergency stop stops every bay's session.

        Wired after construction: the runner's journal guard enters safe mode here.
        """
        self._transitions = transitions

    def _runner(self) -> Transitions:
        if self._transitions is None:
            raise RuntimeError("the safety supervisor has no bay runner attached")
        return self._transitions

    # ------------------------------------------------------------------ state

    @property
    def active(self) -> bool:
        return bool(self.causes)

    @property
    def blockers(self) -> dict[str, str]:
        """Safe-mode causes that refuse new sessions (cause -> message)."""
        return {c.cause: c.message for c in self.causes.values() if c.refuse_sessions}

    def forcing(self) -> Forcing:
        return Forcing(self.stop_input_pressed, frozenset(self.causes))

    def snapshot(self) -> list[dict[str, object]]:
        return [
            {
                "cause": c.cause,
                "message": c.message,
                "since": c.since,
                "refuse_sessions": c.refuse_sessions,
                "latched": c.latched,
            }
            for c in self.causes.values()
        ]

    # ------------------------------------------------------------------ causes

    def block(self, cause: str, message: str) -> None:
        """Enter safe mode for ``cause`` (nothing happens when it is active already)."""
        if cause == "journal":
            message = BLOCKED_MESSAGE  # one sentence, whichever part saw the failure first
        if cause in self.causes:
            return
        refuse, latched = CAUSES.get(cause, (True, False))
        self.causes[cause] = SafeCause(cause, message, self._clock.wall(), refuse, latched)
        log.error("safe_mode.entered", cause=cause, message=message)
        self._bays.outputs_changed()  # installer tests end at once; some causes forbid outputs
        if cause != "journal":  # that one cannot be journaled; the log line stands for it
            self._audit.spawn("safe_mode_entered", "station", {"cause": cause, "message": message})
        self._changed()

    def unblock(self, cause: str, *, actor: str = "station", owner: bool = False) -> bool:
        """Leave safe mode for ``cause``; a latched cause leaves only when an owner clears it."""
        entry = self.causes.get(cause)
        if entry is None or (entry.latched and not owner):
            return False
        del self.causes[cause]
        log.info("safe_mode.left", cause=cause, actor=actor)
        self._audit.spawn("safe_mode_left", actor, {"cause": cause})
        self._changed()
        return True

    def _changed(self) -> None:
        self._status.blockers_changed(self.blockers)
        self._events.publish(StationChanged(self._clock.wall()))

    # ------------------------------------------------------------------ emergency stop

    async def emergency_stop(self, pressed: bool) -> None:
        """The emergency-stop input changed. Pressed: all relays off, all sessions stopped, latched."""
        self.stop_input_pressed = pressed
        self._bays.outputs_changed()  # relays off at once, installer tests included
        if not pressed:
            log.info("emergency_stop.released", note="latched until an owner clears it")
            self._events.publish(StationChanged(self._clock.wall()))
            return
        self.block("emergency_stop", "Emergency stop: the station is stopped.")
        for bay_id in list(self._bays):
            await self._runner().apply(
                bay_id, FaultRaised("emergency_stop"), actor="emergency_stop"
            )

    async def clear_emergency_stop(self, *, actor: str) -> Outcome:
        if self.stop_input_pressed:
            return Outcome(False, "still_pressed", "Release the emergency stop first.")
        if not self.unblock("emergency_stop", actor=actor, owner=True):
            return Outcome(False, "not_active", "No emergency stop to clear.")
        for bay_id, rt in self._bays.items():
            if rt.state.fault == "emergency_stop":
                await self._runner().apply(bay_id, FaultCleared(), actor=actor)
        return Outcome(True, "cleared", "Emergency stop cleared.")


__all__ = ["CAUSES", "Forcing", "SafeCause", "SafetySupervisor", "Transitions"]
