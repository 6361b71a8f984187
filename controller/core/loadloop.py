"""The load manager at run time: the pure controller in the loop of the station.

It owns its :class:`controller.load.LoadController` (changed only through its
methods) and the glue: on every grid-meter reading (and at least once a
second) it gathers the inputs — meters, bay telemetry, session modes, OCPP
caps — runs the controller, hands the setpoints to the bay runner (decreases
go out at once: the output loop sends as soon as a setpoint changes) and
journals every change as an audit record. Its only time is the clock it is
given: monotonic for the controller, wall time (local) for rule windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any, TypeGuard

import structlog

from controller.core.bay import FaultRaised, Phase
from controller.core.bays import BayRuntime, Bays
from controller.core.config import StationConfig
from controller.core.journal import Commit, EventRow, Journal, JournalError
from controller.core.journalguard import JournalGuard
from controller.core.meters import MeterIntake
from controller.core.runner import BayRunner, CapsProvider
from controller.core.safety import SafetySupervisor
from controller.load import (
    BayInput,
    BayLoadConfig,
    GridInput,
    LoadConfig,
    LoadController,
    Mode,
    StepInput,
    StepResult,
)
from controller.load.external import ExternalCaps, ExternalChange, ExternalLimits
from controller.load.lease import LeaseChange, LeaseState, Report, StationLease, station_demand
from controller.ports import Clock, Freshness, UnleasedNode

log = structlog.get_logger(__name__)

MAX_PERIOD_S = 1.0
TELEMETRY_FRESH_S = 3.0
_SESSION_PHASES = (Phase.AUTHORIZED, Phase.CHARGING, Phase.SUSPENDED_EV, Phase.SUSPENDED_EVSE)


def load_manager_config(cfg: StationConfig) -> LoadConfig | None:
    """The load manager's view of the station config; None when no ``[site]`` is configured."""
    if cfg.site is None:
        return None
    return LoadConfig(
        site=cfg.site,
        bays=tuple(
            BayLoadConfig(
                id=b.id,
                circuit_id=b.circuit,
                phases=b.phases,
                phase=b.phase,
                min_current_a=b.min_current_a,
                max_current_a=b.max_current_a,
                safe_current_a=b.safe_current_a,
            )
            for b in cfg.bays
        ),
        rules=tuple(cfg.rules),
    )


# A runtime-checkable Protocol's isinstance looks up every member on each call (it was a third
# of a load step at 64 bays): a node's class answers once.
_UNLEASED: dict[type, bool] = {}


def _unleased(node: object) -> TypeGuard[UnleasedNode]:
    kind = type(node)
    known = _UNLEASED.get(kind)
    if known is None:
        known = _UNLEASED[kind] = isinstance(node, UnleasedNode)
    return known


