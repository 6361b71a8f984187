"""The bay runner: the one way a bay changes, and the loops that carry its outputs out.

:meth:`BayRunner.apply` is every change of a bay: the pure
:func:`~controller.core.bay.transition`, then one journal transaction (through
the backlog), then the effects, then the events. A command is acknowledged
only once its transition is durable. When the journal cannot write, a start or
a change is refused and changes nothing; a stop, a fault or a fact reported by
a node still happens (the relay goes off at once) and its commit waits, in
order, in the :class:`~controller.core.backlog.Backlog` until the journal can
write again.

Per bay, the output loop keeps the node's setpoint lease alive and equal to
what :func:`controller.core.outputs.decide` says (with what the safety
supervisor forces), and a locker's lock loop keeps its lock where the bay
wants it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from controller.core.audit import AuditLog
from controller.core.backlog import Backlog
from controller.core.bay import (
    AvailabilityChanged,
    CloseSession,
    Effect,
    Event,
    FaultCleared,
    FaultRaised,
    HoldCancelled,
    HoldPlaced,
    ModeChanged,
    Notice,
    OpenSession,
    Refused,
    SetLock,
    SetpointChanged,
    SetRelay,
    Tick,
    Timers,
    TokenPresented,
    tick_due,
    transition,
)
from controller.core.bays import BayRuntime, Bays
from controller.core.config import StationConfig
from controller.core.directcaps import direct_setpoint_a
from controller.core.events import BayChanged, BayNotice, EventBus, SessionClosed, TestEnded
from controller.core.journal import Commit, EventRow, JournalError, OutboxRow
from controller.core.journalguard import NOT_RECORDED, JournalGuard, not_recorded_message
from controller.core.outputs import TEST_END_MESSAGES, OutputInputs, TestEnd, decide
from controller.core.persist import build_commit, event_name
from controller.core.safety import SafetySupervisor
from controller.core.snapshots import Snapshots
from controller.core.status import StatusFeed, status_inputs
from controller.ports import Clock, CommandBudget, DriverError

log = structlog.get_logger(__name__)

# Commands that may simply be refused when they cannot be recorded (nothing happens then).
# Stops, faults and what nodes report happen anyway: their commits wait in the backlog.
_REFUSABLE = (
    TokenPresented,
    HoldPlaced,
    HoldCancelled,
    AvailabilityChanged,
    ModeChanged,
    FaultCleared,
)

# connector (0 = the station) -> amps cap from the central system's charging profiles
CapsProvider = Callable[[float], dict[int, float | None]]


class LoadProgress(Protocol):
    """The load manager as the output loop sees it: has it decided anything yet?"""

    @property
    def steps(self) -> int: ...


class BayRunner:
    def __init__(
        self,
        cfg: StationConfig,
        bays: Bays,
        clock: Clock,
        *,
        backlog: Backlog,
        guard: JournalGuard,
        safety: SafetySupervisor,
        events: EventBus,
        status: StatusFeed,
        snapshots: Snapshots,
        audit: AuditLog,
    ) -> None:
        self._cfg = cfg
        self._bays = bays
        self._clock = clock
        self._backlog = backlog
        self._guard = guard
        self._safety = safety
        self._events = events
        self._status = status
        self._snapshots = snapshots
        self._audit = audit
        t = cfg.timers
        self.timers = Timers(
            connection_timeout_s=t.connection_timeout_s,
            exit_grace_s=t.exit_grace_s,
            suspend_after_s=t.suspend_after_s,
            max_interruption_s=t.max_interruption_s,
        )
        # Without a load manager ([site] absent) a bay gets its configured maximum,
        # capped by the central system's profiles (``caps``).
        self.load: LoadProgress | None = None
        self.caps: CapsProvider | None = None
        self._lock = asyncio.Lock()  # serializes transitions (and outbox writes ordered with them)

    # ------------------------------------------------------------------ transitions

    async def apply(self, bay_id: str, event: Event, *, actor: str | None = None) -> list[Effect]:
        """The one way a bay changes: transition, journal, then effects and events."""
        rt = self._bays.require(bay_id)
        async with self._lock:
            now = self._clock.wall()
            old = rt.state
            new, effects = transition(old, event, now, self.timers)
            # A session's progress between transitions is checkpointed once a minute for all
            # bays together (controller.core.samples), not here per frame.
            commit = build_commit(
                bay_id=bay_id,
                connector=rt.cfg.connector,
                event=event,
                new=new,
                effects=effects,
                now=now,
                tariff=(rt.tariff or self._cfg.tariff)
                if old.session is not None
                else self._cfg.tariff,
                checkpoint=False,
                actor=actor,
            )
            recorded = True
            if commit is not None:
                must = _happens_anyway(event, effects)
                recorded, effects = await self._record(rt, event, effects, commit, must=must)
                if not recorded and not must:
                    return effects  # refused: nothing happened
            rt.state = new
        self._carry_out(rt, effects, recorded=recorded)
        changed = old != new
        # Most frames move only the meter: the connector statuses need no second look then.
        if changed and status_inputs(old) != status_inputs(new):
            self._status.bay_changed(rt)
        if (changed or effects) and self._events.wants(BayChanged):
            self._events.publish(BayChanged(bay_id, self._snapshots.bay(rt)))
        return effects

    async def _record(
        self,
        rt: BayRuntime,
        event: Event,
        effects: list[Effect],
        commit: Commit,
        *,
        must: bool,
    ) -> tuple[bool, list[Effect]]:
        """Write one transition; (recorded, the effects that may go out now).

        ``must``: it happens even when it cannot be recorded now (it waits in the backlog).
        """
        recorded = await self._backlog.write(commit, keep=must)
        if not recorded and must and await self._guard.release_reserve():
            recorded = await self._backlog.flush()  # in the space the reserve freed
        if recorded:
            self._guard.wrote()
            return True, effects
        self._guard.failed()
        message = not_recorded_message(event, effects)
        if not must:
            log.warning("journal.refused", bay_id=rt.cfg.id, transition=event_name(event))
            return False, [Refused(NOT_RECORDED, message)]
        # The first of an episode is an error; what follows it is expected then.
        (log.error if len(self._backlog) == 1 else log.info)(
            "journal.transition_waiting",
            bay_id=rt.cfg.id,
            transition=event_name(event),
            waiting=len(self._backlog),
        )
        # Nothing physical may happen unrecorded: only the safe half goes out.
        return False, [
            Refused(NOT_RECORDED, message),
            *(e for e in effects if not (isinstance(e, SetRelay) and e.on)),
        ]

    def _carry_out(self, rt: BayRuntime, effects: list[Effect], *, recorded: bool = True) -> None:
        for eff in effects:
            match eff:
                case SetRelay(on=on):
                    rt.want_relay = on
                    rt.output_changed.set()
                case SetLock(locked=locked):
                    rt.want_locked = locked
                    rt.lock_changed.set()
                case OpenSession(session=s):
                    rt.tariff = self._cfg.tariff  # the snapshot the session is billed with
                    log.info(
                        "session.opened",
                        bay_id=rt.cfg.id,
                        session_id=s.session_id,
                        auth=s.auth_source,
                    )
                case CloseSession(session=s, reason=reason):
                    log.info(
                        "session.closed",
                        bay_id=rt.cfg.id,
                        session_id=s.session_id,
                        reason=reason.value,
                        energy_wh=s.energy_wh,
                        recorded=recorded,
                    )
                    self._events.publish(
                        SessionClosed(
                            rt.cfg.id,
                            rt.cfg.connector,
                            s.session_id,
                            reason.value,
                            self._clock.wall(),
                        )
                    )
                case Refused(code=code, message=msg):
                    log.info("bay.refused", bay_id=rt.cfg.id, code=code, message=msg)
                case Notice(code=code, message=msg):
                    log.warning("bay.notice", bay_id=rt.cfg.id, code=code, message=msg)
                    self._events.publish(BayNotice(rt.cfg.id, code, msg))
                case _:
                    pass

    async def tick(self) -> None:
        """Every bay's timers (connection timeout, exit grace, holds, ...) move on.

        Only bays with a timer run out take the transition (``tick_due``): a tick that is not
        due changes nothing, and taking it would cost a locked transition per bay a second.
        """
        now = self._clock.wall()
        for bay_id, rt in list(self._bays.items()):
            if not tick_due(rt.state, now, self.timers):
                continue
            try:
                await self.apply(bay_id, Tick())
            except Exception:
                log.exception("station.tick_failed", bay_id=bay_id)

    async def enqueue_for_session(
        self, bay_id: str, action: str, payload: dict[str, Any]
    ) -> str | None:
        """Journal an outbox message for the bay's open session, ordered with its start and stop.

        Returns the session id, or None when no session is open (nothing written).
        """
        rt = self._bays.require(bay_id)
        async with self._lock:
            sess = rt.state.session
            if sess is None:
                return None
            now = self._clock.wall()
            commit = Commit(
                events=[EventRow(action.lower(), now, bay_id, sess.session_id, {})],
                outbox=[OutboxRow(action, payload, sess.session_id)],
            )
            # Behind whatever waits for the journal, so the outbox keeps the order of events.
            if not await self._backlog.write(commit, keep=False):
                self._guard.failed()
                raise JournalError("the journal cannot be written")
            return sess.session_id

    # ------------------------------------------------------------------ outputs

    def setpoint(self, rt: BayRuntime) -> float:
        if self.load is None:
            # No load manager: the bay's maximum, capped by the central system's profiles.
            caps = self.caps(self._clock.wall()) if self.caps is not None else {}
            return direct_setpoint_a(
                rt.cfg.max_current_a,
                rt.cfg.min_current_a,
                connector_cap_a=caps.get(rt.cfg.connector),
                station_cap_a=caps.get(0),
                bays=len(self._bays),
            )
        return rt.load_setpoint_a

    def set_load_setpoint(self, bay_id: str, amps: float) -> None:
        """The load manager's setpoint for a bay; sent at once when it changes."""
        rt = self._bays.require(bay_id)
        if rt.load_setpoint_a != amps:
            rt.load_setpoint_a = amps
            rt.output_changed.set()

    async def output_loop(self, rt: BayRuntime) -> None:
        """Keep the node's output lease alive and equal to what ``decide`` says.

        A change goes out at once; otherwise the lease is renewed after ``renew_after_s``.
        """
        lease = self._cfg.timers.lease_s
        node: object = None
        budget: float | None = None
        while True:
            if rt.node is not node:  # its command budget, looked up once per node
                node = rt.node
                budget = rt.node.command_budget_s if isinstance(rt.node, CommandBudget) else None
            wait = renew_after_s(lease, budget, failed=rt.output_errors > 0)
            if rt.test_output is not None:
                wait = min(wait, lease / 3)  # an installer's test ends on time, not a renewal late
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await rt.output_changed.wait()
            rt.output_changed.clear()
            s = rt.state
            forcing = self._safety.forcing()
            out = decide(
                OutputInputs(
                    now=self._clock.monotonic(),
                    max_current_a=rt.cfg.max_current_a,
                    want_relay=rt.want_relay,
                    session=s.session is not None,
                    setpoint_a=self.setpoint(rt),
                    load_decided=self.load is None or self.load.steps > 0,
                    fault=s.fault,
                    node_online=s.node_online,
                    estop_pressed=forcing.estop_pressed,
                    safe_causes=forcing.causes,
                    test=rt.test_output,
                )
            )
            if out.test_end is not None and rt.test_output is not None:
                rt.test_output = None
                await self._test_ended(rt, out.test_end)
            if rt.node is None or not s.node_online or not rt.reconciled or not out.send:
                continue
            relay, amps = out.relay_on, out.current_a
            try:
                await rt.node.set_output(relay_on=relay, current_a=amps, lease_s=lease)
            except DriverError as err:
                rt.output_errors += 1
                if rt.output_errors == 1:
                    log.warning("node.command_failed", bay_id=rt.cfg.id, error=str(err))
                continue
            if rt.output_errors:
                log.info("node.command_recovered", bay_id=rt.cfg.id)
            rt.output_errors = 0
            rt.last_ack_at = self._clock.monotonic()
            if rt.last_output != (relay, amps):
                rt.last_output = (relay, amps)
                if rt.state.setpoint_a != amps:
                    await self.apply(rt.cfg.id, SetpointChanged(amps))

    async def _test_ended(self, rt: BayRuntime, why: TestEnd) -> None:
        """An installer test output ended by the station: audited (unless it ran out) and announced."""
        message = TEST_END_MESSAGES[why]
        if why is not TestEnd.EXPIRED:
            log.warning("installer.test_ended", bay_id=rt.cfg.id, reason=why.value)
            await self._audit.record(
                "installer_test_ended", "station", {"bay_id": rt.cfg.id, "reason": why.value}
            )
        self._events.publish(TestEnded(rt.cfg.id, why.value, message))

    async def lock_loop(self, rt: BayRuntime) -> None:
        failures = 0
        while True:
            await rt.lock_changed.wait()
            rt.lock_changed.clear()
            want = rt.want_locked
            if want is None or rt.node is None or not rt.state.node_online:
                continue
            try:
                await rt.node.set_lock(locked=want)
                failures = 0
            except DriverError as err:
                failures += 1
                log.warning("lock.command_failed", bay_id=rt.cfg.id, error=str(err), n=failures)
                if failures >= 3:
                    await self.apply(rt.cfg.id, FaultRaised("lock_fault", stop=False))
                    failures = 0
                else:
                    rt.lock_changed.set()


