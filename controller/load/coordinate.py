"""The site coordinator's logic: one site limit, several stations, a lease per station.

Pure (every method takes ``now``, the coordinator's monotonic clock). The MQTT
runner lives in ``drivers/sitelease``; the wire format and the stations' side
in :mod:`controller.load.lease`.

What it computes, per phase, on every site-meter report (and at least once a
period):

* **available** to all chargers together: ``limit − reserve − non-EV load``,
  the non-EV load being the site meter minus what the stations report their
  bays draw. Without a fresh site meter only the site's guaranteed headroom is
  available (as in :mod:`controller.load.allocate`).
* **targets**: every station first gets its guaranteed share (the floor that
  keeps a lapse safe, see below); the rest is water-filled max-min fair by
  demand, never above a station's maximum. If less than the sum of the floors
  is available (the owner's guarantee does not hold), the floors shrink in
  proportion.
* **break before make**: a station's lease rises only into room no other
  station may still be using: each station counts at the highest of what it
  reports it allocates within, what it draws, and every lease sent to it that
  it has not yet confirmed and that has not yet run out. Decreases go out at once.

Why leases never drop below the guaranteed share: when the coordinator or the
broker goes away, each station falls back to ``min(guaranteed, last lease)``
at its own lapse; with every lease at or above the guaranteed share that is a
decrease for everyone, whatever order the stations lapse in, so the sum never
exceeds the sum of the last leases (≤ available) nor the sum of the guaranteed
shares (≤ the site's guaranteed headroom, proven by :func:`check_site_shares`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controller.load.lease import Lease, Report, floor_a
from controller.load.model import PHASES, Amps3, PerPhaseA

_TOPIC_PART = r"^[A-Za-z0-9._-]+$"
_EPS = 1e-6


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StationShare(_Model):
    id: str = Field(min_length=1, pattern=_TOPIC_PART)
    max_a: PerPhaseA
    """The most the station's chargers may take together (its feeder), per phase."""
    guaranteed_a: PerPhaseA
    """Its guaranteed share: where it falls back without a lease. The station's own
    ``[site] main_guaranteed_headroom_a`` must not be above it."""
    config: str | None = None
    """The station's config file, to check it against this share (optional)."""


class CoordinatorConfig(_Model):
    """The ``[coordinator]`` section of the coordinator's config file. Times in seconds."""

    site: str = Field(min_length=1, pattern=_TOPIC_PART)
    main_limit_a: PerPhaseA
    main_guaranteed_headroom_a: PerPhaseA = (0.0, 0.0, 0.0)
    """What the site guarantees free for chargers without a meter."""
    main_reserve_a: PerPhaseA = (0.0, 0.0, 0.0)
    site_meter: str | None = None
    """The station whose grid meter measures the site's main breaker (it reports it)."""
    stations: tuple[StationShare, ...] = Field(min_length=1)
    lease_s: float = Field(default=10.0, ge=1.0, le=600.0)
    period_s: float = Field(default=1.0, gt=0.0, le=60.0)
    report_timeout_s: float = Field(default=3.0, gt=0.0)
    transit_margin_s: float = Field(default=1.0, ge=0.0)
    """How much later than the coordinator thinks a lease may run out at a station
    (broker and network delay, the broker's whole-second expiry)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        ids = [s.id for s in self.stations]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"stations: {', '.join(dup)} listed more than once")
        if self.site_meter is not None and self.site_meter not in ids:
            raise ValueError(f"site_meter: {self.site_meter!r} is not one of the stations")
        if self.period_s >= self.lease_s:
            raise ValueError("period_s: leases must be renewed more often than they last")
        return self


def check_site_shares(cfg: CoordinatorConfig) -> list[str]:
    """The proof, as sentences: on every phase the guaranteed shares of all stations fit the
    headroom the site guarantees without a meter, and each fits its station's maximum."""
    out: list[str] = []
    for p, phase in enumerate(PHASES):
        total = sum(s.guaranteed_a[p] for s in cfg.stations)
        head = cfg.main_guaranteed_headroom_a[p]
        if total > head + _EPS:
            parts = ", ".join(f"{s.id} {s.guaranteed_a[p]:g} A" for s in cfg.stations)
            out.append(
                f"On {phase} the stations' guaranteed shares add up to {total:g} A ({parts}), "
                f"more than the {head:g} A the site guarantees free without a meter: lower a "
                "station's guaranteed share or raise the site's guaranteed headroom."
            )
        if head > cfg.main_limit_a[p] + _EPS:
            out.append(
                f"On {phase} the site's guaranteed headroom of {head:g} A is above its limit of "
                f"{cfg.main_limit_a[p]:g} A."
            )
        for s in cfg.stations:
            if s.guaranteed_a[p] > s.max_a[p] + _EPS:
                out.append(
                    f"On {phase} station {s.id} is guaranteed {s.guaranteed_a[p]:g} A, more than "
                    f"its maximum of {s.max_a[p]:g} A."
                )
    return out


