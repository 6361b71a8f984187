"""The station supervisor: owns the bays at run time and everything that drives them.

One TaskGroup runs the node hubs, the update consumer, the timer tick, one
output loop per bay (setpoint leases renewed while healthy), the sample
flusher and any registered service (HTTP UI, OCPP, meters, load manager).
Every change of a bay goes through :meth:`Station.apply`: the pure
transition, then one journal transaction, then the effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from controller import tokens
from controller.accounting import Tariff
from controller.auth import Authorizer, AuthRequest
from controller.bay import (
    AvailabilityChanged,
    BayKind,
    BayState,
    CloseSession,
    DoorChanged,
    Effect,
    Event,
    FaultCleared,
    FaultRaised,
    Hold,
    HoldCancelled,
    HoldPlaced,
    LockChanged,
    ModeChanged,
    NodeOnline,
    Notice,
    OpenSession,
    Refused,
    SetLock,
    SetpointChanged,
    SetRelay,
    StopReason,
    StopRequested,
    Telemetry,
    Tick,
    Timers,
    TokenPresented,
    UpdateSession,
    ocpp_status,
    transition,
)
from controller.config import BayConfig, StationConfig
from controller.journal import Commit, EventRow, Journal, JournalError, OutboxRow
from controller.persist import build_commit, state_from_dict
from controller.ports import (
    AuthStatus,
    BayNode,
    DriverError,
    LinkStats,
    MeterReading,
    NodeEvent,
    NodeEventKind,
    NodeHello,
    NodeHub,
    NodeLink,
    NodeTelemetry,
    NodeUpdate,
    Upstream,
)
from controller.safety import SafeMode
from controller.tokens import Outcome as TokenOutcome

if TYPE_CHECKING:
    from controller.loadloop import LoadLoop
    from controller.looplag import LoopLagMonitor

log = structlog.get_logger(__name__)

CHECKPOINT_S = 30.0
EXIT_RESTART = 75
SAMPLE_FLUSH_S = 2.0
Service = Callable[[], Coroutine[Any, Any, None]]


class _StopStation(Exception):
    pass


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
    test_output: tuple[bool, float, float] | None = (
        None  # installer test: relay, A, until (monotonic)
    )


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


class Station:
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
        t = cfg.timers
        self.timers = Timers(
            connection_timeout_s=t.connection_timeout_s,
            exit_grace_s=t.exit_grace_s,
            suspend_after_s=t.suspend_after_s,
        )
        self.bays: dict[str, BayRuntime] = {}
        self._by_node: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._updates: asyncio.Queue[NodeUpdate] = asyncio.Queue(maxsize=10_000)
        self._samples: list[tuple[Any, ...]] = []
        self._listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self._services: list[tuple[str, Service]] = []
        self._started = asyncio.Event()
        # Without a load manager ([site] absent) a bay gets its configured maximum.
        self.load: LoadLoop | None = None
        self.upstream: Upstream | None = None  # the central system, when one is configured
        self.loop_lag: LoopLagMonitor | None = None  # set by controller.looplag.attach
        self.safe = SafeMode()
        self.stop_input_pressed = False
        self.started_at = time.monotonic()
        self.dropped_updates = 0
        self.clean_restart = False
        self.exit_code = 0
        self._stop_requested = asyncio.Event()
        self.stop_listeners: list[Callable[[], None]] = []
        self._bg: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ setup

    def add_service(self, name: str, run: Service) -> None:
        """Run ``run()`` inside the station's TaskGroup (added before :meth:`run`)."""
        self._services.append((name, run))

    async def restore(self) -> None:
        """Rebuild the bays from the journal; open sessions wait for their node to reconcile."""
        saved = await self.journal.bay_states()
        open_sessions = {s["bay_id"]: s for s in await self.journal.open_sessions()}
        self.clean_restart = bool(await self.journal.kv_get("clean_shutdown", False))
        await self.journal.kv_set("clean_shutdown", False)
        for bcfg in self.cfg.bays:
            kind = BayKind(bcfg.kind)
            if bcfg.id in saved:
                state = state_from_dict(saved[bcfg.id])
                if state.kind is not kind:
                    log.warning("bay.kind_changed", bay_id=bcfg.id)
                    state = BayState(bcfg.id, kind)
            else:
                state = BayState(bcfg.id, kind)
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

    # ------------------------------------------------------------------ running

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        if not self.bays:
            await self.restore()
        try:
            async with asyncio.TaskGroup() as tg:
                for bus_id, hub in self.hubs.items():
                    tg.create_task(hub.run(self._sink), name=f"hub:{bus_id}")
                tg.create_task(self._consume_updates(), name="updates")
                tg.create_task(self._ticker(), name="ticker")
                tg.create_task(self._flusher(), name="samples")
                for rt in self.bays.values():
                    tg.create_task(self._output_loop(rt), name=f"output:{rt.cfg.id}")
                    if rt.cfg.kind == "locker":
                        tg.create_task(self._lock_loop(rt), name=f"lock:{rt.cfg.id}")
                for name, svc in self._services:
                    tg.create_task(svc(), name=f"service:{name}")
                tg.create_task(self._watch_stop(), name="stop")
                self._started.set()
                if on_ready:
                    on_ready()
        except* _StopStation:
            pass
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        if self._bg:
            await asyncio.gather(*self._bg, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._flush_samples()
        with contextlib.suppress(Exception):
            await self.journal.kv_set("clean_shutdown", True)
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
                if not rt.state.node_online:
                    await self.apply(bay_id, NodeOnline(True))
                if u.door_closed is not None and u.door_closed != rt.state.door_closed:
                    await self.apply(bay_id, DoorChanged(u.door_closed))
                if u.locked is not None and u.locked != rt.state.locked:
                    await self.apply(bay_id, LockChanged(u.locked))
                await self.apply(
                    bay_id,
                    Telemetry(
                        current_a=u.max_current_a,
                        power_w=u.power_w,
                        energy_wh=u.energy_wh,
                        pilot=u.pilot,
                        relay_on=u.relay_on,
                    ),
                )
            case NodeEvent(kind=kind):
                await self._on_node_event(rt, u, kind)
            case NodeLink(online=online):
                if online and not rt.reconciled:
                    return  # reconciliation waits for the first telemetry
                await self.apply(bay_id, NodeOnline(online))
                if online:
                    rt.output_changed.set()
                    rt.lock_changed.set()
            case NodeHello():
                rt.firmware = u.firmware
                rt.output_changed.set()

    async def _on_node_event(self, rt: BayRuntime, u: NodeEvent, kind: NodeEventKind) -> None:
        bay_id = rt.cfg.id
        if kind in (NodeEventKind.DOOR_OPENED, NodeEventKind.DOOR_CLOSED):
            closed = kind is NodeEventKind.DOOR_CLOSED
            if closed != rt.state.door_closed:
                await self.apply(bay_id, DoorChanged(closed))
        elif kind in (NodeEventKind.LOCKED, NodeEventKind.UNLOCKED):
            locked = kind is NodeEventKind.LOCKED
            if locked != rt.state.locked:
                await self.apply(bay_id, LockChanged(locked))
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
        await self.apply(bay_id, NodeOnline(True))
        sess = rt.state.session
        tel = Telemetry(u.max_current_a, u.power_w, u.energy_wh, u.pilot, u.relay_on)
        if sess is None:
            await self.apply(bay_id, tel)
            return
        if u.relay_on:
            log.info("recovery.resumed", bay_id=bay_id, session_id=sess.session_id)
            await self.apply(bay_id, tel)
            rt.want_relay = rt.state.session is not None
            rt.output_changed.set()
            return
        await self.apply(bay_id, tel)
        reason = StopReason.REBOOT if self.clean_restart else StopReason.POWER_LOSS
        if rt.state.session is not None:
            log.info(
                "recovery.closing", bay_id=bay_id, session_id=sess.session_id, reason=reason.value
            )
            await self.apply(bay_id, StopRequested(reason, sess.session_id), actor="recovery")

    async def _ticker(self) -> None:
        while True:
            await self.clock.sleep(self.cfg.timers.tick_s)
            for bay_id in list(self.bays):
                try:
                    await self.apply(bay_id, Tick())
                except Exception:
                    log.exception("station.tick_failed", bay_id=bay_id)

    async def _flusher(self) -> None:
        while True:
            await self.clock.sleep(SAMPLE_FLUSH_S)
            await self._flush_samples()

    async def _flush_samples(self) -> None:
        batch, self._samples = self._samples, []
        if batch:
            try:
                await self.journal.add_meter_samples(batch)
            except JournalError:
                self._block("journal", "The journal cannot be written.")

    async def _output_loop(self, rt: BayRuntime) -> None:
        """Keep the node's output lease alive and equal to what the bay wants."""
        lease = self.cfg.timers.lease_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(lease / 3):
                    await rt.output_changed.wait()
            rt.output_changed.clear()
            if rt.node is None or not rt.state.node_online or not rt.reconciled:
                continue
            if self.load is not None and self.load.steps == 0:
                continue  # the node keeps its lease (or its safe share) until the first decision
            amps = self._setpoint(rt) if rt.want_relay and rt.state.fault is None else 0.0
            relay = amps > 0
            test = rt.test_output
            if test is not None:
                if test[2] > self.clock.monotonic() and rt.state.session is None:
                    relay, amps = test[0], test[1]
                else:
                    rt.test_output = None
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
                checkpoint = now - rt.checkpoint_at >= CHECKPOINT_S
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
            if commit is not None:
                try:
                    await self.journal.commit(commit)
                    self._unblock("journal")
                except JournalError as err:
                    self._block("journal", "The journal cannot be written.")
                    if isinstance(event, TokenPresented | HoldPlaced):
                        return [Refused("journal", "The station cannot record sessions right now.")]
                    log.error("journal.lost_transition", bay_id=bay_id, error=str(err))
                if checkpoint:
                    rt.checkpoint_at = now
            rt.state = new
        self._carry_out(rt, effects)
        if old != new or effects:
            self._publish({"type": "bay", "bay": self.bay_snapshot(rt)})
        return effects

    def _carry_out(self, rt: BayRuntime, effects: list[Effect]) -> None:
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

    # ------------------------------------------------------------------ commands

    def bay(self, bay_id: str) -> BayRuntime:
        rt = self.bays.get(bay_id)
        if rt is None:
            raise UnknownBay(bay_id)
        return rt

    def bay_by_connector(self, connector: int) -> BayRuntime:
        for rt in self.bays.values():
            if rt.cfg.connector == connector:
                return rt
        raise UnknownBay(str(connector))

    async def present_token(
        self,
        bay_id: str,
        token: str,
        *,
        source: str = "kiosk",
        mode: str = "standard",
        quota_wh: int | None = None,
        quota_s: float | None = None,
        preauthorized: str | None = None,
    ) -> Outcome:
        """A driver (or the CSMS) presents ``token`` at a bay: start, or stop own session."""
        rt = self.bay(bay_id)
        sess = rt.state.session
        if sess is not None and self._owns_session(token, sess.token, rt):
            return await self.stop_session(sess.session_id, StopReason.LOCAL, actor=source)
        if self.blockers and sess is None:
            cause, msg = next(iter(self.blockers.items()))
            await self._audit("refused", source, {"bay_id": bay_id, "cause": cause})
            return Outcome(False, f"blocked_{cause}", msg)
        pre = _precheck(rt.state)
        if pre is not None:
            return Outcome(False, pre.code, pre.message)
        if preauthorized is None:
            verdict = await self._verify_signed(token, rt, source)
            if not verdict.outcome.ok:
                return Outcome(False, verdict.outcome.value, verdict.message)
            if verdict.outcome is TokenOutcome.ACCEPTED and verdict.id_tag:
                token, preauthorized = verdict.id_tag, "qr_token"
        if preauthorized is None:
            auth = await self.authorizer.authorize(
                AuthRequest(token, bay_id, rt.cfg.connector, source)
            )
            if auth.status is not AuthStatus.ACCEPTED:
                await self._audit(
                    "auth_rejected",
                    source,
                    {"bay_id": bay_id, "status": auth.status.value, "via": auth.source},
                )
                return Outcome(
                    False, "not_authorized", auth.message or "This code is not accepted here."
                )
            auth_source = auth.source
        else:
            auth_source = preauthorized
        effects = await self.apply(
            bay_id,
            TokenPresented(token, auth_source, self.new_id(), mode, quota_wh, quota_s),
            actor=source,
        )
        return _outcome(effects)

    def _owns_session(self, presented: str, session_token: str, rt: BayRuntime) -> bool:
        """The same card, or the same signed QR code shown again (its id tag), stops a session."""
        if presented == session_token:
            return True
        if self.token_keys is None or not presented.startswith("ES"):
            return False
        res = tokens.check(presented, self.clock.wall(), rt.cfg.connector, self.token_keys)
        return res.claims is not None and res.claims.id_tag == session_token

    async def _verify_signed(self, text: str, rt: BayRuntime, source: str) -> tokens.VerifyResult:
        """Signed tokens are verified offline (signature, window, bay, replay); others pass through."""
        if self.token_keys is None:
            if tokens.classify_plain(text):
                return tokens.VerifyResult(TokenOutcome.PLAIN_ID_TAG, "")
            res = tokens.check(text, self.clock.wall(), rt.cfg.connector, _NO_KEYS)
        else:
            res = await tokens.verify(
                text, self.clock.wall(), rt.cfg.connector, self.token_keys, self._nonces
            )
        if not res.outcome.ok:
            await self._audit(
                "token_rejected",
                source,
                {"bay_id": rt.cfg.id, "outcome": res.outcome.value, "detail": res.detail[:200]},
            )
            log.info(
                "token.rejected",
                bay_id=rt.cfg.id,
                outcome=res.outcome.value,
                detail=res.detail[:200],
            )
        return res

    def focus_bay(self, bay_id: str | None, seconds: float = 60.0) -> None:
        """The kiosk shows this bay: a code the camera sees now is meant for it."""
        if bay_id is not None:
            self.bay(bay_id)
        self._focus = (bay_id, self.clock.monotonic() + seconds) if bay_id else None

    async def code_scanned(
        self, text: str, *, camera: str = "camera", bay_id: str | None = None
    ) -> Outcome:
        """A QR code seen by a camera: find its bay (the token's, the camera's, the kiosk's)."""
        target = bay_id
        if target is None and self.token_keys is not None:
            res = tokens.check(text, self.clock.wall(), 0, self.token_keys)
            if res.claims is not None and res.claims.bay is not None:
                with contextlib.suppress(UnknownBay):
                    target = self.bay_by_connector(res.claims.bay).cfg.id
        if target is None and self._focus is not None and self._focus[1] > self.clock.monotonic():
            target = self._focus[0]
        if target is None:
            out = Outcome(False, "choose_bay", "Choose a bay on the screen first.")
        else:
            out = await self.present_token(target, text, source=camera)
        self._publish(
            {
                "type": "scan",
                "bay_id": target,
                "ok": out.ok,
                "code": out.code,
                "message": out.message,
            }
        )
        return out

    async def stop_session(
        self, session_id: str, reason: StopReason, *, actor: str = "local"
    ) -> Outcome:
        for rt in self.bays.values():
            if rt.state.session is not None and rt.state.session.session_id == session_id:
                effects = await self.apply(
                    rt.cfg.id, StopRequested(reason, session_id), actor=actor
                )
                return _outcome(effects)
        if await self.journal.session(session_id) is None:
            raise UnknownSession(session_id)
        return Outcome(False, "not_running", "This session has already ended.", session_id)

    async def set_mode(self, session_id: str, mode: str, *, actor: str = "kiosk") -> Outcome:
        """Switch a running session's mode; the load manager applies it at its next step."""
        for rt in self.bays.values():
            if rt.state.session is not None and rt.state.session.session_id == session_id:
                effects = await self.apply(rt.cfg.id, ModeChanged(mode, session_id), actor=actor)
                self.load_changed.set()
                return _outcome(effects, ok_code="mode_changed")
        if await self.journal.session(session_id) is None:
            raise UnknownSession(session_id)
        return Outcome(False, "not_running", "This session has already ended.", session_id)

    async def place_hold(
        self,
        bay_id: str,
        token: str,
        duration_s: float | None = None,
        reservation_id: int | None = None,
        *,
        actor: str = "owner",
    ) -> Outcome:
        self.bay(bay_id)
        expires = self.clock.wall() + (duration_s or self.cfg.timers.hold_s)
        hold = Hold(self.new_id(), token, expires, reservation_id)
        effects = await self.apply(bay_id, HoldPlaced(hold), actor=actor)
        out = _outcome(effects)
        if out.ok:
            return Outcome(
                True, "held", "Bay held.", data={"hold_id": hold.hold_id, "expires_at": expires}
            )
        return out

    async def cancel_hold(self, bay_id: str, hold_id: str, *, actor: str = "owner") -> Outcome:
        return _outcome(
            await self.apply(bay_id, HoldCancelled(hold_id), actor=actor), ok_code="cancelled"
        )

    async def set_availability(
        self, bay_id: str, available: bool, *, actor: str = "owner"
    ) -> Outcome:
        rt = self.bay(bay_id)
        await self.apply(bay_id, AvailabilityChanged(available), actor=actor)
        scheduled = rt.state.pending_unavailable
        return Outcome(
            True, "scheduled" if scheduled else "accepted", "Scheduled" if scheduled else "Accepted"
        )

    async def unlock_connector(self, bay_id: str, *, actor: str = "csms") -> Outcome:
        """Open a bay's lock (OCPP UnlockConnector): a running session stops first."""
        rt = self.bay(bay_id)
        if rt.state.session is not None:
            await self.apply(
                bay_id,
                StopRequested(StopReason.UNLOCK_COMMAND, rt.state.session.session_id),
                actor=actor,
            )
        if rt.cfg.kind != "locker" and rt.node is None:
            return Outcome(False, "not_supported", "This bay has no lock.")
        rt.want_locked = False
        rt.lock_changed.set()
        return Outcome(True, "unlocked", "Unlocked.")

    async def cancel_reservation(self, reservation_id: int, *, actor: str = "csms") -> Outcome:
        for rt in self.bays.values():
            h = rt.state.hold
            if h is not None and h.reservation_id == reservation_id:
                return await self.cancel_hold(rt.cfg.id, h.hold_id, actor=actor)
        return Outcome(False, "unknown_reservation", f"No reservation {reservation_id}.")

    async def enqueue_for_session(
        self, bay_id: str, action: str, payload: dict[str, Any]
    ) -> str | None:
        """Journal an outbox message for the bay's open session, ordered with its start and stop.

        Returns the session id, or None when no session is open (nothing written).
        """
        rt = self.bay(bay_id)
        async with self._lock:
            sess = rt.state.session
            if sess is None:
                return None
            now = self.clock.wall()
            await self.journal.commit(
                Commit(
                    events=[EventRow(action.lower(), now, bay_id, sess.session_id, {})],
                    outbox=[OutboxRow(action, payload, sess.session_id)],
                )
            )
            return sess.session_id

    def request_stop(self, reason: str, exit_code: int = 0) -> None:
        """Ask the supervisor to stop (SIGTERM, soft or hard reset). Open sessions stay open.

        A reset passes ``EXIT_RESTART`` (75): the unit restarts on it without logging a failure.
        """
        log.info("station.stop_requested", reason=reason)
        self.exit_code = exit_code
        for listener in self.stop_listeners:
            listener()
        self._stop_requested.set()

    async def _watch_stop(self) -> None:
        await self._stop_requested.wait()
        raise _StopStation()

    async def installer_test_output(
        self, bay_id: str, *, relay_on: bool, current_a: float, hold_s: float, actor: str
    ) -> Outcome:
        """Hold a test output on an idle bay (relay, current ramp) for ``hold_s`` seconds.

        Refused while a session runs or the station is in safe mode; the current is
        clipped to the bay's maximum, and the lease still guards it.
        """
        rt = self.bay(bay_id)
        if rt.state.session is not None:
            return Outcome(False, "bay_in_use", "A session is running on this bay.")
        if self.safe.active:
            return Outcome(False, "safe_mode", "The station is in safe mode.")
        amps = max(0.0, min(current_a, rt.cfg.max_current_a)) if relay_on else 0.0
        hold = max(0.0, min(hold_s, 60.0))
        rt.test_output = (relay_on, amps, self.clock.monotonic() + hold)
        rt.output_changed.set()
        await self._audit(
            "installer_test",
            actor,
            {"bay_id": bay_id, "relay_on": relay_on, "current_a": amps, "hold_s": hold},
        )
        return Outcome(
            True, "testing", f"Test output held for {hold:.0f} s.", data={"current_a": amps}
        )

    async def raise_fault(
        self, bay_id: str, code: str, *, stop: bool = True, actor: str = "station"
    ) -> None:
        await self.apply(bay_id, FaultRaised(code, stop), actor=actor)

    async def clear_fault(self, bay_id: str, *, actor: str = "owner") -> None:
        await self.apply(bay_id, FaultCleared(), actor=actor)

    # ------------------------------------------------------------------ safe mode

    @property
    def blockers(self) -> dict[str, str]:
        """Safe-mode causes that refuse new sessions (cause -> message)."""
        return self.safe.refusing

    def _block(self, cause: str, message: str) -> None:
        entry = self.safe.enter(cause, message, self.clock.wall())
        if entry is not None:
            log.error("safe_mode.entered", cause=cause, message=message)
            self._spawn_audit("safe_mode_entered", "station", {"cause": cause, "message": message})
            self._publish({"type": "station", "station": self.station_snapshot()})

    def _unblock(self, cause: str, *, actor: str = "station", owner: bool = False) -> bool:
        entry = self.safe.leave(cause, owner=owner)
        if entry is None:
            return False
        log.info("safe_mode.left", cause=cause, actor=actor)
        self._spawn_audit("safe_mode_left", actor, {"cause": cause})
        self._publish({"type": "station", "station": self.station_snapshot()})
        return True

    block = _block
    unblock = _unblock

    def _spawn_audit(self, kind: str, actor: str, detail: dict[str, Any]) -> None:
        # Safe-mode changes happen inside callbacks and transitions; the audit row
        # is written by its own small task (kept, so nothing is orphaned).
        if kind == "safe_mode_entered" and detail.get("cause") == "journal":
            return  # cannot be journaled; the log line stands for it
        task = asyncio.get_running_loop().create_task(self._audit(kind, actor, detail))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def settle(self) -> None:
        """Wait for background audit writes (tests, shutdown)."""
        while self._bg:
            await asyncio.gather(*list(self._bg), return_exceptions=True)

    async def emergency_stop(self, pressed: bool) -> None:
        """The emergency-stop input changed. Pressed: all relays off, all sessions stopped, latched."""
        self.stop_input_pressed = pressed
        if not pressed:
            log.info("emergency_stop.released", note="latched until an owner clears it")
            self._publish({"type": "station", "station": self.station_snapshot()})
            return
        self._block("emergency_stop", "Emergency stop: the station is stopped.")
        for bay_id in list(self.bays):
            await self.apply(bay_id, FaultRaised("emergency_stop"), actor="emergency_stop")

    async def clear_emergency_stop(self, *, actor: str) -> Outcome:
        if self.stop_input_pressed:
            return Outcome(False, "still_pressed", "Release the emergency stop first.")
        if not self._unblock("emergency_stop", actor=actor, owner=True):
            return Outcome(False, "not_active", "No emergency stop to clear.")
        for bay_id, rt in self.bays.items():
            if rt.state.fault == "emergency_stop":
                await self.apply(bay_id, FaultCleared(), actor=actor)
        return Outcome(True, "cleared", "Emergency stop cleared.")

    async def _audit(self, kind: str, actor: str, detail: dict[str, Any]) -> None:
        try:
            await self.journal.audit(self.clock.wall(), actor, kind, detail)
        except JournalError:
            self._block("journal", "The journal cannot be written.")

    audit = _audit

    # ------------------------------------------------------------------ observing

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=256)
        self._listeners.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._listeners.discard(q)

    @contextlib.asynccontextmanager
    async def updates(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        q = self.subscribe()
        try:
            yield q
        finally:
            self.unsubscribe(q)

    def _publish(self, msg: dict[str, Any]) -> None:
        for q in list(self._listeners):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(msg)

    publish = _publish

    def bay_snapshot(self, rt: BayRuntime) -> dict[str, Any]:
        s = rt.state
        tel = rt.telemetry
        now = self.clock.wall()
        session = None
        if s.session is not None:
            sess = s.session
            elapsed = max(0.0, now - sess.started_at)
            t = rt.tariff or self.cfg.tariff
            session = {
                "id": sess.session_id,
                "token": _mask(sess.token),
                "mode": sess.mode,
                "started_at": sess.started_at,
                "elapsed_s": round(elapsed, 1),
                "energy_wh": sess.energy_wh,
                "peak_power_w": sess.peak_power_w,
                "cost": round(
                    t.per_session + t.per_kwh * sess.energy_wh / 1000 + t.per_minute * elapsed / 60,
                    2,
                ),
                "currency": t.currency,
                "quota_wh": sess.quota_wh,
                "quota_s": sess.quota_s,
            }
        return {
            "id": rt.cfg.id,
            "connector": rt.cfg.connector,
            "kind": rt.cfg.kind,
            "status": ocpp_status(s).value,
            "phase": s.phase.value,
            "node_online": s.node_online,
            "fault": s.fault,
            "available": s.available,
            "pending_unavailable": s.pending_unavailable,
            "setpoint_a": s.setpoint_a,
            "max_current_a": rt.cfg.max_current_a,
            "power_w": round(tel.power_w, 1) if tel else 0.0,
            "current_a": [round(c, 2) for c in tel.current_a] if tel else [0.0, 0.0, 0.0],
            "relay_on": tel.relay_on if tel else False,
            "door_closed": s.door_closed,
            "locked": s.locked,
            "pilot": s.pilot.value,
            "hold": (
                {
                    "id": s.hold.hold_id,
                    "expires_at": s.hold.expires_at,
                    "reservation_id": s.hold.reservation_id,
                }
                if s.hold
                else None
            ),
            "session": session,
        }

    def _setpoint(self, rt: BayRuntime) -> float:
        if self.load is None:
            return rt.cfg.max_current_a
        return rt.load_setpoint_a

    def set_load_setpoint(self, bay_id: str, amps: float) -> None:
        """The load manager's setpoint for a bay; sent at once when it changes."""
        rt = self.bay(bay_id)
        if rt.load_setpoint_a != amps:
            rt.load_setpoint_a = amps
            rt.output_changed.set()

    def load_status(self) -> dict[str, Any] | None:
        return self.load.status() if self.load is not None else None

    def on_meter_reading(
        self, reading: MeterReading, *, role: str, bay_id: str | None = None
    ) -> None:
        """A meter published (called on the loop by the meter adapter)."""
        prev = self.meters.get(reading.meter)
        self.meters[reading.meter] = MeterInput(role, bay_id, reading)
        if role in ("grid", "pv"):
            self.load_changed.set()
        if prev is None or prev.reading.freshness != reading.freshness:
            log.info(
                "meter.freshness",
                meter=reading.meter,
                role=role,
                freshness=reading.freshness.value,
                error=reading.error or None,
            )

    def meter_of(self, role: str) -> MeterInput | None:
        for m in self.meters.values():
            if m.role == role:
                return m
        return None

    @property
    def pv_available(self) -> bool:
        return self.meter_of("pv") is not None

    def healthy(self) -> bool:
        """For the watchdog and /healthz: the loop runs (we are called) and the journal writes."""
        return self._started.is_set() and self.journal.writable

    def station_snapshot(self) -> dict[str, Any]:
        return {
            "id": self.cfg.station.id,
            "name": self.cfg.station.name,
            "blocked": dict(self.blockers),
            "safe_mode": self.safe.snapshot(),
            "emergency_stop_pressed": self.stop_input_pressed,
            "accepting_sessions": not self.blockers,
            "bays": len(self.bays),
            "uptime_s": round(time.monotonic() - self.started_at, 1),
        }

    def link_stats(self) -> dict[str, LinkStats]:
        return {bay_id: rt.node.stats() for bay_id, rt in self.bays.items() if rt.node is not None}


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
