"""LoadController: :func:`allocate` plus time — ramps, anti-flapping, overcurrent, audit.

Pure apart from its own memory: no I/O, no clock. The station calls
:meth:`LoadController.step` on every grid-meter reading with the monotonic time
and a snapshot, sends the returned setpoints to the nodes (as leases) and writes
the audit records to the journal.

What time adds to the allocation, and why it stays safe: the commanded setpoint
of a bay is never above the allocation's target (decreases go out at once,
increases only ramp towards the target), so every limit the allocation keeps
is kept by the commanded setpoints too — once the vehicles have followed them.
Until they have, :mod:`controller.load.breakmake` funds increases and new starts
only from room the vehicles have really left (break before make).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from controller.load.allocate import (
    Allocation,
    AllocationInput,
    BayInput,
    GridInput,
    allocate,
)
from controller.load.breakmake import Budget, Follow
from controller.load.model import Amps3, LoadConfig
from controller.load.rules import RuleConflict, active_rules
from controller.load.topology import Topology
from controller.ports import Freshness

_HOUR_S = 3600.0
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class StepInput:
    bays: tuple[BayInput, ...]
    """Per bay; ``can_start``, ``keep_on`` and ``cap_a`` are owned by the controller and overwritten."""
    grid: GridInput
    wall_time: dt.datetime
    """Local wall-clock time, for rule windows."""
    pv_surplus_w: float | None = None
    pv_freshness: Freshness = Freshness.FAILED
    station_cap_a: float | None = None
    lease_a: Amps3 | None = None
    """The station's site lease per phase (see AllocationInput.lease_a)."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    at: float
    wall_time: dt.datetime
    bay_id: str
    """A bay id, or ``"site"`` for conflicts."""
    old_a: float
    new_a: float
    reason: str
    source: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class BayHealth:
    cycles_total: int
    cycles_last_hour: int
    overcurrent_events: int
    faulted: bool
    fault_reason: str


@dataclass(frozen=True, slots=True)
class StepResult:
    at: float
    setpoints_a: Mapping[str, float]
    """What to send to each node now: 0 means relay off."""
    relay_on: Mapping[str, bool]
    targets_a: Mapping[str, float]
    """Where the allocation wants each bay (setpoints ramp towards it)."""
    audit: tuple[AuditRecord, ...]
    conflicts: tuple[RuleConflict, ...]
    """Rule conflicts in force now (reported in ``audit`` only when they appear)."""
    new_faults: tuple[str, ...]
    grid_freshness: Freshness
    health: Mapping[str, BayHealth]
    allocation: Allocation


@dataclass(slots=True)
class _Bay:
    min_a: float
    setpoint: float = 0.0
    on_since: float = -1e18
    off_since: float = -1e18
    starts: deque[float] = dataclasses.field(default_factory=deque)
    cycles_total: int = 0
    pending_since: float | None = None
    ramping: bool = False
    decreased_from: float = 0.0
    decreased_at: float = -1e18
    follow: Follow = dataclasses.field(default_factory=Follow)
    over_since: float | None = None
    reduced: bool = False
    overcurrent_events: int = 0
    faulted: bool = False
    fault_reason: str = ""