# --------------------------------------------------------------------------- fair share


def fair_share(available: float, floors: list[float], caps: list[float]) -> list[float]:
    """Max-min fair: each gets its floor, then the rest rises evenly up to each cap.

    ``caps`` at or above ``floors``. With less available than the floors, the floors shrink in
    proportion. The sum never exceeds ``max(available, 0)``; results are floored to 0.1 A.
    """
    available = max(available, 0.0)
    total_floor = sum(floors)
    if total_floor >= available:
        k = available / total_floor if total_floor > 0 else 0.0
        return [floor_a(f * k) for f in floors]

    def used(level: float) -> float:
        return sum(max(f, min(c, level)) for f, c in zip(floors, caps, strict=True))

    top = max(caps, default=0.0)
    if used(top) <= available:
        return [floor_a(c) for c in caps]
    lo, hi = 0.0, top
    for _ in range(60):
        mid = (lo + hi) / 2
        if used(mid) <= available:
            lo = mid
        else:
            hi = mid
    return [floor_a(max(f, min(c, lo))) for f, c in zip(floors, caps, strict=True)]


# --------------------------------------------------------------------------- the coordinator


@dataclass(slots=True)
class _Grant:
    seq: int
    phases_a: Amps3
    at: float


@dataclass(slots=True)
class _Station:
    share: StationShare
    report: Report | None = None
    report_at: float = -math.inf
    grants: list[_Grant] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Round:
    """One computation: what was available, where each station is going, what it got."""

    available_a: Amps3
    site_meter_fresh: bool
    targets_a: dict[str, Amps3]
    leases: dict[str, Lease]


