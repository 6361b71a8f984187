"""LoadController: :func:`allocate` plus time — ramps, anti-flapping, overcurrent, audit.

Pure apart from its own memory: no I/O, no clock. The station calls
:meth:`LoadController.step` on every grid-meter reading with the monotonic time
and a snapshot, sends the returned setpoints to the nodes (as leases) and writes
the audit records to the journal.

What time adds to the allocation, and why it stays safe: the commanded setpoint
of a bay is never above the allocation's target (decreases go out at once,
increases only ramp towards the target), so every limit the allocation keeps
is kept by the commanded setpoints too.
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
    Reason,
    allocate,
)
from controller.load.model import LoadConfig
from controller.load.rules import RuleConflict, active_rules
from controller.load.topology import Topology
from controller.ports import Freshness

_HOUR_S = 3600.0


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
        for b in inp.bays:
            s = self._bays[b.bay_id]
            self._check_overcurrent(now, wall, b, s, audit, new_faults)
            while s.starts and s.starts[0] <= now - _HOUR_S:
                s.starts.popleft()
            on = s.setpoint > 0.0
            can_start = (
                now - s.off_since >= site.min_off_time_s
                and len(s.starts) < site.relay_cycles_per_hour
            )
            bays.append(
                dataclasses.replace(
                    b,
                    can_start=can_start,
                    keep_on=on and now - s.on_since < site.min_on_time_s,
                    cap_a=s.min_a if s.reduced else None,
                    faulted=b.faulted or s.faulted,
                    # A bay session that ended resets the reduction of its overcurrent episode.
                )
            )
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
                rotation=self._rotation,
                rotate=rotate,
            )
        )
        self._rotation = alloc.rotation

        for bid, s in self._bays.items():
            target = alloc.setpoints_a[bid]
            old = s.setpoint
            new, reason, source = self._apply_time(now, s, target, alloc.limits[bid])
            if new != old:
                audit.append(AuditRecord(now, wall, bid, old, new, reason, source))

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

    def _apply_time(
        self, now: float, s: _Bay, target: float, limit: tuple[Reason, str]
    ) -> tuple[float, str, str]:
        site = self.config.site
        old = s.setpoint
        if target < old:
            s.setpoint = target
            s.pending_since, s.ramping = None, False
            s.decreased_from, s.decreased_at = (
                max(old, s.decreased_from if now - s.decreased_at < site.ev_response_s else 0.0),
                now,
            )
            if target <= 0.0:
                s.off_since = now
            return target, str(limit[0]), limit[1]
        if target == old:
            s.pending_since, s.ramping = None, False
            return old, "", ""
        if old <= 0.0:
            # Switching on: the allocation already checked minimum off time and the
            # cycle budget; start at the minimum and ramp from there.
            s.setpoint = min(target, s.min_a)
            s.on_since = now
            s.starts.append(now)
            s.cycles_total += 1
            s.pending_since, s.ramping = None, False
            return s.setpoint, "start", limit[1]
        if not s.ramping:
            if target - old > site.increase_hysteresis_a:
                if s.pending_since is None:
                    s.pending_since = now
                if now - s.pending_since >= site.increase_delay_s:
                    s.ramping = True
            else:
                s.pending_since = None
        if not s.ramping:
            return old, "", ""
        s.setpoint = min(target, old + site.ramp_step_a)
        if s.setpoint >= target:
            s.ramping, s.pending_since = False, None
        return s.setpoint, "ramp_up", f"{limit[0]}:{limit[1]}" if limit[1] else str(limit[0])

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