class LoadController:
    def __init__(self, config: LoadConfig, topology: Topology | None = None) -> None:
        self.config = config
        self.topology = topology or Topology.from_config(config)
        self._bays = {s.id: _Bay(min_a=s.min_a) for s in self.topology.bays}
        self._rotation: tuple[str, ...] = ()
        self._slot_start: float | None = None
        self._conflicts: tuple[RuleConflict, ...] = ()

    # ------------------------------------------------------------------ queries

    @property
    def setpoints_a(self) -> dict[str, float]:
        return {b: s.setpoint for b, s in self._bays.items()}

    def health(self, now: float) -> dict[str, BayHealth]:
        out = {}
        for bid, s in self._bays.items():
            while s.starts and s.starts[0] <= now - _HOUR_S:
                s.starts.popleft()
            out[bid] = BayHealth(
                cycles_total=s.cycles_total,
                cycles_last_hour=len(s.starts),
                overcurrent_events=s.overcurrent_events,
                faulted=s.faulted,
                fault_reason=s.fault_reason,
            )
        return out

    def start_wait_s(self, bay_id: str, now: float) -> float:
        """How long a bay whose relay is off must still wait before it may start (min off
        time, relay cycles per hour); 0 when it may start now or is on. Reads only."""
        s = self._bays.get(bay_id)
        if s is None or s.setpoint > 0.0:
            return 0.0
        site = self.config.site
        wait = site.min_off_time_s - (now - s.off_since)
        if len(s.starts) >= site.relay_cycles_per_hour and s.starts:
            wait = max(wait, s.starts[0] + _HOUR_S - now)
        return max(0.0, wait)

    def reconfigured(self, config: LoadConfig, now: float) -> LoadController:
        """A controller for ``config`` (a live change) that carries this one's memory on.

        See :meth:`inherit`: nothing jumps upward, and a decrease goes out at the next step.
        """
        new = LoadController(config)
        new.inherit(self, now)
        return new

    def inherit(self, old: LoadController, now: float) -> None:
        """Take over ``old``'s memory per bay (a live reconfiguration).

        Min on/off times, the cycle budget, overcurrent state and decreases not yet
        followed keep counting; a setpoint above a bay's new maximum is a decrease now.
        """
        for spec in self.topology.bays:
            prev = old._bays.get(spec.id)
            if prev is None:
                continue
            s = dataclasses.replace(
                prev,
                min_a=spec.min_a,
                starts=deque(prev.starts),
                follow=prev.follow.copy(),
                pending_since=None,
                ramping=False,
            )
            if s.setpoint > spec.max_a:
                self._decrease(now, s, spec.max_a)
            self._bays[spec.id] = s
        self._rotation = tuple(b for b in old._rotation if b in self._bays)
        self._slot_start = old._slot_start
        self._conflicts = old._conflicts

    def clear_fault(self, bay_id: str, now: float, wall_time: dt.datetime) -> AuditRecord:
        """An owner cleared the bay's overcurrent fault; it may be allocated again."""
        s = self._bays[bay_id]
        s.faulted, s.fault_reason, s.reduced, s.over_since = False, "", False, None
        return AuditRecord(now, wall_time, bay_id, s.setpoint, s.setpoint, "fault_cleared")

    # ------------------------------------------------------------------ step

    def step(self, now: float, inp: StepInput) -> StepResult:
        site = self.config.site
        audit: list[AuditRecord] = []
        new_faults: list[str] = []
        wall = inp.wall_time

        grid = inp.grid
        if grid.at is not None and now - grid.at > site.grid_meter_timeout_s:
            # A reading older than the timeout is a silent meter, whatever it claimed.
            grid = dataclasses.replace(grid, freshness=Freshness.FAILED)

        if self._slot_start is None:
            self._slot_start = now
        rotate = now - self._slot_start >= site.rotation_slot_s
        if rotate:
            self._slot_start = now

        bays: list[BayInput] = []
        by_id: dict[str, BayInput] = {}
        for b in inp.bays:
            s = self._bays[b.bay_id]
            by_id[b.bay_id] = b
            s.follow.settle(now, b, s.setpoint, site)
            self._check_overcurrent(now, wall, b, s, audit, new_faults)
            while s.starts and s.starts[0] <= now - _HOUR_S:
                s.starts.popleft()
            on = s.setpoint > 0.0
            can_start = (
                now - s.off_since >= site.min_off_time_s
                and len(s.starts) < site.relay_cycles_per_hour
            )
            keep_on = on and now - s.on_since < site.min_on_time_s
            cap_a = s.min_a if s.reduced else None
            faulted = b.faulted or s.faulted
            if (b.can_start, b.keep_on, b.cap_a, b.faulted) != (can_start, keep_on, cap_a, faulted):
                # Copy only when needed: replace() is most of a 64-bay step's time otherwise.
                b = dataclasses.replace(
                    b, can_start=can_start, keep_on=keep_on, cap_a=cap_a, faulted=faulted
                )
            bays.append(b)
            # A bay session that ended resets the reduction of its overcurrent episode.
            if not b.active:
                s.reduced = False

        alloc = allocate(
            AllocationInput(
                topology=self.topology,
                bays=tuple(bays),
                grid=grid,
                previous_a=self.setpoints_a,
                rules=active_rules(self.config.rules, wall),
                pv_surplus_w=inp.pv_surplus_w,
                pv_freshness=inp.pv_freshness,
                station_cap_a=inp.station_cap_a,
                lease_a=inp.lease_a,
                rotation=self._rotation,
                rotate=rotate,
            )
        )
        self._rotation = alloc.rotation

        # Break before make: every decrease first, then the increases that still fit.
        wanted: list[tuple[str, float]] = []
        for bid, s in self._bays.items():
            target = alloc.setpoints_a[bid]
            old = s.setpoint
            if target <= old:
                self._decrease(now, s, target)
                if target != old:
                    reason, source = alloc.limits[bid]
                    audit.append(AuditRecord(now, wall, bid, old, target, str(reason), source))
                continue
            want = self._wanted_increase(now, s, target)
            if want is not None:
                wanted.append((bid, want))
        if wanted:
            self._fund_increases(now, wall, wanted, by_id, alloc, audit)

        if alloc.conflicts != self._conflicts:
            known = set(self._conflicts)
            for c in alloc.conflicts:
                if c not in known:
                    audit.append(
                        AuditRecord(
                            now,
                            wall,
                            ",".join(c.targets),
                            0.0,
                            0.0,
                            f"rule_conflict:{c.kind}",
                            c.applied,
                            c.detail,
                        )
                    )
            self._conflicts = alloc.conflicts

        setpoints = self.setpoints_a
        return StepResult(
            at=now,
            setpoints_a=setpoints,
            relay_on={b: v > 0.0 for b, v in setpoints.items()},
            targets_a=alloc.setpoints_a,
            audit=tuple(audit),
            conflicts=alloc.conflicts,
            new_faults=tuple(new_faults),
            grid_freshness=alloc.grid_freshness,
            health=self.health(now),
            allocation=alloc,
        )

    def _decrease(self, now: float, s: _Bay, target: float) -> None:
        site = self.config.site
        old = s.setpoint
        if target == old:
            s.pending_since, s.ramping = None, False
            return
        s.setpoint = target
        s.pending_since, s.ramping = None, False
        s.decreased_from, s.decreased_at = (
            max(old, s.decreased_from if now - s.decreased_at < site.ev_response_s else 0.0),
            now,
        )
        s.follow.decreased(now, old, target, site)
        if target <= 0.0:
            s.off_since = now

    def _wanted_increase(self, now: float, s: _Bay, target: float) -> float | None:
        """Where the bay would go now if there were room (hysteresis, delay, ramp); None: stay."""
        site = self.config.site
        old = s.setpoint
        if old <= 0.0:
            # Switching on: the allocation already checked minimum off time and the
            # cycle budget; start at the minimum and ramp from there.
            return min(target, s.min_a)
        if not s.ramping:
            if target - old > site.increase_hysteresis_a:
                if s.pending_since is None:
                    s.pending_since = now
                if now - s.pending_since >= site.increase_delay_s:
                    s.ramping = True
            else:
                s.pending_since = None
        if not s.ramping:
            return None
        return min(target, old + site.ramp_step_a)

    def _fund_increases(
        self,
        now: float,
        wall: dt.datetime,
        wanted: list[tuple[str, float]],
        by_id: Mapping[str, BayInput],
        alloc: Allocation,
        audit: list[AuditRecord],
    ) -> None:
        site = self.config.site
        budget = Budget(
            self.topology,
            alloc.caps_a,
            {
                bid: s.follow.counted(now, by_id.get(bid), s.setpoint, site)
                for bid, s in self._bays.items()
            },
            alloc.station_caps_a,
        )
        # Lowest setpoint first: a waiting start before a ramp of a bay already charging.
        wanted.sort(key=lambda w: (self._bays[w[0]].setpoint, self.topology.bay_index[w[0]]))
        for bid, want in wanted:
            s = self._bays[bid]
            grant = min(want, budget.most(bid))
            old = s.setpoint
            if old <= 0.0:
                if grant < want - _EPS:
                    continue  # a start waits until its minimum fits whole
                s.on_since = now
                s.starts.append(now)
                s.cycles_total += 1
                s.pending_since, s.ramping = None, False
                reason = "start"
            elif grant <= old + _EPS:
                continue  # ramping, but the room is still held by vehicles yet to follow
            else:
                reason = "ramp_up"
            s.setpoint = grant
            budget.take(bid, grant)
            if reason == "ramp_up" and grant >= alloc.setpoints_a[bid] - _EPS:
                s.ramping, s.pending_since = False, None
            lim = alloc.limits[bid]
            source = (
                lim[1] if reason == "start" else (f"{lim[0]}:{lim[1]}" if lim[1] else str(lim[0]))
            )
            audit.append(AuditRecord(now, wall, bid, old, grant, reason, source))

    def _check_overcurrent(
        self,
        now: float,
        wall: dt.datetime,
        b: BayInput,
        s: _Bay,
        audit: list[AuditRecord],
        new_faults: list[str],
    ) -> None:
        site = self.config.site
        if s.faulted or not b.measured_fresh:
            return
        allowed = s.setpoint
        if now - s.decreased_at < site.ev_response_s:
            # The vehicle is still allowed to be following the previous, higher setpoint.
            allowed = max(allowed, s.decreased_from)
        drawn = max(b.measured_a)
        if drawn <= allowed + site.overcurrent_tolerance_a:
            s.over_since = None
            return
        if s.over_since is None:
            s.over_since = now
            return
        if now - s.over_since <= site.overcurrent_s:
            return
        s.overcurrent_events += 1
        if not s.reduced and s.setpoint > s.min_a:
            s.reduced = True
            s.over_since = now
            audit.append(
                AuditRecord(
                    now,
                    wall,
                    b.bay_id,
                    s.setpoint,
                    s.setpoint,
                    "overcurrent",
                    detail=f"drawing {drawn:.1f} A above setpoint {allowed:.1f} A; reducing",
                )
            )
            return
        s.faulted = True
        s.fault_reason = f"overcurrent: drawing {drawn:.1f} A, allowed {allowed:.1f} A"
        new_faults.append(b.bay_id)
        audit.append(
            AuditRecord(
                now,
                wall,
                b.bay_id,
                s.setpoint,
                s.setpoint,
                "overcurrent_fault",
                detail=s.fault_reason + "; relay off",
            )
        )
