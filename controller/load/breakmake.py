"""Break before make: what each bay may still draw, and what that leaves for increases.

A vehicle keeps drawing its old current until its node applies a decrease and
the vehicle follows it. So a bay counts, on every circuit and phase it loads,
at the highest of what it is measured to draw, its setpoint, and — until the
node acknowledges the decrease or ``ev_response_s`` has passed — the setpoint
it had before. Increases and new starts are funded only from what the
allocation's budget leaves above those amounts.

One more term keeps that budget honest: the allocation estimates the building
load as grid reading minus the bays' measured currents, and a bay's telemetry
may still show a current its vehicle has since left (the grid meter sees the
drop first). Until the measurement is younger than the decrease plus the EV
response (and the grid meter timeout, for a frame older than its stamp), the
difference down to the decreased setpoint is counted as drawn too.

Pure: times are the controller's monotonic seconds, passed in.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from controller.load.allocate import BayInput
from controller.load.model import Amps3, SiteConfig
from controller.load.topology import Topology

_EPS = 1e-6
_ZERO3: Amps3 = (0.0, 0.0, 0.0)
_KEEP_DECREASES_S = 60.0
"""Beyond an EV response: no measurement that old is fresh."""


def floor_res(x: float) -> float:
    # Setpoints have 0.1 A resolution; rounding down keeps every sum within its room.
    return math.floor(x * 10.0 + 1e-6) / 10.0


@dataclass(slots=True)
class Follow:
    """One bay's decreases that its node or vehicle may not have followed yet."""

    unacked_a: float = 0.0
    """The setpoint before a decrease the node has not acknowledged yet (0: none)."""
    since: float = -1e18
    """When the latest decrease was decided."""
    decreases: deque[tuple[float, float]] = dataclasses.field(default_factory=deque)
    """(when, to what) of recent decreases, values rising left to right: each is the lowest
    setpoint since its time (a later, lower decrease drops the earlier, higher ones)."""

    def copy(self) -> Follow:
        return Follow(self.unacked_a, self.since, deque(self.decreases))

    def decreased(self, now: float, old: float, new: float, site: SiteConfig) -> None:
        # Until the node confirms, the vehicle may draw whatever it was last allowed.
        self.unacked_a = max(old, self.unacked_a)
        self.since = now
        while self.decreases and self.decreases[-1][1] >= new:
            self.decreases.pop()
        self.decreases.append((now, new))
        while self.decreases[0][0] < now - site.ev_response_s - _KEEP_DECREASES_S:
            self.decreases.popleft()

    def settle(self, now: float, b: BayInput, setpoint: float, site: SiteConfig) -> None:
        """Stop counting the old value once the node confirmed the cut or the EV response passed."""
        if self.unacked_a <= 0.0:
            return
        acked = (
            b.acked_a is not None
            and b.acked_at is not None
            and b.acked_at >= self.since
            and b.acked_a <= setpoint + _EPS
        )
        if acked or now - self.since >= site.ev_response_s:
            self.unacked_a = 0.0

    def counted(
        self, now: float, b: BayInput | None, setpoint: float, site: SiteConfig
    ) -> tuple[Amps3, Amps3]:
        """Per phase, what the bay counts for: (what it may draw, what its telemetry overstates)."""
        floor = max(setpoint, self.unacked_a)
        if b is None or not b.measured_fresh:
            return (floor, floor, floor), _ZERO3
        m = b.measured_a
        draw = (max(m[0], floor), max(m[1], floor), max(m[2], floor))
        if not b.active or not self.decreases:
            return draw, _ZERO3  # inactive: the allocation did not subtract it from the grid
        seen = b.measured_at if b.measured_at is not None else now - site.grid_meter_timeout_s
        # A decrease the vehicle may have followed after this measurement was taken: the grid
        # reading may already show the lower draw, the measurement not yet. A frame is stamped
        # when received, and what it carries may be older: as old as a reading may be to count.
        since = seen - site.ev_response_s - site.grid_meter_timeout_s
        low = next((v for at, v in self.decreases if at >= since), None)
        if low is None:
            return draw, _ZERO3
        return draw, (max(0.0, m[0] - low), max(0.0, m[1] - low), max(0.0, m[2] - low))


class Budget:
    """What the allocation's budget leaves on every circuit and phase once every bay is counted."""

    def __init__(
        self,
        topology: Topology,
        caps_a: tuple[float, ...],
        counted: Mapping[str, tuple[Amps3, Amps3]],
        station_caps_a: Amps3 | None = None,
    ) -> None:
        """``caps_a``: the circuits' (three per circuit, by phase); ``station_caps_a``: what the
        whole station may draw per phase (the lower of its site lease and the OCPP cap), which
        every bay loads on its phases: a cut lease funds no start before the cut bays follow."""
        self._topo = topology
        assert len(caps_a) % 3 == 0
        self._caps = list(caps_a)
        self._cons: dict[str, tuple[int, ...]] = {}
        station = len(caps_a)
        if station_caps_a is not None:
            self._caps += list(station_caps_a)
        for spec in topology.bays:
            cons = topology.bay_tree_cons[spec.index]
            if station_caps_a is not None:
                cons = cons + tuple(station + p for p in spec.phases)
            self._cons[spec.id] = cons
        self._used = [0.0] * len(self._caps)
        self._draw: dict[str, list[float]] = {}
        for spec in topology.bays:
            draw, extra = counted[spec.id]
            for c in self._cons[spec.id]:
                p = c % 3
                self._used[c] += draw[p] + extra[p]
            self._draw[spec.id] = list(draw)

    def most(self, bay_id: str) -> float:
        """The highest setpoint the bay may have now (floored to the setpoint resolution)."""
        draw = self._draw[bay_id]
        cons = self._cons[bay_id]
        return floor_res(min(draw[c % 3] + self._caps[c] - self._used[c] for c in cons))

    def take(self, bay_id: str, amps: float) -> None:
        """The bay now has ``amps``: count it."""
        topo = self._topo
        spec = topo.bays[topo.bay_index[bay_id]]
        draw = self._draw[bay_id]
        for c in self._cons[bay_id]:
            self._used[c] += max(0.0, amps - draw[c % 3])
        for p in spec.phases:
            draw[p] = max(draw[p], amps)
