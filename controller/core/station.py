"""The station: one coordinator that builds its collaborators, wires them and runs them.

Each collaborator is one file with one job (see the README's Architecture):

- ``runner`` (:mod:`controller.core.runner`): the one way a bay changes, the output and lock loops;
- ``commands`` (:mod:`controller.core.commands`): start, stop, holds, modes, tests — via the runner;
- ``bookings`` (:mod:`controller.core.bookings`): the calendar of holds to come;
- ``safety`` (:mod:`controller.core.safety`): safe mode, its causes, the emergency stop;
- ``nodes`` and ``meters``: what the nodes and the meters report;
- ``load`` (:mod:`controller.core.loadloop`): the load manager, when a ``[site]`` is configured;
- ``events`` (:mod:`controller.core.events`): the typed event bus;
- ``firmware`` (:mod:`controller.core.firmware`): node firmware updates, this program's version;
- ``snapshots``, ``status``, ``audit``, ``guard``, ``backlog``, ``samples``, ``tasks``.

:meth:`Station.run` runs the core in one TaskGroup — the node hubs, the node
intake, the timer tick, one output loop per bay, the sample flusher, the
journal guard, the load manager — and, each under the supervisor of
:mod:`controller.core.services`, the optional services (HTTP UI, OCPP, meters,
camera, ...). Only a failure of the core stops the station.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from controller.core.audit import AuditLog
from controller.core.auth import Authorizer
from controller.core.backlog import Backlog
from controller.core.bays import Bays
from controller.core.bookings import Bookings
from controller.core.clock import SystemClock
from controller.core.commands import Commands
from controller.core.config import StationConfig
from controller.core.events import EventBus
from controller.core.firmware import NodeUpdates
from controller.core.journal import Journal, JournalError
from controller.core.journalguard import JournalGuard
from controller.core.loadloop import LoadLoop
from controller.core.meters import MeterIntake
from controller.core.nodeintake import NodeIntake
from controller.core.restore import restore_bays
from controller.core.runner import BayRunner
from controller.core.safety import SafetySupervisor
from controller.core.samples import SampleWriter, journal_interval
from controller.core.services import Service, ServiceSpec, Supervisor
from controller.core.snapshots import Snapshots
from controller.core.status import StatusFeed
from controller.core.taskrunner import TaskRunner
from controller.load import LoadConfig
from controller.ports import ChargingLimits, Clock, NodeHub, Upstream

log = structlog.get_logger(__name__)

EXIT_RESTART = 75


class _StopStation(Exception):
    pass


class Station:
    def __init__(
        self,
        cfg: StationConfig,
        journal: Journal,
        *,
        hubs: dict[str, NodeHub] | None = None,
        clock: Clock | None = None,
        new_id: Callable[[], str] | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.cfg = cfg
        self.journal = journal
        self.hubs = hubs or {}
        self.clock: Clock = clock or SystemClock()
        self.authorizer = authorizer or Authorizer()
        new_id = new_id or (lambda: uuid.uuid4().hex[:16])
        self.started_at = time.monotonic()
        self.upstream: Upstream | None = None  # the central system, when one is configured
        self.loop_lag: object | None = None  # controller.ops.looplag's monitor, once attached
        self.exit_code = 0
        self.stop_listeners: list[Callable[[], None]] = []
        self._services: list[ServiceSpec] = []
        self._stop_requested = asyncio.Event()
        self._started = asyncio.Event()
        self._load_changed = asyncio.Event()  # something the load manager reads has changed

        # The collaborators, bottom up: each gets the few others it needs.
        clock_ = self.clock
        self.bays = Bays()
        self.events = EventBus()
        self.tasks = TaskRunner()  # work started by callbacks and commands, in its TaskGroup
        self.backlog = Backlog(journal)  # transitions that happened but wait for the journal
        self.audit = AuditLog(journal, clock_, self.tasks, on_failure=self._journal_failed)
        self.status = StatusFeed(self.bays, self.events, clock_)  # each connector's OCPP status
        self.safety = SafetySupervisor(clock_, self.bays, self.events, self.audit, self.status)
        self.guard = JournalGuard(
            journal, cfg.journal, self.backlog, clock=clock_, safe=self.safety, events=self.events
        )
        self.snapshots = Snapshots(
            cfg, clock_, self.bays, self.safety, self.guard, started_at=self.started_at
        )
        self.runner = BayRunner(
            cfg,
            self.bays,
            clock_,
            backlog=self.backlog,
            guard=self.guard,
            safety=self.safety,
            events=self.events,
            status=self.status,
            snapshots=self.snapshots,
            audit=self.audit,
        )
        self.safety.attach(self.runner)
        self.samples = SampleWriter(
            journal, self.guard, clock_, self.bays, cadence=journal_interval(cfg)
        )
        self.nodes = NodeIntake(self.bays, self.runner, self.samples, clock_)
        self.meters = MeterIntake(
            cfg, self.bays, clock_, self.audit, self._load_changed, self.samples
        )
        self.commands = Commands(
            cfg,
            self.bays,
            clock_,
            runner=self.runner,
            safety=self.safety,
            audit=self.audit,
            events=self.events,
            journal=journal,
            backlog=self.backlog,
            authorizer=self.authorizer,
            new_id=new_id,
            load_changed=self._load_changed,
        )
        self.bookings = Bookings(
            cfg,
            self.bays,
            clock_,
            commands=self.commands,
            journal=journal,
            events=self.events,
            new_id=new_id,
        )
        self.firmware = NodeUpdates(
            self.bays,
            self.hubs,
            commands=self.commands,
            audit=self.audit,
            events=self.events,
            clock=clock_,
        )
        # Without a load manager ([site] absent) a bay gets its configured maximum.
        self.load: LoadLoop | None = None
        self.supervisor = Supervisor(
            on_down=self._service_down,
            on_up=self._service_up,
            stopping=lambda: self._stop_requested.is_set(),
        )

    def _journal_failed(self) -> None:
        # The audit log is built before the guard (which needs the safety supervisor).
        self.guard.failed()

    # ------------------------------------------------------------------ wiring

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

    @property
    def services(self) -> tuple[ServiceSpec, ...]:
        return tuple(self._services)

    def attach_load(self, config: LoadConfig) -> LoadLoop:
        """Manage the site's load with ``config``: the load loop becomes a core service."""
        loop = LoadLoop(
            config,
            clock=self.clock,
            bays=self.bays,
            meters=self.meters,
            runner=self.runner,
            safety=self.safety,
            journal=self.journal,
            guard=self.guard,
            wake=self._load_changed,
        )
        loop.caps = self.runner.caps
        self.load = loop
        self.runner.load = loop
        self.add_service("load", loop.run, core=True)
        return loop

    def connect_upstream(self, upstream: Upstream) -> None:
        """The central system: its charging-profile caps (if it has them) limit the bays."""
        self.upstream = upstream
        if isinstance(upstream, ChargingLimits):
            self.runner.caps = upstream.current_limits_a
            if self.load is not None:
                self.load.caps = upstream.current_limits_a

    def load_status(self) -> dict[str, Any] | None:
        """For the owner's load bar (None without a load manager or before its first step)."""
        return self.load.status() if self.load is not None else None

    def caps_changed(self) -> None:
        """The central system's caps changed: the load manager, or each output, decides again."""
        self._load_changed.set()
        if self.load is None:  # the caps limit the bays directly: resend their outputs now
            self.bays.outputs_changed()

    def _service_down(self, spec: ServiceSpec) -> None:
        if spec.refuse_while_down:
            self.safety.block(f"service:{spec.name}", spec.refuse_while_down)

    def _service_up(self, spec: ServiceSpec) -> None:
        if spec.refuse_while_down:
            self.safety.unblock(f"service:{spec.name}")

    # ------------------------------------------------------------------ running

    async def restore(self) -> None:
        """Rebuild the bays from the journal (see :mod:`controller.core.restore`)."""
        restored = await restore_bays(
            self.cfg,
            self.journal,
            self.hubs,
            self.clock,
            self.bays,
            on_write_failure=self.guard.failed,
        )
        self.nodes.clean_restart = restored.clean_restart
        self.status.prime()
        await self.firmware.note_start(self.journal)

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        if not self.bays:
            await self.restore()
        sv = self.supervisor
        try:
            async with asyncio.TaskGroup() as tg:

                def core(name: str, work: Coroutine[Any, Any, None]) -> None:
                    tg.create_task(sv.core(name, work), name=name)

                for bus_id, hub in self.hubs.items():
                    core(f"hub:{bus_id}", hub.run(self.nodes.sink))
                core("updates", self.nodes.run())
                core("ticker", self._ticker())
                core("samples", self.samples.run())
                core("tasks", self.tasks.run())
                core("journal-guard", self.guard.run())
                for rt in self.bays.values():
                    core(f"output:{rt.cfg.id}", self.runner.output_loop(rt))
                    if rt.cfg.kind == "locker":
                        core(f"lock:{rt.cfg.id}", self.runner.lock_loop(rt))
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

    async def _ticker(self) -> None:
        while True:
            await self.clock.sleep(self.cfg.timers.tick_s)
            await self.runner.tick()
            try:
                await self.bookings.place_due()
            except JournalError:
                self.guard.failed()
            except Exception:
                log.exception("station.bookings_failed")

    async def _shutdown(self) -> None:
        await self.tasks.settle()
        await self.backlog.settle()
        # A last chance for transitions that wait: written now, or lost with this process
        # (none was acknowledged; after a restart the journal's own state is consistent).
        written = await self.backlog.flush()
        with contextlib.suppress(Exception):
            await self.samples.flush()
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

    def request_stop(self, reason: str, exit_code: int = 0) -> None:
        """Ask the station to stop (SIGTERM, soft or hard reset). Open sessions stay open.

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

    def healthy(self) -> bool:
        """For the watchdog: the station has started and its loop runs (we are called).

        A journal that cannot write is not a reason to be restarted (a restart frees no
        space and would lose the transitions that wait for it): ``/healthz`` reports it.
        """
        return self._started.is_set()

    async def settle(self) -> None:
        """Wait for background jobs such as audit writes (tests, shutdown)."""
        await self.tasks.settle()


__all__ = ["EXIT_RESTART", "Station"]
