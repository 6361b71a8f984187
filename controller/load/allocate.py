"""The allocation: one pure function from a snapshot of the site to a setpoint per bay.

Safety model (all currents per phase):

* non-EV load at the main breaker = grid − measured current of the active bays
  (never negative; a bay whose measurement is not fresh is not subtracted);
* a circuit has no meter of its own, so its non-EV load is bounded by what is
  known: at most the non-EV load of its parent, and at most ``limit −
  guaranteed_headroom`` (the owner's guarantee);
* when the grid meter has FAILED (or a value of a phase the site is supplied
  on is missing: a single-phase site reads L1 only) the main
  breaker's non-EV load is taken as ``limit − fallback budget``: only guaranteed
  headroom is handed out. STALE or FAILED never raise a setpoint above the
  previous one;
* every bay set to run has reserved its minimum current on each circuit and
  phase it loads before anyone gets more (admission), so the sum of setpoints
  never exceeds ``limit − non-EV`` anywhere.

Fairness: admission follows (kept-on by minimum on time, confirmed Boost, rotation
queue); the rest is water-filled (max-min fair) per class: Boost to its maximum
first, then Standard/Eco, then Solar from the PV surplus.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from controller.load.model import PHASES, Amps3, RuleConfig
from controller.load.rules import RuleConflict, resolve_rules
from controller.load.topology import Topology
from controller.ports import Freshness, MeterReading

_EPS = 1e-7
_NO_PREVIOUS: Mapping[str, float] = MappingProxyType({})


class Mode(enum.StrEnum):
    STANDARD = "standard"
    ECO = "eco"
    BOOST = "boost"
    SOLAR = "solar"


class Reason(enum.StrEnum):
    """Why a bay has its setpoint: the limit that binds (or the cause of a pause)."""

    INACTIVE = "inactive"
    FAULTED = "faulted"
    BAY_MAX = "bay_max"
    ECO_CAP = "eco_cap"
    RULE = "rule"
    EXTERNAL_CAP = "external_cap"
    STATION_CAP = "station_cap"
    SITE_LEASE = "site_lease"
    CONTROLLER_CAP = "controller_cap"
    METER_STALE = "grid_meter_stale"
    METER_FAILED = "grid_meter_failed"
    ANTI_FLAP = "anti_flap"
    SHORTAGE = "shortage"
    CIRCUIT_LIMIT = "circuit_limit"
    SITE_POWER = "site_power_cap"
    SOLAR_SURPLUS = "solar_surplus"
    SOLAR_NO_SURPLUS = "solar_no_surplus"


@dataclass(frozen=True, slots=True)
class BayInput:
    """One bay's state for this allocation. Unknown bays (not in the topology) are an error."""

    bay_id: str
    active: bool = False
    """A session is running and the vehicle is demanding current."""
    mode: Mode = Mode.STANDARD
    measured_a: Amps3 = (0.0, 0.0, 0.0)
    measured_fresh: bool = True
    measured_at: float | None = None
    """When ``measured_a`` was received (monotonic s); None: as old as the grid meter timeout."""
    boost_confirmed: bool = False
    session_order: int = 0
    """Lower = the session started earlier; orders newcomers in the rotation queue."""
    external_cap_a: float | None = None
    """OCPP charging profile limit (TxProfile / TxDefaultProfile) for this bay; None = none."""
    can_start: bool = True
    """False while minimum off time or the relay-cycle budget forbid switching on."""
    keep_on: bool = False
    """True while minimum on time asks to keep a running bay on (unless capacity forbids)."""
    cap_a: float | None = None
    """A cap imposed by the controller itself (overcurrent reduction)."""
    faulted: bool = False
    acked_a: float | None = None
    """What the node last confirmed it applies (A; 0 = relay off); None = nothing confirmed."""
    acked_at: float | None = None
    """When the node confirmed ``acked_a`` (monotonic s, the controller's clock)."""
    assumed_a: float = 0.0
    """Current per phase the bay may draw that the station cannot command now (a wallbox
    whose link is lost: its maximum, or its fallback limit); reserved on its circuits."""


@dataclass(frozen=True, slots=True)
class GridInput:
    """Grid meter at the main breaker: current per phase and how far to trust it."""

    current_a: tuple[float | None, float | None, float | None]
    freshness: Freshness
    at: float | None = None

    @classmethod
    def from_reading(cls, reading: MeterReading) -> GridInput:
        if reading.sample is None:
            return cls((None, None, None), Freshness.FAILED, reading.at)
        return cls(reading.sample.current_a, reading.freshness, reading.at)


