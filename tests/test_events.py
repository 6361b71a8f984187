"""The typed event bus: who may lose events, and the statuses the central system is told."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.core.bay import StopReason
from controller.core.events import (
    BayChanged,
    BookingsChanged,
    EventBus,
    SessionClosed,
    StatusChanged,
)
from tests.test_ocpp_support import CP, rig

pytestmark = pytest.mark.timeout(60)


def test_a_lossy_subscriber_keeps_the_newest_and_counts_what_it_lost() -> None:
    bus = EventBus()
    ui = bus.subscribe(lossy=True, maxsize=3)
    for i in range(10):
        bus.publish(BayChanged(f"bay{i}"))
    got = [ui.get_nowait() for _ in range(ui.qsize())]
    assert [e.bay_id for e in got if isinstance(e, BayChanged)] == ["bay7", "bay8", "bay9"]
    assert ui.dropped == 7


def test_a_lossless_subscriber_gets_every_event_of_its_kinds_in_order() -> None:
    bus = EventBus()
    ocpp = bus.subscribe(lossy=False, kinds=(StatusChanged,))
    bus.subscribe(lossy=True, maxsize=1)  # a slow page beside it changes nothing
    for i in range(5000):
        bus.publish(BayChanged("bay2"))  # not its kind: never queued for it
        bus.publish(
            StatusChanged(
                1, "bay1", "Charging" if i % 2 else "SuspendedEV", "NoError", None, float(i)
            )
        )
    got = [ocpp.get_nowait() for _ in range(ocpp.qsize())]
    assert [e.at for e in got if isinstance(e, StatusChanged)] == [float(i) for i in range(5000)]
    assert ocpp.dropped == 0


def test_a_lossless_subscriber_must_name_its_kinds() -> None:
    with pytest.raises(ValueError, match="names the kinds"):
        EventBus().subscribe(lossy=False)
    assert not EventBus().wants(BookingsChanged)


async def test_each_status_change_is_one_typed_event_and_a_stop_closes_the_session(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, bays=2) as r:
        await r.online()  # the CSMS authorizes the card
        feed = r.station.events.subscribe(lossy=False, kinds=(StatusChanged, SessionClosed))
        sid = await r.start_session(1, "T1")
        assert (await r.station.commands.stop_session(sid, StopReason.LOCAL)).ok
        await r.station.safety.emergency_stop(True)
        events = [feed.get_nowait() for _ in range(feed.qsize())]
    statuses = [
        (e.connector, e.status, e.error_code, e.info)
        for e in events
        if isinstance(e, StatusChanged)
    ]
    assert statuses[:2] == [(1, "Preparing", "NoError", None), (1, "Available", "NoError", None)]
    # The emergency stop: the station first (it refuses sessions), then each bay.
    assert (0, "Faulted", "InternalError", "emergency_stop") in statuses
    assert (1, "Faulted", "OtherError", "emergency_stop") in statuses
    assert (2, "Faulted", "OtherError", "emergency_stop") in statuses
    closed = [e for e in events if isinstance(e, SessionClosed)]
    assert [(c.connector, c.session_id, c.reason) for c in closed] == [(1, sid, "Local")]


async def test_a_burst_of_live_figures_never_costs_a_status_notification(tmp_path: Path) -> None:
    """A page may lose live figures; the central system may not lose a status. Here a burst
    of bay figures (far more than a page's queue holds) follows the last change of a
    connector's status before the OCPP link gets to run: the CSMS still hears it."""
    async with rig(tmp_path, bays=2) as r:
        await r.online()
        await r.sim.wait_for(lambda: r.sim.statuses.get(CP, {}).get(1) == "Available")
        busy = r.station.snapshots.bay(r.bay(2))
        # Connector 1 goes Unavailable, and nothing about it changes afterwards.
        assert (await r.station.commands.set_availability("bay1", False)).ok
        for _ in range(2000):
            r.station.events.publish(BayChanged("bay2", busy))
        await r.sim.wait_for(lambda: r.sim.statuses.get(CP, {}).get(1) == "Unavailable", 5)