class SiteCoordinator:
    def __init__(self, cfg: CoordinatorConfig, *, epoch: int, started: float) -> None:
        self.cfg = cfg
        self.epoch = epoch
        self._started = started
        self._seq = 0
        self._stations = {s.id: _Station(s) for s in cfg.stations}
        self.last: Round | None = None
        self.refused = 0

    def report(self, now: float, report: Report) -> bool:
        """A station's report as received at ``now``; False for a station not configured."""
        st = self._stations.get(report.station)
        if st is None:
            self.refused += 1
            return False
        st.report, st.report_at = report, now
        return True

    def _fresh(self, st: _Station, now: float) -> Report | None:
        if st.report is not None and now - st.report_at <= self.cfg.report_timeout_s:
            return st.report
        return None

    def _held(self, st: _Station, now: float) -> Amps3:
        """The most this station may be drawing now, as far as the coordinator can know."""
        cfg = self.cfg
        life = cfg.lease_s + cfg.transit_margin_s
        st.grants = [g for g in st.grants if now - g.at < life]
        rep = self._fresh(st, now)
        confirmed = -1
        if rep is not None and rep.applied is not None and rep.applied[0] == self.epoch:
            confirmed = rep.applied[1]
            st.grants = [g for g in st.grants if g.seq >= confirmed]
        if rep is None:
            # Silent: within a lease of the coordinator's start, a lease of its previous run
            # may still hold there; later it is on its fallback at the most.
            young = now - self._started < life
            held = list(st.share.max_a if young else st.share.guaranteed_a)
        else:
            held = list(rep.measured_a)
            if rep.applied is None:  # on its fallback: the guaranteed share at the most
                held = [max(h, x) for h, x in zip(held, st.share.guaranteed_a, strict=True)]
            elif rep.applied[0] != self.epoch:  # a lease of another run, of unknown value
                held = [max(h, x) for h, x in zip(held, st.share.max_a, strict=True)]
        for g in st.grants:
            held = [max(h, x) for h, x in zip(held, g.phases_a, strict=True)]
        return (held[0], held[1], held[2])

    def available(self, now: float) -> tuple[Amps3, bool]:
        cfg = self.cfg
        meter = self._stations.get(cfg.site_meter) if cfg.site_meter else None
        rep = self._fresh(meter, now) if meter is not None else None
        if rep is None or rep.grid_a is None:
            return cfg.main_guaranteed_headroom_a, False
        ev = [0.0, 0.0, 0.0]
        for st in self._stations.values():
            r = self._fresh(st, now)
            if r is not None:
                ev = [e + m for e, m in zip(ev, r.measured_a, strict=True)]
        out = []
        for p in range(3):
            nonev = max(0.0, rep.grid_a[p] - ev[p])
            out.append(max(0.0, cfg.main_limit_a[p] - cfg.main_reserve_a[p] - nonev))
        return (out[0], out[1], out[2]), True

    def compute(self, now: float, wall: float) -> Round:
        """New leases for every configured station (each a renewal too)."""
        cfg = self.cfg
        avail, meter_fresh = self.available(now)
        ids = list(self._stations)
        sts = [self._stations[i] for i in ids]
        held = [self._held(st, now) for st in sts]
        targets: list[list[float]] = [[0.0, 0.0, 0.0] for _ in sts]
        grants: list[list[float]] = [[0.0, 0.0, 0.0] for _ in sts]
        for p in range(3):
            floors = [st.share.guaranteed_a[p] for st in sts]
            caps = []
            for st, f in zip(sts, floors, strict=True):
                rep = self._fresh(st, now)
                demand = rep.demand_a[p] if rep is not None else 0.0
                caps.append(max(f, min(st.share.max_a[p], demand)))
            t = fair_share(avail[p], floors, caps)
            budget = avail[p] - sum(h[p] for h in held)
            # Increases from the room nobody may still be using, the lowest lease first.
            order = sorted(range(len(sts)), key=lambda k: (held[k][p], ids[k]))
            for k in order:
                targets[k][p] = t[k]
                if t[k] <= held[k][p] + _EPS:
                    grants[k][p] = t[k]
                    continue
                room = max(0.0, budget)
                g = floor_a(min(t[k], held[k][p] + room))
                grants[k][p] = g
                budget -= max(0.0, g - held[k][p])
        leases: dict[str, Lease] = {}
        for st, gr in zip(sts, grants, strict=True):
            self._seq += 1
            phases = (gr[0], gr[1], gr[2])
            st.grants.append(_Grant(self._seq, phases, now))
            leases[st.share.id] = Lease(
                station=st.share.id,
                phases_a=phases,
                ttl_s=cfg.lease_s,
                epoch=self.epoch,
                seq=self._seq,
                expires=wall + cfg.lease_s,
            )
        rnd = Round(
            available_a=avail,
            site_meter_fresh=meter_fresh,
            targets_a={i: (x[0], x[1], x[2]) for i, x in zip(ids, targets, strict=True)},
            leases=leases,
        )
        self.last = rnd
        return rnd

    def stations(self) -> Iterable[str]:
        return self._stations.keys()


__all__ = [
    "CoordinatorConfig",
    "Round",
    "SiteCoordinator",
    "StationShare",
    "check_site_shares",
    "fair_share",
]