@dataclass(frozen=True, slots=True)
class AllocationInput:
    topology: Topology
    bays: tuple[BayInput, ...]
    grid: GridInput
    previous_a: Mapping[str, float] = field(default_factory=lambda: _NO_PREVIOUS)
    """The setpoints currently in force (what the nodes were told)."""
    rules: tuple[RuleConfig, ...] = ()
    """The owner rules active now (see :func:`controller.load.rules.active_rules`)."""
    pv_surplus_w: float | None = None
    """PV power available to Solar bays: export at the grid plus what Solar bays draw now."""
    pv_freshness: Freshness = Freshness.FAILED
    station_cap_a: float | None = None
    """OCPP ChargePointMaxProfile limit per phase for the whole station; None = none."""
    lease_a: Amps3 | None = None
    """The station's share of a site shared with other stations (controller.load.lease), per
    phase; None = none. Composes with ``station_cap_a``: the lower binds."""
    rotation: tuple[str, ...] = ()
    rotate: bool = False
    """Start a new rotation slot: bays that wait for lack of capacity go to the front."""


@dataclass(frozen=True, slots=True)
class Decision:
    """One change of setpoint, for the audit log."""

    bay_id: str
    old_a: float
    new_a: float
    reason: Reason
    source: str = ""
    """Rule id, ``"<node>:<phase>"`` or other detail of the reason."""


@dataclass(frozen=True, slots=True)
class Allocation:
    setpoints_a: Mapping[str, float]
    """Every bay of the topology: 0 (paused) or within [min, max]."""
    limits: Mapping[str, tuple[Reason, str]]
    """Every bay: what binds its setpoint (or why it is paused)."""
    decisions: tuple[Decision, ...]
    conflicts: tuple[RuleConflict, ...]
    rotation: tuple[str, ...]
    grid_freshness: Freshness
    """What was used: FAILED also when a phase value was missing."""
    ev_budget_a: Mapping[str, float]
    """``"<node>:<phase>"`` -> current available to the bays (limit − non-EV estimate)."""
    caps_a: tuple[float, ...] = ()
    """The same budgets indexed by tree constraint (``node * 3 + phase``), for the controller."""
    station_caps_a: Amps3 | None = None
    """What all bays together may draw per phase: the lower of the site lease and the OCPP
    station cap (None: neither is set), for the controller's break before make."""


def _floor_res(x: float) -> float:
    # Rounding down keeps every sum within its limit; the epsilon stops 7.3 becoming 7.2.
    return math.floor(x * 10.0 + 1e-6) / 10.0


