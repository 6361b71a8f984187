"""Each connector's OCPP status, and the feed that announces every change of it.

A bay's status comes from its state (:func:`controller.core.bay.ocpp_status`),
with an error code and a short info when it is faulted; connector 0 is the
station: Faulted while safe mode refuses sessions, Unavailable when every bay
is, Available otherwise. :class:`StatusFeed` remembers what it announced and
publishes a :class:`~controller.core.events.StatusChanged` for each change —
the OCPP link's StatusNotifications come from these events, not from what the
UI shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.core.bay import BayState, Status, ocpp_status
from controller.core.bays import BayRuntime, Bays
from controller.core.events import EventBus, StatusChanged
from controller.ports import Clock

INFO_MAX = 50  # OCPP 1.6: StatusNotification.info is CiString50


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    status: str
    error_code: str
    info: str | None = None


def status_inputs(s: BayState) -> tuple[Status, str | None, bool, bool]:
    """What a bay's and the station's announced statuses depend on, of one bay's state."""
    return ocpp_status(s), s.fault, s.node_online, s.available


def bay_status(rt: BayRuntime) -> ConnectorStatus:
    s = rt.state
    status = ocpp_status(s)
    if status is Status.FAULTED:
        info = (s.fault or ("node offline" if not s.node_online else ""))[:INFO_MAX]
        return ConnectorStatus(status.value, "OtherError", info or None)
    return ConnectorStatus(status.value, "NoError")


def station_status(blockers: Mapping[str, str], bays: Bays) -> ConnectorStatus:
    if blockers:
        return ConnectorStatus("Faulted", "InternalError", next(iter(blockers))[:INFO_MAX])
    if bays and all(not rt.state.available for rt in bays.values()):
        return ConnectorStatus("Unavailable", "NoError")
    return ConnectorStatus("Available", "NoError")


class StatusFeed:
    def __init__(self, bays: Bays, events: EventBus, clock: Clock) -> None:
        self._bays = bays
        self._events = events
        self._clock = clock
        self._blockers: Mapping[str, str] = {}  # pushed by the safety supervisor
        self._last: dict[int, ConnectorStatus] = {}

    def current(self, connector: int) -> ConnectorStatus:
        """The status of ``connector`` as it is now (raises UnknownBay for an unknown one)."""
        if connector == 0:
            return station_status(self._blockers, self._bays)
        return bay_status(self._bays.by_connector(connector))

    def prime(self) -> None:
        """Take the statuses as they are (after a restore) without announcing them."""
        self._last = {0: self.current(0)}
        for rt in self._bays.values():
            self._last[rt.cfg.connector] = bay_status(rt)

    def bay_changed(self, rt: BayRuntime) -> None:
        self._announce(rt.cfg.connector, rt.cfg.id, bay_status(rt))
        self.station_changed()  # every bay unavailable makes the station so

    def blockers_changed(self, blockers: Mapping[str, str]) -> None:
        """Safe mode changed: these causes now refuse sessions (the station is Faulted)."""
        self._blockers = dict(blockers)
        self.station_changed()

    def station_changed(self) -> None:
        self._announce(0, None, station_status(self._blockers, self._bays))

    def _announce(self, connector: int, bay_id: str | None, now: ConnectorStatus) -> None:
        if self._last.get(connector) == now:
            return
        self._last[connector] = now
        self._events.publish(
            StatusChanged(
                connector, bay_id, now.status, now.error_code, now.info, self._clock.wall()
            )
        )


__all__ = ["ConnectorStatus", "StatusFeed", "bay_status", "station_status", "status_inputs"]
