"""Node intake: what the bay nodes report, turned into bay events.

The node hubs hand every update to :meth:`NodeIntake.sink` (never blocking: a
full queue drops and counts); one consumer takes them in order — telemetry
(and its figures for the minute, kept in memory), door and lock claims, faults, links,
hellos and address conflicts — and applies each through the bay runner. After
a restart, a node's first telemetry reconciles its bay's open session.
"""

from __future__ import annotations

import asyncio

import structlog

from controller.core.bay import (
    DoorChanged,
    DoorClaimed,
    Effect,
    FaultCleared,
    FaultRaised,
    InterruptionEnded,
    LockChanged,
    LockClaimed,
    NodeOnline,
    ReadingRejected,
    Reconcile,
    Telemetry,
)
from controller.core.bays import BayRuntime, Bays
from controller.core.runner import BayRunner
from controller.core.samples import SampleWriter
from controller.ports import (
    Clock,
    ConflictReason,
    NodeConflict,
    NodeEvent,
    NodeEventKind,
    NodeHello,
    NodeLink,
    NodeTelemetry,
    NodeUpdate,
)

log = structlog.get_logger(__name__)

QUEUE = 10_000


class NodeIntake:
    def __init__(self, bays: Bays, runner: BayRunner, samples: SampleWriter, clock: Clock) -> None:
        self._bays = bays
        self._runner = runner
        self._samples = samples
        self._clock = clock
        self._queue: asyncio.Queue[NodeUpdate] = asyncio.Queue(maxsize=QUEUE)
        self._by_node: dict[str, str] = {}
        self.clean_restart = False  # the previous run ended cleanly (set by the restore)
        self.dropped = 0  # updates lost to a full queue
        # (bay id, verdict) -> node readings rejected as implausible, for the metrics
        self.rejected_readings: dict[tuple[str, str], int] = {}

    def sink(self, update: NodeUpdate) -> None:
        """Where the node hubs put every update (on the loop; never blocks)."""
        try:
            self._queue.put_nowait(update)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        while True:
            update = await self._queue.get()
            try:
                await self.take(update)
            except Exception:
                log.exception("station.update_failed", update=type(update).__name__)

    def _bay_of(self, node_id: str) -> BayRuntime | None:
        if len(self._by_node) != len(self._bays):
            self._by_node = {rt.cfg.node_id: bay_id for bay_id, rt in self._bays.items()}
        bay_id = self._by_node.get(node_id)
        return self._bays.get(bay_id) if bay_id is not None else None

    async def take(self, u: NodeUpdate) -> None:
        """One update of a node, applied to its bay."""
        rt = self._bay_of(u.node_id)
        if rt is None:
            log.warning("node.unknown", node_id=u.node_id)
            return
        bay_id = rt.cfg.id
        apply = self._runner.apply
        match u:
            case NodeTelemetry():
                rt.telemetry = u
                sess = rt.state.session
                tel = bay_telemetry(u)
                self._samples.add(
                    rt.source, sess.session_id if sess else None, u, tel.power_w, self._clock.wall()
                )
                if not rt.reconciled:
                    await self._reconcile(rt, u)
                    return
                if u.door_closed is not None and u.door_closed != rt.state.door_closed:
                    await apply(bay_id, DoorChanged(u.door_closed))
                if u.locked is not None and u.locked != rt.state.locked:
                    await apply(bay_id, LockChanged(u.locked))
                effects = await apply(bay_id, tel)
                self._count_rejected(rt, effects)
                if not rt.state.node_online:
                    # Only now: the bay is shown ready once its report has been taken in.
                    await apply(bay_id, NodeOnline(True))
            case NodeEvent(kind=kind):
                await self._on_event(rt, u, kind)
            case NodeLink(online=online):
                if online and (not rt.reconciled or rt.telemetry is None):
                    # Online means reporting: the first telemetry brings the bay online (and
                    # after a restart reconciles it), so no session starts without a meter.
                    return
                await apply(bay_id, NodeOnline(online))
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
                    await apply(bay_id, FaultRaised(code, stop=False), actor="node")

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

    async def _on_event(self, rt: BayRuntime, u: NodeEvent, kind: NodeEventKind) -> None:
        bay_id = rt.cfg.id
        apply = self._runner.apply
        # Door and lock events are claims: the node's next telemetry (sensors) must agree.
        if kind in (NodeEventKind.DOOR_OPENED, NodeEventKind.DOOR_CLOSED):
            closed = kind is NodeEventKind.DOOR_CLOSED
            if closed != rt.state.door_closed or rt.state.door_claim is not None:
                await apply(bay_id, DoorClaimed(closed))
        elif kind in (NodeEventKind.LOCKED, NodeEventKind.UNLOCKED):
            locked = kind is NodeEventKind.LOCKED
            if locked != rt.state.locked or rt.state.lock_claim is not None:
                await apply(bay_id, LockClaimed(locked))
        elif kind is NodeEventKind.FAULT:
            await apply(bay_id, FaultRaised(u.detail or "node_fault"))
        elif kind is NodeEventKind.FAULT_CLEARED:
            await apply(bay_id, FaultCleared())
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
        effects = await self._runner.apply(
            bay_id, Reconcile(bay_telemetry(u), self.clean_restart), actor="recovery"
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


def bay_telemetry(u: NodeTelemetry) -> Telemetry:
    """A node's report as the bay machine takes it."""
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


__all__ = ["NodeIntake", "bay_telemetry"]
