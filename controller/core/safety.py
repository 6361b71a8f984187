"""Safe mode: the station's visible state of "something is wrong, stay safe", with its causes.

Each cause (emergency stop, journal not writable, grid meter failed, ...) is
entered and left explicitly, and both are audited by the station. Some causes
refuse new sessions; latched ones (the emergency stop) stay until an owner
clears them, even after the input is released.
"""

from __future__ import annotations

from dataclasses import dataclass


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


class SafeMode:
    def __init__(self) -> None:
        self.causes: dict[str, SafeCause] = {}

    @property
    def active(self) -> bool:
        return bool(self.causes)

    @property
    def refusing(self) -> dict[str, str]:
        return {c.cause: c.message for c in self.causes.values() if c.refuse_sessions}

    def enter(self, cause: str, message: str, now: float) -> SafeCause | None:
        """Add ``cause``; returns it when new (so the caller audits once), else None."""
        if cause in self.causes:
            return None
        refuse, latched = CAUSES.get(cause, (True, False))
        entry = SafeCause(cause, message, now, refuse, latched)
        self.causes[cause] = entry
        return entry

    def leave(self, cause: str, *, owner: bool = False) -> SafeCause | None:
        """Remove ``cause``; a latched cause leaves only when an owner clears it."""
        entry = self.causes.get(cause)
        if entry is None or (entry.latched and not owner):
            return None
        del self.causes[cause]
        return entry

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