RENEW_MARGIN_S = 0.3
"""What a renewal keeps in hand at worst (transit, the loop's own lag)."""


def renew_after_s(lease_s: float, budget_s: float | None, *, failed: bool) -> float:
    """How long after its last attempt a node's unchanged output lease is renewed (seconds).

    A renewal is an acknowledged command on the node's bus, so as late as is still safe:
    one renewal that fails after the node's whole command budget (``budget_s``, every
    retry's timeout), then one more attempt a sixth of the lease later that takes as long,
    still land inside the lease with ``RENEW_MARGIN_S`` to spare. Never sooner than a third
    of the lease, which is also the interval when the budget is not known. After a failed
    attempt, the next comes a sixth of the lease later.
    """
    if failed:
        return lease_s / 6
    if budget_s is None:
        return lease_s / 3
    return max(lease_s / 3, lease_s - 2 * budget_s - lease_s / 6 - RENEW_MARGIN_S)


def _happens_anyway(event: Event, effects: list[Effect]) -> bool:
    """Whether a transition takes place even when the journal cannot record it now.

    A start (or any new hold or change) is refused instead. A stop, a fault, a timer
    or what a node reports has happened, or must, for safety: it waits in the backlog.
    """
    if any(isinstance(e, OpenSession) for e in effects):
        return False
    if any(isinstance(e, CloseSession) for e in effects):
        return True
    return not isinstance(event, _REFUSABLE)


__all__ = ["BayRunner", "CapsProvider", "LoadProgress"]