class LoadLoop:
    def __init__(
        self,
        config: LoadConfig,
        *,
        clock: Clock,
        bays: Bays,
        meters: MeterIntake,
        runner: BayRunner,
        safety: SafetySupervisor,
        journal: Journal,
        guard: JournalGuard,
        wake: asyncio.Event,
    ) -> None:
        self.config = config
        self.ctl = LoadController(config)
        self.last: StepResult | None = None
        self.caps: CapsProvider | None = None
        # Leases from an energy manager and the grid operator's signal (controller.load.external):
        # only ever a lower bound on top of the station's own limits.
        self.external: ExternalLimits | None = None
        self.external_now: ExternalCaps | None = None
        self.external_listeners: list[Callable[[ExternalCaps], None]] = []
        # This station's share of a site shared with other stations (controller.load.lease):
        # one more upper bound, like the external ones; its report goes back after each step.
        self.site_lease: StationLease | None = None
        self.lease_now: LeaseState | None = None
        self.lease_report: Report | None = None
        self.step_listeners: list[Callable[[StepResult], None]] = []
        self.steps = 0
        self._clock = clock
        self._bays = bays
        self._meters = meters
        self._runner = runner
        self._safety = safety
        self._journal = journal
        self._guard = guard
        self._wake = wake

    def start_wait_s(self, bay_id: str) -> float:
        """Seconds until the bay may switch its relay on (0: now); see LoadController."""
        return self.ctl.start_wait_s(bay_id, self._clock.monotonic())

    def wake(self) -> None:
        """Decide again now (an input changed)."""
        self._wake.set()

    def reconfigure(self, config: LoadConfig) -> None:
        """Swap the configuration live (owner settings): limits, circuits, modes, rules.

        A new :class:`LoadController` is built for ``config`` and seeded with the
        old one's memory per bay (setpoint, on/off times, relay cycles, overcurrent
        state), so min on/off times and the cycle budget keep counting and nothing
        jumps upward: an increase waits for the usual delay and ramps, while a
        decrease goes out at the very next step, which is triggered at once.
        """
        self.ctl = self.ctl.reconfigured(config, self._clock.monotonic())
        self.config = config
        log.info("load.reconfigured", rules=len(config.rules), circuits=len(config.site.circuits))
        self._wake.set()

    async def run(self) -> None:
        while True:
            wait = MAX_PERIOD_S
            if self.site_lease is not None and (until := self.site_lease.next_expiry()) is not None:
                # A site lease lapses on time, not at the next period.
                wait = max(0.0, min(wait, until - self._clock.monotonic()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.step()
            except JournalError:
                self._guard.failed()
            except Exception:
                log.exception("load.step_failed")

    def _bay_input(
        self, rt: BayRuntime, now: float, caps: dict[int, float | None], ext: ExternalCaps | None
    ) -> BayInput:
        s = rt.state
        sess = s.session
        tel = rt.telemetry
        active = sess is not None and s.phase in _SESSION_PHASES and s.node_online
        try:
            mode = Mode(sess.mode) if sess else Mode.STANDARD
        except ValueError:
            mode = Mode.STANDARD
        # What the node last confirmed (the output loop records every acknowledged lease):
        # a decrease counts at its old value until the node has confirmed it.
        acked = rt.last_output
        assumed = rt.node.assumed_draw_a(now) if _unleased(rt.node) else None
        return BayInput(
            bay_id=rt.cfg.id,
            acked_a=(acked[1] if acked[0] else 0.0) if acked is not None else None,
            acked_at=rt.last_ack_at if acked is not None else None,
            active=active,
            mode=mode,
            measured_a=tel.current_a if tel else (0.0, 0.0, 0.0),
            measured_fresh=tel is not None and now - tel.at < TELEMETRY_FRESH_S,
            measured_at=tel.at if tel is not None else None,
            boost_confirmed=mode is Mode.BOOST,
            session_order=int(sess.started_at * 1000) if sess else 0,
            external_cap_a=_lower(
                caps.get(rt.cfg.connector), ext.bays_a.get(rt.cfg.id) if ext else None
            ),
            faulted=s.fault is not None or not s.node_online,
            assumed_a=assumed or 0.0,
        )

    def _pv_surplus(self, grid: GridInput) -> tuple[float | None, Freshness]:
        if self._meters.of_role("pv") is None:
            return None, Freshness.FAILED
        g = self._meters.of_role("grid")
        if g is None or g.reading.sample is None or g.reading.sample.power_total_w is None:
            return None, Freshness.FAILED
        export_w = max(0.0, -g.reading.sample.power_total_w)
        solar_draw = sum(
            rt.telemetry.power_w
            for rt in self._bays.values()
            if rt.telemetry and rt.state.session and rt.state.session.mode == "solar"
        )
        return export_w + solar_draw, g.reading.freshness

    async def step(self) -> StepResult:
        # The clock it is given: the output loop stamps acknowledgements with it too.
        now = self._clock.monotonic()
        wall = self._clock.wall()
        caps = self.caps(wall) if self.caps else {}
        ext = self.external.evaluate(now) if self.external is not None else None
        grid_m = self._meters.of_role("grid")
        grid = (
            GridInput.from_reading(grid_m.reading)
            if grid_m is not None
            else GridInput((None, None, None), Freshness.FAILED, None)
        )
        pv_w, pv_fresh = self._pv_surplus(grid)
        lease = self.site_lease.evaluate(now) if self.site_lease is not None else None
        bays = tuple(self._bay_input(rt, now, caps, ext) for rt in self._bays.values())
        station_cap = _lower(caps.get(0), ext.site_a if ext else None)
        res = self.ctl.step(
            now,
            StepInput(
                bays=bays,
                grid=grid,
                wall_time=dt.datetime.fromtimestamp(wall),
                pv_surplus_w=pv_w,
                pv_freshness=pv_fresh,
                station_cap_a=station_cap,
                lease_a=lease.cap_a if lease is not None else None,
            ),
        )
        self.last = res
        self.steps += 1
        if res.grid_freshness is Freshness.FAILED:
            self._safety.block(
                "grid_meter", "Grid meter silent: charging within the guaranteed headroom."
            )
        else:
            self._safety.unblock("grid_meter")
        for bay_id, amps in res.setpoints_a.items():
            self._runner.set_load_setpoint(
                bay_id, amps if res.relay_on.get(bay_id, amps > 0) else 0.0
            )
        for bay_id in res.new_faults:
            await self._runner.apply(bay_id, FaultRaised("overcurrent", True), actor="load")
        if ext is not None:
            await self._external_changed(ext, wall)
        if lease is not None:
            await self._lease_changed(lease, wall, bays, grid, station_cap)
        for listener in self.step_listeners:
            listener(res)
        if res.audit:
            await self._journal.commit(
                Commit(
                    events=[EventRow("load_decision", wall, None, None, {"n": len(res.audit)})],
                    audit=[
                        (
                            "load",
                            "throttle" if a.bay_id != "site" else "rule_conflict",
                            {
                                "bay_id": a.bay_id,
                                "old_a": round(a.old_a, 2),
                                "new_a": round(a.new_a, 2),
                                "reason": a.reason,
                                "source": a.source,
                                "detail": a.detail,
                            },
                        )
                        for a in res.audit
                    ],
                )
            )
        return res

    async def _external_changed(self, ext: ExternalCaps, wall: float) -> None:
        changed = self.external_now is None or (
            (ext.site_a, ext.bays_a, ext.grid_operator, ext.fallback)
            != (
                self.external_now.site_a,
                self.external_now.bays_a,
                self.external_now.grid_operator,
                self.external_now.fallback,
            )
        )
        if ext.changes:
            await self._journal.commit(
                Commit(
                    events=[],
                    audit=[("external", c.kind, _external_row(c)) for c in ext.changes],
                )
            )
        self.external_now = ext  # after its audit rows are written
        if changed or ext.changes:
            for listener in self.external_listeners:
                listener(ext)

    async def _lease_changed(
        self,
        lease: LeaseState,
        wall: float,
        bays: tuple[BayInput, ...],
        grid: GridInput,
        station_cap: float | None,
    ) -> None:
        assert self.site_lease is not None
        if lease.changes:
            await self._journal.commit(
                Commit(
                    events=[],
                    audit=[("site_lease", c.kind, _lease_row(c)) for c in lease.changes],
                )
            )
        self.lease_now = lease
        topo = self.ctl.topology
        demand = station_demand(
            [
                (
                    (spec := topo.bays[topo.bay_index[b.bay_id]]).phases,
                    min(spec.max_a, b.external_cap_a)
                    if b.external_cap_a is not None
                    else spec.max_a,
                )
                for b in bays
                if b.active and not b.faulted
            ],
            station_cap,
        )
        measured = [0.0, 0.0, 0.0]
        for b in bays:
            if b.measured_fresh:
                measured = [m + x for m, x in zip(measured, b.measured_a, strict=True)]
        # The site's main meter when this station reads one ("site"), else its grid meter:
        # the coordinator takes it from the station its config names.
        site_m = self._meters.of_role("site")
        if site_m is not None:
            grid = GridInput.from_reading(site_m.reading)
        g = grid.current_a
        grid_a = (
            (g[0] or 0.0, g[1] or 0.0, g[2] or 0.0)
            if grid.freshness is Freshness.FRESH
            and grid.at is not None
            and self._clock.monotonic() - grid.at <= self.config.site.grid_meter_timeout_s
            and any(x is not None for x in g)
            else None
        )
        self.lease_report = Report(
            station=self.site_lease.station,
            demand_a=demand,
            measured_a=(measured[0], measured[1], measured[2]),
            grid_a=grid_a,
            applied=lease.applied,
        )

    def status(self) -> dict[str, Any] | None:
        """For the owner's load bar: building load vs limit and the chargers' share, per phase."""
        res = self.last
        grid_m = self._meters.of_role("grid")
        if res is None or grid_m is None:
            return None
        sample = grid_m.reading.sample
        # Without a fresh sample the bar still shows the limit, marked with the meter's freshness.
        building = [c or 0.0 for c in sample.current_a] if sample else [0.0, 0.0, 0.0]
        chargers = [0.0, 0.0, 0.0]
        for rt in self._bays.values():
            if rt.telemetry is not None:
                for i, c in enumerate(rt.telemetry.current_a):
                    chargers[i] += c
        return {
            "limit_a": list(self.config.site.main_limit_a),
            "building_a": building,
            "chargers_a": [round(c, 2) for c in chargers],
            "freshness": res.grid_freshness.value,
            "setpoints_a": dict(res.setpoints_a),
            "conflicts": [str(c) for c in res.conflicts],
            "external": (
                self.external.status(self._clock.monotonic()) if self.external is not None else None
            ),
            "site_lease": (
                self.site_lease.status(self._clock.monotonic())
                if self.site_lease is not None
                else None
            ),
            "health": {
                b: {
                    "cycles_total": h.cycles_total,
                    "cycles_last_hour": h.cycles_last_hour,
                    "faulted": h.faulted,
                }
                for b, h in res.health.items()
            },
        }


def _lower(a: float | None, b: float | None) -> float | None:
    """The lower of two optional caps (None: no cap)."""
    if a is None:
        return b
    return a if b is None else min(a, b)


def _lease_row(c: LeaseChange) -> dict[str, Any]:
    return {"old_a": list(c.old_a), "new_a": list(c.new_a), "detail": c.detail}


def _external_row(c: ExternalChange) -> dict[str, Any]:
    return {
        "scope": c.scope,
        "source": c.source,
        "old_a": c.old_a,
        "new_a": c.new_a,
        "detail": c.detail,
    }
