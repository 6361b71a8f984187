"""What a command did, as the kiosk, the owner UI and the central system are told."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class UnknownSession(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a driver-facing command did: ``ok`` plus a message fit for the kiosk."""

    ok: bool
    code: str
    message: str
    session_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


__all__ = ["Outcome", "UnknownSession"]
