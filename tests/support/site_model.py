"""A physical model of a charging site around the pure load controller, on a fake clock.

What it models, per bay: the controller's setpoint reaches the node after a link
delay and the node acknowledges it then (its pilot changes); the vehicle follows
each pilot change only after its own lag (0 to ``ev_lag_max_s``, in order: a
change never overtakes the previous one, and a pending rise is capped by a
lower pilot that follows it) and draws ``min(pilot, accept)``. The
grid meter reports the site one meter period late; the bays' telemetry reports
the vehicles later still (``telemetry_lag_periods``), so the grid sees a new
draw before the bay's own measurement does — the worst case for the
controller's estimate of the building load.

The model only observes: the controller gets exactly what a station would give
it (grid reading, measured currents, what each node acknowledged and when).
"""

from __future__ import annotations

import datetime as dt
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller.load.allocate import BayInput, GridInput
from controller.load.controller import LoadController, StepInput, StepResult
from controller.ports import Freshness

Amps3 = tuple[float, float, float]
DAY0 = dt.datetime(2026, 3, 2)


@dataclass
class SimBay:
    bay_id: str
    phases: tuple[int, ...]
    sessions: Sequence[tuple[float, float, float]]
    """(start s, end s, what the vehicle accepts in A)."""
    pilot_a: float = 0.0
    """What the node applies (the control pilot)."""
    follow_a: float = 0.0
    """The pilot as the vehicle has followed it so far."""
    draw_a: float = 0.0
    current: tuple[float, float, float] | None = None
    acked_a: float | None = None
    acked_at: float | None = None
    last_cmd_a: float = 0.0
    to_node: deque[tuple[float, float]] = field(default_factory=deque)
    to_vehicle: deque[tuple[float, float]] = field(default_factory=deque)
    last_effect_at: float = 0.0

    def session(self, t: float) -> tuple[float, float, float] | None:
        for s in self.sessions:
            if s[0] <= t < s[1]:
                return s
        return None


@dataclass
class Exceedance:
    worst_ratio: float = 0.0
    worst_at: float = 0.0
    longest_over_s: float = 0.0
    """Longest run above the limit."""
    longest_over_105_s: float = 0.0
    """Longest run above 1.05 × the limit."""
    events: int = 0
    unexplained: list[tuple[float, float]] = field(default_factory=list)
    """(time, ratio) above the limit with no building step beyond the reserve to explain it."""


