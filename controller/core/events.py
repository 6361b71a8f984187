"""The station's typed event bus: what happened, for whoever shows or reports it.

One frozen dataclass per kind of event. A subscriber says whether it may lose
events: a *lossy* one (a page in a browser) gets a bounded queue that drops
the oldest event when it is full — the next snapshot makes up for it; a
*lossless* one (the OCPP link's status feed) gets a queue that never drops,
so a StatusNotification cannot be lost to a burst of live figures. A lossless
subscriber names the kinds it wants, so what it ignores cannot pile up.

The journal is not a subscriber: every transition is committed by the bay
runner *before* its events are published (see :mod:`controller.core.runner`).
Publishing never blocks and never awaits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

LOSSY_QUEUE = 256


@dataclass(frozen=True, slots=True)
class BayChanged:
    """A bay changed (state, session figures, ...): ``snapshot`` is what it shows now."""

    bay_id: str
    snapshot: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """A connector's OCPP status changed (connector 0: the station as a whole)."""

    connector: int
    bay_id: str | None
    status: str  # OCPP 1.6 ChargePointStatus
    error_code: str  # OCPP 1.6 ChargePointErrorCode
    info: str | None
    at: float  # wall clock


@dataclass(frozen=True, slots=True)
class SessionClosed:
    bay_id: str
    connector: int
    session_id: str
    reason: str
    at: float  # wall clock


@dataclass(frozen=True, slots=True)
class StationChanged:
    """Safe mode, the emergency stop or the journal's storage changed."""

    at: float  # wall clock


@dataclass(frozen=True, slots=True)
class BayNotice:
    """A sentence for the people at a bay (the bay machine's ``Notice``)."""

    bay_id: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What became of a code a camera saw."""

    bay_id: str | None
    ok: bool
    code: str
    message: str
    session_id: str | None = None
    """The session the code started or stopped (a stop's receipt is shown for it)."""


@dataclass(frozen=True, slots=True)
class BookingsChanged:
    pass


@dataclass(frozen=True, slots=True)
class SettingsChanged:
    section: str
    values: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class TestEnded:
    """The station ended an installer's test output before its time (or at it)."""

    __test__ = False  # not a pytest class

    bay_id: str
    reason: str
    message: str


Event = (
    BayChanged
    | StatusChanged
    | SessionClosed
    | StationChanged
    | BayNotice
    | ScanResult
    | BookingsChanged
    | SettingsChanged
    | TestEnded
)


class Subscription:
    """One subscriber's queue. Lossy: bounded, the oldest event goes when full."""

    def __init__(self, *, lossy: bool, kinds: tuple[type[Event], ...] | None, maxsize: int) -> None:
        self.lossy = lossy
        self.kinds = kinds
        self.dropped = 0  # events a lossy subscriber lost to a full queue
        self._items: collections.deque[Event] = collections.deque()
        self._maxsize = maxsize
        self._ready = asyncio.Event()

    def wants(self, kind: type[Event]) -> bool:
        return self.kinds is None or kind in self.kinds

    def put(self, event: Event) -> None:
        if self.lossy and len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(event)
        self._ready.set()

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def get_nowait(self) -> Event:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if not self._items:
            self._ready.clear()
        return item

    async def get(self) -> Event:
        while not self._items:
            await self._ready.wait()
        return self.get_nowait()


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []

    def subscribe(
        self,
        *,
        lossy: bool,
        kinds: tuple[type[Event], ...] | None = None,
        maxsize: int = LOSSY_QUEUE,
    ) -> Subscription:
        """A new subscription; ``lossy=False`` never drops, so it must name its ``kinds``."""
        if not lossy and not kinds:
            raise ValueError("a lossless subscriber names the kinds of events it takes")
        sub = Subscription(lossy=lossy, kinds=kinds, maxsize=maxsize)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)

    @contextlib.asynccontextmanager
    async def subscription(
        self, *, lossy: bool, kinds: tuple[type[Event], ...] | None = None
    ) -> AsyncIterator[Subscription]:
        sub = self.subscribe(lossy=lossy, kinds=kinds)
        try:
            yield sub
        finally:
            self.unsubscribe(sub)

    def wants(self, kind: type[Event]) -> bool:
        """Whether anyone listens for ``kind`` (so a costly event need not be built)."""
        return any(s.wants(kind) for s in self._subs)

    def publish(self, event: Event) -> None:
        kind = type(event)
        for sub in list(self._subs):
            if sub.wants(kind):
                sub.put(event)


__all__ = [
    "LOSSY_QUEUE",
    "BayChanged",
    "BayNotice",
    "BookingsChanged",
    "Event",
    "EventBus",
    "ScanResult",
    "SessionClosed",
    "SettingsChanged",
    "StationChanged",
    "StatusChanged",
    "Subscription",
    "TestEnded",
]
