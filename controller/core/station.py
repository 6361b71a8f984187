"""The station supervisor: owns the bays at run time and everything that drives them.

One TaskGroup runs the core — the node hubs, the update consumer, the timer
tick, one output loop per bay (setpoint leases renewed while healthy), the
sample flusher, the journal guard, the load manager — and, each under the
supervisor of :mod:`controller.core.services`, the optional services (HTTP UI,
OCPP, meters, camera, ...). Only a failure of the core stops the station.

Every change of a bay goes through :meth:`Station.apply`: the pure
transition, then one journal transaction, then the effects. A command is
acknowledged only once its transition is durable. When the journal cannot
write, a start or a change is refused and changes nothing; a stop, a fault or
a fact reported by a node still happens (the relay goes off at once) and its
commit waits, in order, in the :class:`~controller.core.backlog.Backlog` until the
journal can write again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog

from controller.core import tokens
from controller.core.accounting import Tariff
from controller.core.auth import Authorizer
from controller.core.backlog import Backlog
from controller.core.bay import (
    AvailabilityChanged,
    BayKind,
    BayState,
    CloseSession,
    DoorChanged,
    DoorClaimed,
    Effect,
    Event,
    FaultCleared,
    FaultRaised,
    HoldCancelled,
    HoldPlaced,
    InterruptionEnded,
    LockChanged,
    LockClaimed,
    ModeChanged,
    NodeOnline,
    Notice,
    OpenSession,
    ReadingRejected,
    Reconcile,
    Refused,
    SetLock,
    SetpointChanged,
    SetRelay,
    Telemetry,
    Tick,
    Timers,
    TokenPresented,
    UpdateSession,
    transition,
)
from controller.core.config import BayConfig, StationConfig
from controller.core.energy_gate import bay_max_power_w
from controller.core.journal import Journal, JournalError
from controller.core.journalguard import (
    NOT_RECORDED,
    JournalGuard,
    not_recorded_message,
)
from controller.core.outputs import TEST_END_MESSAGES, OutputInputs, TestEnd, decide
from controller.core.persist import build_commit, event_name, state_from_dict
from controller.core.plausibility import MeterGate
from controller.core.safety import SafeMode
from controller.core.services import Service, ServiceSpec, Supervisor
from controller.core.taskrunner import TaskRunner
from controller.ports import (
    ConflictReason,
    DriverError,
    NodeConflict,
    NodeEvent,
    NodeEventKind,
    NodeHello,
    NodeHub,
    NodeLink,
    NodeTelemetry,
    NodeUpdate,
    Upstream,
)

if TYPE_CHECKING:
    from controller.core.loadloop import LoadLoop
    from controller.ops.looplag import LoopLagMonitor

from controller.core.commands import StationCommands
from controller.core.observe import StationObserver
from controller.core.runtime import (
    BayRuntime,
    JournalNonceStore,
    MeterInput,
    Outcome,
    SystemClock,
    UnknownBay,
    UnknownSession,
)

log = structlog.get_logger(__name__)

CHECKPOINT_S = 30.0
EXIT_RESTART = 75
SAMPLE_FLUSH_S = 2.0
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


class _StopStation(Exception):
    pass


class Station(StationCommands, StationObserver):
    def __init__(
        self,
        cfg: StationConfig,
        journal: Journal,
        *,
        hubs: dict[str, NodeHub] | None = None,
        clock: SystemClock | None = None,
        new_id: Callable[[], str] | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.cfg = cfg
        self.journal = journal
        self.hubs = hubs or {}
        self.clock = clock or SystemClock()
        self.new_id = new_id or (lambda: uuid.uuid4().hex[:16])
        self.authorizer = authorizer or Authorizer()
        self.token_keys: tokens.TokenKeys | None = None
        self._nonces = JournalNonceStore(journal, self.clock)
        self._focus: tuple[str, float] | None = None
        self.load_changed = asyncio.Event()  # something the load manager reads has changed
        self.meters: dict[str, MeterInput] = {}
        self.meter_gate = MeterGate()  # plausibility of every meter reading
        t = cfg.timers
        self.timers = Timers(
            connection_timeout_s=t.connection_timeout_s,
            exit_grace_s=t.exit_grace_s,
            suspend_after_s=t.suspend_after_s,
            max_interruption_s=t.max_interruption_s,
        )
        self.bays: dict[str, BayRuntime] = {}
        self._by_node: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._updates: asyncio.Queue[NodeUpdate] = asyncio.Queue(maxsize=10_000)
        self._samples: list[tuple[Any, ...]] = []
        self._listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self._services: list[ServiceSpec] = []
        self.supervisor = Supervisor(on_down=self._service_down, on_up=self._service_up)
        self.backlog = Backlog(journal)
        self.guard = JournalGuard(self, cfg.journal, self.backlog)
        self.samples_skipped = 0  # meter samples not written (journal blocked or space short)
        self._started = asyncio.Event()
        # Without a load manager ([site] absent) a bay gets its configured maximum.
        self.load: LoadLoop | None = None
        self.upstream: Upstream | None = None  # the central system, when one is configured
        self.loop_lag: LoopLagMonitor | None = None  # set by controller.ops.looplag.attach
        self.safe = SafeMode()
        self.stop_input_pressed = False
        self.started_at = time.monotonic()
        self.dropped_updates = 0
        # (bay id, verdict) -> node readings rejected as implausible, for the metrics
        self.rejected_readings: dict[tuple[str, str], int] = {}
        self.clean_restart = False
        self.exit_code = 0
        self._stop_requested = asyncio.Event()
        self.stop_listeners: list[Callable[[], None]] = []
        self.tasks = TaskRunner()  # work started by callbacks and commands, in its TaskGroup

    # ------------------------------------------------------------------ setup

    def add_service(
        self, name: str, run: Service, *, core: bool = False, refuse_while_down: str | None = None
    ) -> None:
        """Run ``run()`` inside the station's TaskGroup (added before :meth:`run`).

        Optional by default: supervised and restarted when it fails (see
        :mod:`controller.core.services`). ``core=True`` only for parts the station cannot
        run without (the load manager): their failure stops the station.
        ``refuse_while_down`` is a sentence: while the service is down the station is
        in safe mode with it (see :mod:`controller.core.services`).
        """
        self._services.append(ServiceSpec(name, run, core, refuse_while_down))

    def _service_down(self, spec: ServiceSpec) -> None:
        if spec.refuse_while_down:
            self._block(f"service:{spec.name}", spec.refuse_while_down)

    def _service_up(self, spec: ServiceSpec) -> None:
        if spec.refuse_while_down:
            self._unblock(f"service:{spec.name}")

    async def restore(self) -> None:
        """Rebuild the bays from the journal; open sessions wait for their node to reconcile.

        A session open at the restart is suspended by the outage since the station was last
        seen alive; its node's first report decides whether it continues (see ``Reconcile``).
        """
        saved = await self.journal.bay_states()
        open_sessions = {s["bay_id"]: s for s in await self.journal.open_sessions()}
        self.clean_restart = bool(await self.journal.kv_get("clean_shutdown", False))
        try:
            await self.journal.kv_set("clean_shutdown", False)
        except JournalError:
            # A full disk at start: run (blocked) rather than not at all; the guard retries.
            self.guard.failed()
        for bcfg in self.cfg.bays:
            kind = BayKind(bcfg.kind)
            if bcfg.id in saved:
                state = state_from_dict(saved[bcfg.id])
                if state.kind is not kind:
                    log.warning("bay.kind_changed", bay_id=bcfg.id)
                    state = BayState(bcfg.id, kind)
            else:
                state = BayState(bcfg.id, kind)
            state = replace(state, max_power_w=bay_max_power_w(bcfg.max_current_a, bcfg.phases))
            rt = BayRuntime(cfg=bcfg, state=state)
            row = open_sessions.pop(bcfg.id, None)
            if row is not None:
                with contextlib.suppress(ValueError, TypeError):
                    rt.tariff = Tariff.model_validate(json.loads(row["tariff"]))
            if state.session is not None or row is not None:
                rt.reconciled = False
                rt.want_relay = True
                if state.session is None or (row and row["id"] != state.session.session_id):
                    log.error("recovery.mismatch", bay_id=bcfg.id, session=row and row["id"])
            if state.session is not None:
                since = state.interrupted_since or await self._last_seen_alive(bcfg)
                rt.state = replace(
                    state,
                    interrupted_since=since,
                    interruption=state.interruption or "controller_restart",
                    awaiting_node=True,
                )
            self.bays[bcfg.id] = rt
            self._by_node[bcfg.node_id] = bcfg.id
        for bay_id, row in open_sessions.items():
            log.error("recovery.orphan_session", bay_id=bay_id, session_id=row["id"])
        for bus_id, hub in self.hubs.items():
            for rt in self.bays.values():
                if rt.cfg.bus == bus_id:
                    rt.node = hub.node(rt.cfg.node_id)
        log.info(
            "station.restored",
            bays=len(self.bays),
            open_sessions=sum(1 for b in self.bays.values() if b.state.session),
            clean=self.clean_restart,
        )

    async def _last_seen_alive(self, bcfg: BayConfig) -> float:
        """When the previous run last recorded anything of this bay (its samples, its state)."""
        rows = await self.journal.query(
            "SELECT max(at) AS at FROM meter_samples WHERE source = ?", (f"node:{bcfg.node_id}",)
        )
        rows += await self.journal.query(
            "SELECT updated_at AS at FROM bay_state WHERE bay_id = ?", (bcfg.id,)
        )
        seen = [float(r["at"]) for r in rows if r["at"] is not None]
        return max(seen) if seen else self.clock.wall()

    # ------------------------------------------------------------------ running

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        if not self.bays:
            await self.restore()
        sv = self.supervisor
        try:
            async with asyncio.TaskGroup() as tg:

                def core(name: str, work: Coroutine[Any, Any, None]) -> None:
                    tg.create_task(sv.core(name, work), name=name)

                for bus_id, hub in self.hubs.items():
                    core(f"hub:{bus_id}", hub.run(self._sink))
                core("updates", self._consume_updates())
                core("ticker", self._ticker())
                core("samples", self._flusher())
                core("tasks", self.tasks.run())
                core("journal-guard", self.guard.run())
                for rt in self.bays.values():
                    core(f"output:{rt.cfg.id}", self._output_loop(rt))
                    if rt.cfg.kind == "locker":
                        core(f"lock:{rt.cfg.id}", self._lock_loop(rt))
                for spec in self._services:
                    if spec.core:
                        core(f"service:{spec.name}", spec.run())
                    else:
                        tg.create_task(sv.supervise(spec), name=f"service:{spec.name}")
                tg.create_task(self._watch_stop(), name="stop")
                self._started.set()
                if on_ready:
                    on_ready()
        except* _StopStation:
            pass
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        await self.tasks.settle()
        await self.backlog.settle()
        # A last chance for transitions that wait: written now, or lost with this process
        # (none was acknowledged; after a restart the journal's own state is consistent).
        written = await self.backlog.flush()
        with contextlib.suppress(Exception):
            await self._flush_samples()
        if written:
            with contextlib.suppress(Exception):
                await self.journal.kv_set("clean_shutdown", True)
        else:
            log.error("station.unwritten_at_stop", transitions=len(self.backlog))
        log.info(
            "station.stopped",
            open_sessions=[
                b.state.session.session_id for b in self.bays.values() if b.state.session
            ],
        )

    def _sink(self, update: NodeUpdate) -> None:
        try:
            self._updates.put_nowait(update)
        except asyncio.QueueFull:
            self.dropped_updates += 1

    async def _consume_updates(self) -> None:
        while True:
            update = await self._updates.get()
            try:
                await self._on_update(update)
            except Exception:
                log.exception("station.update_failed", update=type(update).__name__)

    async def _on_update(self, u: NodeUpdate) -> None:
        bay_id = self._by_node.get(u.node_id)
        if bay_id is None:
            log.warning("node.unknown", node_id=u.node_id)
            return
        rt = self.bays[bay_id]
        match u:
            case NodeTelemetry():
                rt.telemetry = u
                self._samples.append(
                    (
                        self.clock.wall(),
                        f"node:{u.node_id}",
                        rt.state.session.session_id if rt.state.session else None,
                        u.energy_wh,
                        round(u.power_w, 1),
                        json.dumps([round(c, 2) for c in u.current_a]),
                    )
                )
                if not rt.reconciled:
                    await self._reconcile(rt, u)
                    return
                if u.door_closed is not None and u.door_closed != rt.state.door_closed:
                    await self.apply(bay_id, DoorChanged(u.door_closed))
                if u.locked is not None and u.locked != rt.state.locked:
                    await self.apply(bay_id, LockChanged(u.locked))
                effects = await self.apply(bay_id, _bay_telemetry(u))
                self._count_rejected(rt, effects)
                if not rt.state.node_online:
                    # Only now: the bay is shown ready once its report has been taken in.
                    await self.apply(bay_id, NodeOnline(True))
            case NodeEvent(kind=kind):
                await self._on_node_event(rt, u, kind)
            case NodeLink(online=online):
                if online and (not rt.reconciled or rt.telemetry is None):
                    # Online means reporting: the first telemetry brings the bay online (and
                    # after a restart reconciles it), so no session starts without a meter.
                    return
                await self.apply(bay_id, NodeOnline(online))
                if online:
                    rt.output_changed.set()
                    rt.lock_changed.set()
            case NodeHello():
                rt.firmware = u.firmware
                rt.output_changed.set()
            case NodeConflict(reason=reason, detail=detail):
                code = "node_identity" if reason is ConflictReason.IDENTITY_MISMATCH else None
                code = code or "address_conflict"
                log.error(
                    "node.address_conflict",
                    bay_id=bay_id,
                    reason=reason.value,
                    detail=detail,
                    note="reports of this node are ignored until the owner clears the fault",
                )
                if rt.state.fault != code:
                    await self.apply(bay_id, FaultRaised(code, stop=False), actor="node")

    def _count_rejected(self, rt: BayRuntime, effects: list[Effect]) -> None:
        for eff in effects:
            if isinstance(eff, ReadingRejected):
                key = (rt.cfg.id, eff.verdict.value)
                self.rejected_readings[key] = self.rejected_readings.get(key, 0) + 1
                if eff.first:
                    log.warning(
                        "node.reading_rejected",
                        bay_id=rt.cfg.id,
                        verdict=eff.verdict.value,
                        value_wh=eff.value_wh,
                        booked_wh=eff.booked_wh,
                        allowed_wh=round(eff.allowed_wh, 1),
                    )

    async def _on_node_event(self, rt: BayRuntime, u: NodeEvent, kind: NodeEventKind) -> None:
        bay_id = rt.cfg.id
        # Door and lock events are claims: the node's next telemetry (sensors) must agree.
        if kind in (NodeEventKind.DOOR_OPENED, NodeEventKind.DOOR_CLOSED):
            closed = kind is NodeEventKind.DOOR_CLOSED
            if closed != rt.state.door_closed or rt.state.door_claim is not None:
                await self.apply(bay_id, DoorClaimed(closed))
        elif kind in (NodeEventKind.LOCKED, NodeEventKind.UNLOCKED):
            locked = kind is NodeEventKind.LOCKED
            if locked != rt.state.locked or rt.state.lock_claim is not None:
                await self.apply(bay_id, LockClaimed(locked))
        elif kind is NodeEventKind.FAULT:
            await self.apply(bay_id, FaultRaised(u.detail or "node_fault"))
        elif kind is NodeEventKind.FAULT_CLEARED:
            await self.apply(bay_id, FaultCleared())
        else:
            log.info("node.event", bay_id=bay_id, kind=kind.value, detail=u.detail)

    async def _reconcile(self, rt: BayRuntime, u: NodeTelemetry) -> None:
        """First word from a node after a restart: continue its session, or close it honestly."""
        bay_id = rt.cfg.id
        rt.reconciled = True
        sess = rt.state.session
        if sess is not None and (u.boot_id is None or sess.boot_id is None):
            log.info(
                "recovery.no_plug_continuity",
                bay_id=bay_id,
                session_id=sess.session_id,
                note="node reports no plug/boot counters: continuing only if its relay is on",
            )
        effects = await self.apply(
            bay_id, Reconcile(_bay_telemetry(u), self.clean_restart), actor="recovery"
        )
        for eff in effects:
            if isinstance(eff, InterruptionEnded):
                log.info(
                    "recovery.resumed" if eff.outcome == "resumed" else "recovery.closing",
                    bay_id=bay_id,
                    session_id=eff.session_id,
                    outcome=eff.outcome,
                    interrupted_s=round(eff.ended_at - eff.started_at, 1),
                )
        rt.output_changed.set()

    async def _ticker(self) -> None:
        while True:
            await self.clock.sleep(self.cfg.timers.tick_s)
            for bay_id in list(self.bays):
                try:
                    await self.apply(bay_id, Tick())
                except Exception:
                    log.exception("station.tick_failed", bay_id=bay_id)
            try:
                await self.place_due_bookings()
            except JournalError:
                self.guard.failed()
            except Exception:
                log.exception("station.bookings_failed")

    async def _flusher(self) -> None:
        skipped = 0
        while True:
            await self.clock.sleep(SAMPLE_FLUSH_S)
            if self.guard.samples_paused:
                # Session records need the last space more than meter samples do.
                if self._samples and skipped == 0:
                    log.warning("journal.samples_paused", **self.guard.snapshot())
                skipped += len(self._samples)
                self.samples_skipped += len(self._samples)
                self._samples = []
                continue
            if skipped:
                log.info("journal.samples_resumed", skipped=skipped)
                skipped = 0
            await self._flush_samples()

    async def _flush_samples(self) -> None:
        batch, self._samples = self._samples, []
        if batch:
            try:
                await self.journal.add_meter_samples(batch)
            except JournalError:
                self.guard.failed()

    async def _output_loop(self, rt: BayRuntime) -> None:
        """Keep the node's output lease alive and equal to what :func:`controller.core.outputs.decide` says."""
        lease = self.cfg.timers.lease_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(lease / 3):
                    await rt.output_changed.wait()
            rt.output_changed.clear()
            s = rt.state
            out = decide(
                OutputInputs(
                    now=self.clock.monotonic(),
                    max_current_a=rt.cfg.max_current_a,
                    want_relay=rt.want_relay,
                    session=s.session is not None,
                    setpoint_a=self._setpoint(rt),
                    load_decided=self.load is None or self.load.steps > 0,
                    fault=s.fault,
                    node_online=s.node_online,
                    estop_pressed=self.stop_input_pressed,
                    safe_causes=frozenset(self.safe.causes),
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
            rt.last_ack_at = self.clock.monotonic()
            if rt.last_output != (relay, amps):
                rt.last_output = (relay, amps)
                if rt.state.setpoint_a != amps:
                    await self.apply(rt.cfg.id, SetpointChanged(amps))

    async def _test_ended(self, rt: BayRuntime, why: TestEnd) -> None:
        """An installer test output ended by the station: audited (unless it ran out) and announced."""
        message = TEST_END_MESSAGES[why]
        if why is not TestEnd.EXPIRED:
            log.warning("installer.test_ended", bay_id=rt.cfg.id, reason=why.value)
            await self._audit(
                "installer_test_ended", "station", {"bay_id": rt.cfg.id, "reason": why.value}
            )
        self._publish(
            {"type": "test_ended", "bay_id": rt.cfg.id, "reason": why.value, "message": message}
        )

    async def _lock_loop(self, rt: BayRuntime) -> None:
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

    # ------------------------------------------------------------------ transitions

    async def apply(self, bay_id: str, event: Event, *, actor: str | None = None) -> list[Effect]:
        """The one way a bay changes: transition, journal, then effects."""
        rt = self.bays.get(bay_id)
        if rt is None:
            raise UnknownBay(bay_id)
        async with self._lock:
            now = self.clock.wall()
            old = rt.state
            new, effects = transition(old, event, now, self.timers)
            checkpoint = False
            if new.session is not None and any(isinstance(e, UpdateSession) for e in effects):
                # While writes fail, progress checkpoints wait: the backlog keeps changes only.
                checkpoint = now - rt.checkpoint_at >= CHECKPOINT_S and not self.guard.blocked
            commit = build_commit(
                bay_id=bay_id,
                connector=rt.cfg.connector,
                event=event,
                new=new,
                effects=effects,
                now=now,
                tariff=(rt.tariff or self.cfg.tariff)
                if old.session is not None
                else self.cfg.tariff,
                checkpoint=checkpoint,
                actor=actor,
            )
            recorded = True
            if commit is not None:
                must = _happens_anyway(event, effects)
                recorded = await self.backlog.write(commit, keep=must)
                if not recorded and must and await self.guard.release_reserve():
                    recorded = await self.backlog.flush()  # in the space the reserve freed
                if recorded:
                    if checkpoint:
                        rt.checkpoint_at = now
                    self.guard.wrote()
                else:
                    self.guard.failed()
                    message = not_recorded_message(event, effects)
                    if not must:
                        log.warning("journal.refused", bay_id=bay_id, transition=event_name(event))
                        return [Refused(NOT_RECORDED, message)]
                    # The first of an episode is an error; what follows it is expected then.
                    (log.error if len(self.backlog) == 1 else log.info)(
                        "journal.transition_waiting",
                        bay_id=bay_id,
                        transition=event_name(event),
                        waiting=len(self.backlog),
                    )
                    # Nothing physical may happen unrecorded: only the safe half goes out.
                    effects = [
                        Refused(NOT_RECORDED, message),
                        *(e for e in effects if not (isinstance(e, SetRelay) and e.on)),
                    ]
            rt.state = new
        self._carry_out(rt, effects, recorded=recorded)
        if (old != new or effects) and self._listeners:
            self._publish({"type": "bay", "bay": self.bay_snapshot(rt)})
        return effects

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
                    rt.checkpoint_at = s.started_at
                    rt.tariff = self.cfg.tariff  # the snapshot the session is billed with
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
                case Refused(code=code, message=msg):
                    log.info("bay.refused", bay_id=rt.cfg.id, code=code, message=msg)
                case Notice(code=code, message=msg):
                    log.warning("bay.notice", bay_id=rt.cfg.id, code=code, message=msg)
                    self._publish(
                        {"type": "notice", "bay_id": rt.cfg.id, "code": code, "message": msg}
                    )
                case _:
                    pass

    async def _watch_stop(self) -> None:
        await self._stop_requested.wait()
        raise _StopStation()


def _bay_telemetry(u: NodeTelemetry) -> Telemetry:
    return Telemetry(
        current_a=u.max_current_a,
        power_w=u.power_w,
        energy_wh=u.energy_wh,
        pilot=u.pilot,
        relay_on=u.relay_on,
        plug_count=u.plug_count,
        boot_id=u.boot_id,
        door_closed=u.door_closed,
        locked=u.locked,
    )


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


__all__ = [
    "EXIT_RESTART",
    "BayRuntime",
    "MeterInput",
    "Outcome",
    "Station",
    "SystemClock",
    "UnknownBay",
    "UnknownSession",
]
