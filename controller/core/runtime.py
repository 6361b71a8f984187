"""Run-time types of the station: bays at run time, outcomes of commands, the clock,
and the base its parts share (:class:`StationBase`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from controller.core import tokens
from controller.core.accounting import Tariff
from controller.core.auth import Authorizer
from controller.core.bay import (
    BayState,
    CloseSession,
    Effect,
    Event,
    OpenSession,
    Refused,
    Timers,
)
from controller.core.config import BayConfig, StationConfig
from controller.core.journal import Journal
from controller.ports import (
    BayNode,
    MeterReading,
    NodeHub,
    NodeTelemetry,
    Upstream,
)

if TYPE_CHECKING:
    from controller.core.backlog import Backlog
    from controller.core.journalguard import JournalGuard
    from controller.core.loadloop import LoadLoop
    from controller.core.services import Supervisor
    from controller.ops.looplag import LoopLagMonitor

from controller.core.outputs import TestOutput
from controller.core.plausibility import MeterGate
from controller.core.safety import SafeMode
from controller.core.taskrunner import TaskRunner

log = structlog.get_logger(__name__)


class UnknownBay(LookupError):
    pass


class UnknownSession(LookupError):
    pass


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(slots=True)
class BayRuntime:
    cfg: BayConfig
    state: BayState
    node: BayNode | None = None
    want_relay: bool = False
    want_locked: bool | None = None
    output_changed: asyncio.Event = field(default_factory=asyncio.Event)
    lock_changed: asyncio.Event = field(default_factory=asyncio.Event)
    reconciled: bool = True
    telemetry: NodeTelemetry | None = None
    firmware: str = ""
    checkpoint_at: float = 0.0
    last_ack_at: float | None = None
    last_output: tuple[bool, float] | None = None
    output_errors: int = 0
    load_setpoint_a: float = 0.0  # nothing until the load manager has decided
    tariff: Tariff | None = None  # the running session's tariff snapshot
    test_output: TestOutput | None = None  # an installer's test output on the idle bay


@dataclass(frozen=True, slots=True)
class MeterInput:
    role: str  # "grid", "pv" or "bay"
    bay_id: str | None
    reading: MeterReading


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a driver-facing command did: ``ok`` plus a message fit for the kiosk."""

    ok: bool
    code: str
    message: str
    session_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class JournalNonceStore:
    """Replay memory of signed tokens, in the journal (so a restart forgets nothing)."""

    def __init__(self, journal: Journal, clock: SystemClock) -> None:
        self._journal = journal
        self._clock = clock

    async def seen_or_add(self, nonce: str, expires_wall: float) -> bool:
        return await self._journal.nonce_seen_or_add(nonce, expires_wall, self._clock.wall())


_NO_KEYS = tokens.TokenKeys("-")


def _mask(token: str) -> str:
    return token if len(token) <= 4 else "…" + token[-4:]


def _precheck(s: BayState) -> Refused | None:
    """Refuse early (before asking the CSMS) what the bay would refuse anyway."""
    if s.session is not None:
        return Refused("bay_in_use", "This bay is in use.")
    if s.fault is not None or not s.node_online:
        return Refused("bay_faulted", "This bay is out of order.")
    if not s.available:
        return Refused("bay_unavailable", "This bay is not available.")
    return None


def _outcome(effects: list[Effect], ok_code: str = "ok") -> Outcome:
    for eff in effects:
        if isinstance(eff, Refused):
            return Outcome(False, eff.code, eff.message)
    for eff in effects:
        if isinstance(eff, OpenSession):
            return Outcome(True, "started", "Session started.", eff.session.session_id)
        if isinstance(eff, CloseSession):
            s = eff.session
            return Outcome(
                True,
                "stopped",
                "Session stopped.",
                s.session_id,
                {"energy_wh": s.energy_wh, "reason": eff.reason.value},
            )
    return Outcome(True, ok_code, "Done.")


class StationBase:
    """What the station's parts (core, commands, observer) share: state and the few cross calls.

    :class:`controller.core.station.Station` combines them; each part only uses what is declared here.
    """

    cfg: StationConfig
    journal: Journal
    hubs: dict[str, NodeHub]
    clock: SystemClock
    new_id: Callable[[], str]
    authorizer: Authorizer
    token_keys: tokens.TokenKeys | None
    timers: Timers
    bays: dict[str, BayRuntime]
    meters: dict[str, MeterInput]
    meter_gate: MeterGate
    load: LoadLoop | None
    load_changed: asyncio.Event
    upstream: Upstream | None
    loop_lag: LoopLagMonitor | None
    safe: SafeMode
    backlog: Backlog  # transitions that happened but wait for the journal
    guard: JournalGuard  # the journal's disk: free space, blocked state
    supervisor: Supervisor  # core and optional services
    stop_input_pressed: bool
    started_at: float
    dropped_updates: int
    clean_restart: bool
    exit_code: int
    stop_listeners: list[Callable[[], None]]
    _nonces: JournalNonceStore
    _focus: tuple[str, float] | None
    _stop_requested: asyncio.Event
    _started: asyncio.Event
    tasks: TaskRunner
    _listeners: set[asyncio.Queue[dict[str, Any]]]
    _lock: asyncio.Lock  # serializes transitions (and outbox writes ordered with them)

    async def apply(self, bay_id: str, event: Event, *, actor: str | None = None) -> list[Effect]:
        raise NotImplementedError

    def bay(self, bay_id: str) -> BayRuntime:
        raise NotImplementedError

    async def _audit(self, kind: str, actor: str, detail: dict[str, Any]) -> None:
        raise NotImplementedError

    def _publish(self, msg: dict[str, Any]) -> None:
        raise NotImplementedError

    def _block(self, cause: str, message: str) -> None:
        raise NotImplementedError

    def _unblock(self, cause: str, *, actor: str = "station", owner: bool = False) -> bool:
        raise NotImplementedError

    @property
    def blockers(self) -> dict[str, str]:
        raise NotImplementedError

    def bay_snapshot(self, rt: BayRuntime) -> dict[str, Any]:
        raise NotImplementedError

    def station_snapshot(self) -> dict[str, Any]:
        raise NotImplementedError
