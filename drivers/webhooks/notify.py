"""What is worth a notification, derived from the station's typed events.

Kinds: ``session_completed``, ``session_interrupted``, ``fault``, ``node_offline``,
``emergency_stop``, ``safe_mode``, ``low_disk``. Each :class:`Notification`
carries a sentence for the owner and the facts behind it. Station-wide
conditions (e-stop, safe mode, low disk) are reported when they begin, not
on every station change: :class:`Notifier` remembers what it reported.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controller.core.events import Event, SessionClosed, StationChanged, StatusChanged

if TYPE_CHECKING:
    from controller.core.station import Station

KINDS = (
    "session_completed",
    "session_interrupted",
    "fault",
    "node_offline",
    "emergency_stop",
    "safe_mode",
    "low_disk",
)
EVENT_KINDS = (SessionClosed, StatusChanged, StationChanged)

# A session that ended by someone's choice or the vehicle's; anything else was interrupted.
_COMPLETED = frozenset(
    {"Local", "Remote", "EVDisconnected", "QuotaReached", "Owner", "DeAuthorized"}
)


@dataclass(frozen=True, slots=True)
class Notification:
    kind: str
    message: str
    at: float
    station_id: str
    bay_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "message": self.message,
            "at": self.at,
            "station": self.station_id,
            "bay": self.bay_id,
            **({"data": self.data} if self.data else {}),
        }


class Notifier:
    def __init__(self, station: Station) -> None:
        self._station = station
        self._estop = False
        self._causes: frozenset[str] = frozenset()
        self._low_disk = False
        self._offline: set[str] = set()

    def prime(self) -> None:
        """Remember the station as it is now: what holds at start is not news."""
        st = self._station
        self._estop = st.safety.stop_input_pressed
        self._causes = frozenset(st.safety.causes) - {"emergency_stop"}
        self._low_disk = st.guard.warning() is not None

    def notifications(self, event: Event) -> list[Notification]:
        sid = self._station.cfg.station.id
        match event:
            case SessionClosed(bay_id=bay, session_id=sess, reason=reason, at=at):
                if reason in _COMPLETED:
                    return [
                        Notification(
                            "session_completed",
                            f"The session at {bay} has ended.",
                            at,
                            sid,
                            bay,
                            {"session_id": sess, "reason": reason},
                        )
                    ]
                return [
                    Notification(
                        "session_interrupted",
                        f"The session at {bay} was interrupted ({reason}).",
                        at,
                        sid,
                        bay,
                        {"session_id": sess, "reason": reason},
                    )
                ]
            case StatusChanged(bay_id=bay, status=status, info=info, at=at) if bay is not None:
                if status != "Faulted":
                    self._offline.discard(bay)
                    return []
                if info == "emergency_stop":
                    return []  # reported once for the station, not once per bay
                if info == "node offline":
                    if bay in self._offline:
                        return []
                    self._offline.add(bay)
                    return [
                        Notification(
                            "node_offline",
                            f"The charging point {bay} does not answer.",
                            at,
                            sid,
                            bay,
                        )
                    ]
                return [
                    Notification(
                        "fault",
                        f"The charging point {bay} reports a fault: {info or 'unknown'}.",
                        at,
                        sid,
                        bay,
                        {"info": info},
                    )
                ]
            case StationChanged(at=at):
                return self._station_changed(sid, at)
        return []

    def _station_changed(self, sid: str, at: float) -> list[Notification]:
        st = self._station
        out: list[Notification] = []
        estop = st.safety.stop_input_pressed
        if estop and not self._estop:
            out.append(
                Notification(
                    "emergency_stop",
                    "The emergency stop was pressed: every charging point is off.",
                    at,
                    sid,
                )
            )
        self._estop = estop
        # The emergency stop is its own notification, not a safe mode one as well.
        causes = frozenset(st.safety.causes) - {"emergency_stop"}
        new = sorted(causes - self._causes)
        if new:
            blockers = st.safety.blockers
            text = " ".join(blockers.get(c, c) for c in new)
            out.append(
                Notification(
                    "safe_mode",
                    f"The station is in safe mode. {text}".strip(),
                    at,
                    sid,
                    data={"causes": new},
                )
            )
        self._causes = causes
        warning = st.guard.warning()
        if warning is not None and not self._low_disk:
            out.append(Notification("low_disk", warning, at, sid))
        self._low_disk = warning is not None
        return out