def allocate(inp: AllocationInput) -> Allocation:
    topo = inp.topology
    site = topo.config.site
    specs = topo.bays
    n = len(specs)
    volts = site.nominal_voltage_v
    state: list[BayInput | None] = [None] * n
    for b in inp.bays:
        state[topo.bay_index[b.bay_id]] = b
    prev = [inp.previous_a.get(s.id, 0.0) for s in specs]

    # --- capacities of the tree -------------------------------------------------------
    freshness = inp.grid.freshness
    grid = inp.grid.current_a
    if any(grid[p] is None for p in topo.site_phases):
        freshness = Freshness.FAILED
    nnodes = len(topo.node_ids)
    ntree = nnodes * 3
    caps: list[float] = [0.0] * ntree
    nonev: list[float] = [0.0] * ntree
    reserve = site.main_reserve_a
    for p in range(3):
        lim0 = topo.node_limit[0][p]
        if freshness is Freshness.FAILED:
            v = lim0 - topo.node_headroom[0][p]
        else:
            ev = 0.0
            for i in topo.tree_members[p]:
                st = state[i]
                if st is not None and st.active and st.measured_fresh:
                    ev += st.measured_a[p]
            g = grid[p]
            # A phase the site is not supplied on carries no bay (validated) and no reading.
            v = g - ev if g is not None else 0.0
        nonev[p] = v if v > 0.0 else 0.0
    for k in range(1, nnodes):
        par = topo.node_parent[k]
        lim = topo.node_limit[k]
        head = topo.node_headroom[k]
        for p in range(3):
            v = min(nonev[par * 3 + p], lim[p] - head[p])
            nonev[k * 3 + p] = v if v > 0.0 else 0.0
    for k in range(nnodes):
        lim = topo.node_limit[k]
        for p in range(3):
            c = lim[p] - nonev[k * 3 + p]
            caps[k * 3 + p] = c if c > 0.0 else 0.0
    if freshness is not Freshness.FAILED:
        # The reserve covers building load steps until the EVs follow a cut; with a
        # failed meter the fallback budget is already the whole allowance.
        for p in range(3):
            caps[p] = max(0.0, caps[p] - reserve[p])
    for i, st in enumerate(state):
        if st is not None and st.assumed_a > 0.0:
            # A bay out of reach draws what it likes up to this: it is counted on top of
            # what the meter sees (its present draw is in that reading too), never under.
            for c in topo.bay_tree_cons[i]:
                caps[c] = max(0.0, caps[c] - st.assumed_a)
    labels: list[tuple[Reason, str]] = [(Reason.CIRCUIT_LIMIT, lab) for lab in topo.labels]

    # --- rules and per-bay upper bounds -----------------------------------------------
    rules = resolve_rules(
        inp.rules,
        [s.id for s in specs],
        {s.id: s.min_a for s in specs},
    )
    ub = [0.0] * n
    limits: list[tuple[Reason, str]] = [(Reason.INACTIVE, "")] * n
    bay_cons: list[list[tuple[int, float]]] = [
        [(c, 1.0) for c in topo.bay_tree_cons[i]] for i in range(n)
    ]
    cls = [1] * n
    candidates: list[int] = []
    active_ids: list[str] = []
    eco = site.eco_current_a
    meter_reason = Reason.METER_STALE if freshness is Freshness.STALE else Reason.METER_FAILED

    for i, s in enumerate(specs):
        st = state[i]
        if st is None or not st.active:
            continue
        active_ids.append(s.id)
        if st.faulted:
            limits[i] = (Reason.FAULTED, "")
            continue
        u, why = s.max_a, (Reason.BAY_MAX, "")
        if st.mode is Mode.ECO and eco < u:
            u, why = eco, (Reason.ECO_CAP, "")
        rc = rules.bay_caps.get(s.id)
        if rc is not None and rc[0] < u:
            u, why = rc[0], (Reason.RULE, rc[1])
        if st.external_cap_a is not None and st.external_cap_a < u:
            u, why = max(st.external_cap_a, 0.0), (Reason.EXTERNAL_CAP, "")
        if st.cap_a is not None and st.cap_a < u:
            u, why = max(st.cap_a, 0.0), (Reason.CONTROLLER_CAP, "")
        if freshness is not Freshness.FRESH and prev[i] < u:
            u, why = prev[i], (meter_reason, "")
        ub[i] = u
        limits[i] = why
        if u < s.min_a - _EPS:
            continue
        if prev[i] <= 0.0 and not st.can_start:
            limits[i] = (Reason.ANTI_FLAP, "")
            continue
        if st.mode is Mode.BOOST and st.boost_confirmed:
            cls[i] = 0
        elif st.mode is Mode.SOLAR:
            cls[i] = 2
        candidates.append(i)

    # --- station-wide constraints: OCPP station cap, power cap rule, solar surplus -----
    ncons = ntree
    station_caps: Amps3 | None = None
    if inp.station_cap_a is not None or inp.lease_a is not None:
        for p in range(3):
            # The lower of the OCPP station cap and the site lease binds (a tie: the OCPP cap).
            cap_p, binds = math.inf, Reason.STATION_CAP
            if inp.station_cap_a is not None:
                cap_p = inp.station_cap_a
            if inp.lease_a is not None and inp.lease_a[p] < cap_p:
                cap_p, binds = inp.lease_a[p], Reason.SITE_LEASE
            caps.append(max(cap_p, 0.0))
            labels.append((binds, PHASES[p]))
        station_caps = (caps[ntree], caps[ntree + 1], caps[ntree + 2])
        for i in candidates:
            for p in specs[i].phases:
                bay_cons[i].append((ntree + p, 1.0))
        ncons += 3
    if rules.site_power is not None:
        caps.append(rules.site_power[0] / volts)
        labels.append((Reason.SITE_POWER, rules.site_power[1]))
        for i in candidates:
            bay_cons[i].append((ncons, float(len(specs[i].phases))))
        ncons += 1
    solar_c = -1
    if any(cls[i] == 2 for i in candidates):
        surplus = inp.pv_surplus_w if inp.pv_freshness is Freshness.FRESH else None
        # A missing surplus is no surplus, never an unlimited one.
        caps.append(max(surplus or 0.0, 0.0) / volts)
        labels.append((Reason.SOLAR_SURPLUS, ""))
        solar_c = ncons
        for i in candidates:
            if cls[i] == 2:
                bay_cons[i].append((solar_c, float(len(specs[i].phases))))
        ncons += 1

    # --- rotation queue and admission at minimum current ------------------------------
    known = set(active_ids)
    queue = [b for b in inp.rotation if b in known]
    queued = set(queue)
    newcomers = [i for i in range(n) if specs[i].id in known and specs[i].id not in queued]
    newcomers.sort(key=lambda i: (_order(state[i]), specs[i].id))
    queue.extend(specs[i].id for i in newcomers)
    pos = {b: k for k, b in enumerate(queue)}

    def admission_key(i: int) -> tuple[int, int, int]:
        st = state[i]
        assert st is not None
        return (
            0 if st.keep_on and prev[i] > 0.0 else 1,
            0 if cls[i] == 0 else 1,
            pos[specs[i].id],
        )

    candidates.sort(key=admission_key)
    used = [0.0] * ncons
    x = [0.0] * n
    admitted: list[int] = []
    waiting: set[str] = set()
    start_w = site.solar_start_margin_w / volts
    stop_w = site.solar_stop_margin_w / volts
    for i in candidates:
        m = specs[i].min_a
        fail = -1
        for c, coef in bay_cons[i]:
            cap = caps[c]
            if c == solar_c:
                # Hysteresis: start only with margin to spare, stop only well below.
                cap += stop_w if prev[i] > 0.0 else -start_w
            if used[c] + coef * m > cap + _EPS:
                fail = c
                break
        if fail >= 0:
            if fail == solar_c:
                limits[i] = (Reason.SOLAR_NO_SURPLUS, "")
            else:
                limits[i] = (Reason.SHORTAGE, labels[fail][1])
                waiting.add(specs[i].id)
            continue
        for c, coef in bay_cons[i]:
            used[c] += coef * m
        x[i] = m
        admitted.append(i)

    # --- water-filling, class by class ------------------------------------------------
    for klass in (0, 1, 2):
        group = [i for i in admitted if cls[i] == klass]
        if group:
            _fill(group, x, ub, caps, used, bay_cons, limits, labels)

    setpoints: dict[str, float] = {}
    decisions: list[Decision] = []
    for i, s in enumerate(specs):
        v = x[i]
        if v > 0.0:
            v = max(_floor_res(v), s.min_a)
        setpoints[s.id] = v
        if abs(v - prev[i]) > 1e-9:
            reason, source = limits[i]
            decisions.append(Decision(s.id, prev[i], v, reason, source))

    if inp.rotate and waiting:
        queue = [b for b in queue if b in waiting] + [b for b in queue if b not in waiting]
    budgets = {topo.labels[c]: caps[c] for c in range(ntree)}
    return Allocation(
        setpoints_a=setpoints,
        limits={s.id: limits[i] for i, s in enumerate(specs)},
        decisions=tuple(decisions),
        conflicts=rules.conflicts,
        rotation=tuple(queue),
        grid_freshness=freshness,
        ev_budget_a=budgets,
        caps_a=tuple(caps[:ntree]),
        station_caps_a=station_caps,
    )