class SiteModel:
    def __init__(
        self,
        ctl: LoadController,
        bays: list[SimBay],
        building: Callable[[int], Amps3],
        *,
        rng: random.Random,
        period_s: float = 0.25,
        ev_lag_max_s: float = 5.0,
        link_s: tuple[float, float] = (0.02, 0.3),
        telemetry_lag_periods: int = 2,
        renew_s: float = 1.0,
        modes: Callable[[str], BayInput] | None = None,
    ) -> None:
        self.ctl = ctl
        self.bays = bays
        self.building = building
        self.rng = rng
        self.period_s = period_s
        self.ev_lag_max_s = ev_lag_max_s
        self.link_s = link_s
        self.renew_s = renew_s
        site = ctl.config.site
        self.limit: Amps3 = site.main_limit_a
        self.reserve = site.main_reserve_a
        self.site_phases = site.phase_indices
        self.k = 0
        self.grid_hist: deque[Amps3] = deque(maxlen=2)
        self.tel_hist: deque[list[Amps3]] = deque(maxlen=telemetry_lag_periods + 1)
        self.telemetry_lag_periods = telemetry_lag_periods
        self.build_hist: deque[Amps3] = deque()
        # A building rise beyond the reserve may show at the breaker until the
        # controller has seen it (two periods), the node has it (link) and the EV followed.
        self.window_s = 2 * period_s + link_s[1] + ev_lag_max_s + period_s
        self.exc = Exceedance()
        self._run_over = 0
        self._run_105 = 0
        self.last: StepResult | None = None
        self.energy_ah = 0.0
        self.waiting_since: dict[str, float] = {}
        self.longest_wait_s = 0.0
        """Longest a bay the allocation wanted on stayed off (break before make holding it)."""

    def run(self, seconds: float) -> Exceedance:
        for _ in range(int(seconds / self.period_s)):
            self.tick()
        return self.exc

    def tick(self) -> StepResult:
        t = self.k * self.period_s
        for b in self.bays:
            self._node_and_vehicle(b, t)
        build = self.building(self.k)
        site = list(build)
        for b in self.bays:
            for p in b.phases:
                site[p] += b.draw_a
            self.energy_ah += b.draw_a * len(b.phases) * self.period_s / 3600.0
        self._observe(t, build, (site[0], site[1], site[2]))
        draws = [tuple(b.draw_a if p in b.phases else 0.0 for p in range(3)) for b in self.bays]
        self.tel_hist.append(draws)  # type: ignore[arg-type]
        self.grid_hist.append((site[0], site[1], site[2]))

        # What the station would hand the controller now: a grid reading one period
        # old, telemetry older still, and each node's last acknowledgement.
        grid = self.grid_hist[0]
        tel = self.tel_hist[0]
        inputs = []
        for i, b in enumerate(self.bays):
            sess = b.session(t)
            inputs.append(
                BayInput(
                    b.bay_id,
                    active=sess is not None,
                    measured_a=tel[i] if i < len(tel) else (0.0, 0.0, 0.0),
                    # Stamped on receipt, like the station does: it shows the vehicle as it
                    # was telemetry_lag_periods earlier.
                    measured_at=t,
                    session_order=int(sess[0] * 1000) if sess else 0,
                    acked_a=b.acked_a,
                    acked_at=b.acked_at,
                )
            )
        res = self.ctl.step(
            t,
            StepInput(
                bays=tuple(inputs),
                grid=GridInput(
                    tuple(grid[p] if p in self.site_phases else None for p in range(3)),  # type: ignore[arg-type]
                    Freshness.FRESH,
                    t,
                ),
                wall_time=DAY0 + dt.timedelta(seconds=t),
            ),
        )
        for b in self.bays:
            v = res.setpoints_a[b.bay_id]
            if res.targets_a[b.bay_id] > 0.0 and v == 0.0:
                since = self.waiting_since.setdefault(b.bay_id, t)
                self.longest_wait_s = max(self.longest_wait_s, t - since)
            else:
                self.waiting_since.pop(b.bay_id, None)
            if v != b.last_cmd_a:
                b.to_node.append((t + self.rng.uniform(*self.link_s), v))
                b.last_cmd_a = v
        self.last = res
        self.k += 1
        return res

    def _node_and_vehicle(self, b: SimBay, t: float) -> None:
        while b.to_node and b.to_node[0][0] <= t:
            at, v = b.to_node.popleft()
            b.pilot_a, b.acked_a, b.acked_at = v, v, at
            # A vehicle still on its way up never goes above the pilot it now sees.
            b.to_vehicle = deque((e, min(x, v)) for e, x in b.to_vehicle)
            eff = max(at + self.rng.uniform(0.0, self.ev_lag_max_s), b.last_effect_at)
            b.last_effect_at = eff
            b.to_vehicle.append((eff, v))
        if b.acked_at is not None and not b.to_node and t - b.acked_at >= self.renew_s:
            b.acked_at = t  # lease renewal: the node confirms the same output again
        sess = b.session(t)
        if sess != b.current:
            # A vehicle that arrives sees the pilot as it is now; one that leaves draws nothing.
            b.current = sess
            b.to_vehicle.clear()
            b.follow_a, b.last_effect_at = b.pilot_a, t
        while b.to_vehicle and b.to_vehicle[0][0] <= t:
            b.follow_a = b.to_vehicle.popleft()[1]
        b.draw_a = min(b.follow_a, sess[2]) if sess else 0.0

    def _observe(self, t: float, build: Amps3, site: Amps3) -> None:
        self.build_hist.append(build)
        keep = int(self.window_s / self.period_s) + 1
        while len(self.build_hist) > keep:
            self.build_hist.popleft()
        ratio = max(site[p] / self.limit[p] for p in self.site_phases)
        e = self.exc
        if ratio > e.worst_ratio:
            e.worst_ratio, e.worst_at = ratio, t
        if ratio > 1.0 + 1e-9:
            self._run_over += 1
            if self._run_over == 1:
                e.events += 1
            e.longest_over_s = max(e.longest_over_s, self._run_over * self.period_s)
            rise = max(
                build[p] - min(h[p] for h in self.build_hist) - self.reserve[p]
                for p in self.site_phases
            )
            over = max(site[p] - self.limit[p] for p in self.site_phases)
            if over > max(rise, 0.0) + 1e-6:
                e.unexplained.append((t, ratio))
        else:
            self._run_over = 0
        if ratio > 1.05 + 1e-9:
            self._run_105 += 1
            e.longest_over_105_s = max(e.longest_over_105_s, self._run_105 * self.period_s)
        else:
            self._run_105 = 0