def _order(st: BayInput | None) -> int:
    return st.session_order if st is not None else 0


def _fill(
    group: list[int],
    x: list[float],
    ub: list[float],
    caps: list[float],
    used: list[float],
    bay_cons: list[list[tuple[int, float]]],
    limits: list[tuple[Reason, str]],
    labels: list[tuple[Reason, str]],
) -> None:
    """Max-min fair progressive filling of ``group`` from its current ``x`` (their minimums).

    The lowest bays rise together until a bay reaches its upper bound or a
    constraint saturates; then those bays freeze and the rest continue.
    """
    unfrozen = [i for i in group if x[i] < ub[i] - _EPS]
    guard = 4 * (len(group) + len(caps)) + 8
    while unfrozen and guard > 0:
        guard -= 1
        level = min(x[i] for i in unfrozen)
        rising = [i for i in unfrozen if x[i] <= level + _EPS]
        grow: dict[int, float] = {}
        for i in rising:
            for c, coef in bay_cons[i]:
                grow[c] = grow.get(c, 0.0) + coef
        delta = math.inf
        for i in unfrozen:
            if x[i] > level + _EPS and x[i] - level < delta:
                delta = x[i] - level
        for i in rising:
            if ub[i] - level < delta:
                delta = ub[i] - level
        for c, g in grow.items():
            slack = caps[c] - used[c]
            d = slack / g if slack > 0.0 else 0.0
            if d < delta:
                delta = d
        if delta < 0.0:
            delta = 0.0
        new_level = level + delta
        for i in rising:
            x[i] = new_level
        saturated: set[int] = set()
        for c, g in grow.items():
            used[c] += g * delta
            if caps[c] - used[c] <= _EPS:
                saturated.add(c)
        frozen: set[int] = set()
        for i in rising:
            if x[i] >= ub[i] - _EPS:
                x[i] = ub[i]
                frozen.add(i)
                continue
            for c, _ in bay_cons[i]:
                if c in saturated:
                    limits[i] = labels[c]
                    frozen.add(i)
                    break
        if frozen:
            unfrozen = [i for i in unfrozen if i not in frozen]
