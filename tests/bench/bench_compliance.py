"""Compliance simulation: 24 h of building load, 8 bays, the LoadController in the loop.

Pure simulation (no sockets), accelerated. Every 0.25 s the grid meter is read;
the reading describes the site as it was one meter period earlier (the worst
case: a load step just missed the sample). Each EV follows a new setpoint
after its own response delay of up to 5 s (FIFO, so commands never overtake),
and draws min(setpoint, what the car accepts).

Measured at the simulated breaker: the worst load as a ratio to its limit, the
longest continuous exceedance, and the *unexplained* excess — how far the site
went above its limit beyond what a building rise exceeding the reserve within
the last two meter periods + EV response can explain. The controller alone
(a newcomer, a rebalance, a ramp) must never add to the load above the limit:
that excess is asserted to be 0 on every trace.

The stress trace (bigger, more frequent appliance steps) runs twice: with the
typical reserve (reported: two steps within one EV response add up to 18.8 A,
which no controller can cut faster than the vehicles follow) and with the
reserve such a building calls for — its largest rise within one meter period +
EV response, less the 5 % tolerance; asserted: worst <= 1.05 and the longest
exceedance <= one meter period + the EV response time (5.25 s).
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pytest

from controller.load.allocate import BayInput, GridInput, Mode
from controller.load.controller import LoadController, StepInput
from controller.load.model import LoadConfig
from controller.ports import Freshness
from tests.bench.report import metric, write_report

PERIOD_S = 0.25
HOURS = 24.0
EV_RESPONSE_MAX_S = 5.0
LIMIT_A = 63.0
RESERVE_A = 4.0
ACK_S = 0.05


@dataclass(frozen=True)
class Trace:
    name: str
    spike_every_s: float
    spike_a: tuple[float, float]


TYPICAL = Trace("typical", spike_every_s=300.0, spike_a=(1.0, 8.0))
STRESS = Trace("stress", spike_every_s=90.0, spike_a=(1.0, 10.0))
SEED = 20260301


def building_trace(rnd: np.random.Generator, ticks: int, trace: Trace) -> np.ndarray:
    """Per tick and phase: a daily curve (morning and evening peaks) plus appliance spikes."""
    hours = np.arange(ticks) * PERIOD_S / 3600.0
    curve = (
        6.0
        + 14.0 * np.exp(-(((hours - 8.0) / 1.5) ** 2))
        + 22.0 * np.exp(-(((hours - 19.0) / 2.0) ** 2))
    )
    load = np.stack([curve * f for f in (1.0, 0.8, 1.2)], axis=1)
    load += rnd.normal(0.0, 0.3, size=load.shape)
    t = 0.0
    end = ticks * PERIOD_S
    while True:
        t += rnd.exponential(trace.spike_every_s)
        if t >= end:
            break
        amp = rnd.uniform(*trace.spike_a)
        dur = max(2.0, rnd.exponential(60.0))
        a, b = int(t / PERIOD_S), min(ticks, int((t + dur) / PERIOD_S))
        if rnd.random() < 0.7:
            load[a:b, rnd.integers(0, 3)] += amp
        else:
            load[a:b, :] += amp
    clipped: np.ndarray = np.clip(load, 0.0, 0.9 * LIMIT_A)
    return clipped


@dataclass
class Ev:
    bay: str
    phases: tuple[int, ...]
    accept_a: float
    delay_s: float
    sessions: list[tuple[float, float]]
    order: int
    draw_a: float = 0.0
    last_cmd: float = 0.0
    acked_a: float | None = None
    acked_at: float | None = None
    queue: deque[tuple[float, float]] = field(default_factory=deque)

    def active(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.sessions)


def make_evs(rnd: random.Random, phases: list[tuple[int, ...]]) -> list[Ev]:
    evs = []
    for i in range(8):
        sessions = []
        t = rnd.uniform(0, 4) * 3600
        while t < HOURS * 3600:
            dur = rnd.uniform(1, 5) * 3600
            sessions.append((t, min(t + dur, HOURS * 3600)))
            t += dur + rnd.uniform(0.2, 3) * 3600
        evs.append(
            Ev(
                bay=f"b{i}",
                phases=phases[i],
                accept_a=rnd.choice([16.0, 16.0, 13.0, 10.0]),
                delay_s=rnd.uniform(0.5, EV_RESPONSE_MAX_S),
                sessions=sessions,
                order=i,
            )
        )
    return evs


def config(reserve_a: float = RESERVE_A) -> LoadConfig:
    return LoadConfig.model_validate(
        {
            "site": {
                "main_limit_a": LIMIT_A,
                "main_guaranteed_headroom_a": 10,
                "main_reserve_a": reserve_a,
                "circuits": [{"id": "chargers", "limit_a": 63, "guaranteed_headroom_a": 63}],
                "min_on_time_s": 120,
                "min_off_time_s": 60,
                "increase_delay_s": 3,
                "ramp_step_a": 2,
            },
            "bays": [
                {
                    "id": f"b{i}",
                    "circuit_id": "chargers",
                    "phases": 3 if i < 4 else 1,
                    # The phases the former "auto" rotation gave them (list index % 3).
                    **({} if i < 4 else {"phase": f"L{i % 3 + 1}"}),
                    "max_current_a": 16,
                }
                for i in range(8)
            ],
        }
    )


def explain_window_ticks() -> int:
    """A building rise shows at the breaker until seen (two readings) and followed (EV response)."""
    return int(np.ceil((2 * PERIOD_S + EV_RESPONSE_MAX_S) / PERIOD_S)) + 1


def largest_rise_a(trace: Trace, seed: int = SEED) -> float:
    """The largest rise of the building load on one phase within one meter period + EV response."""
    ticks = int(HOURS * 3600 / PERIOD_S)
    building = building_trace(np.random.default_rng(seed), ticks, trace)
    w = int(np.ceil((PERIOD_S + EV_RESPONSE_MAX_S) / PERIOD_S)) + 1
    padded = np.concatenate([np.full((w - 1, 3), np.inf), building])
    lows = np.lib.stride_tricks.sliding_window_view(padded, w, axis=0).min(axis=2)
    return float((building - lows).max())


def simulate(trace: Trace, seed: int = SEED, reserve_a: float = RESERVE_A) -> dict[str, float]:
    rnd_np = np.random.default_rng(seed)
    rnd = random.Random(seed)
    ticks = int(HOURS * 3600 / PERIOD_S)
    building = building_trace(rnd_np, ticks, trace)
    ctl = LoadController(config(reserve_a))
    window = explain_window_ticks()
    unexplained_a = 0.0
    unexplained_ticks = 0
    # The EVs load the phases the controller believes they load.
    evs = make_evs(rnd, [spec.phases for spec in ctl.topology.bays])
    day0 = dt.datetime(2026, 3, 2)
    modes = [
        Mode.STANDARD,
        Mode.STANDARD,
        Mode.ECO,
        Mode.STANDARD,
        Mode.STANDARD,
        Mode.BOOST,
        Mode.STANDARD,
        Mode.STANDARD,
    ]

    worst_ratio = 0.0
    worst_at = 0.0
    run_ticks = longest_ticks = 0
    events = 0
    ev_energy_ah = 0.0
    prev_site = building[0].tolist()
    prev_draw = [0.0] * 8
    t_wall0 = time.perf_counter()
    step_s = 0.0
    for k in range(ticks):
        t = k * PERIOD_S
        # EVs adopt commands whose response delay has elapsed.
        for ev in evs:
            while ev.queue and ev.queue[0][0] <= t:
                ev.draw_a = min(ev.queue.popleft()[1], ev.accept_a)
            if not ev.active(t):
                ev.draw_a = 0.0
        site = building[k].tolist()
        for ev in evs:
            for p in ev.phases:
                site[p] += ev.draw_a
        ratio = max(site) / LIMIT_A
        lo = max(0, k - window + 1)
        for p in range(3):
            over = site[p] - LIMIT_A
            if over > 1e-9:
                rise = building[k, p] - building[lo : k + 1, p].min() - reserve_a
                if over > max(rise, 0.0) + 1e-6:
                    unexplained_a = max(unexplained_a, over - max(rise, 0.0))
                    unexplained_ticks += 1
        if ratio > worst_ratio:
            worst_ratio, worst_at = ratio, t
        if ratio > 1.0 + 1e-9:
            run_ticks += 1
            if run_ticks == 1:
                events += 1
            longest_ticks = max(longest_ticks, run_ticks)
        else:
            run_ticks = 0

        # The meter sample (and the bays' own measurement) describe the previous tick.
        bays = tuple(
            BayInput(
                ev.bay,
                active=ev.active(t),
                mode=modes[i],
                boost_confirmed=True,
                measured_a=tuple(prev_draw[i] if p in ev.phases else 0.0 for p in range(3)),  # type: ignore[arg-type]
                measured_at=t,
                session_order=ev.order,
                acked_a=ev.acked_a,
                acked_at=ev.acked_at,
            )
            for i, ev in enumerate(evs)
        )
        s0 = time.perf_counter()
        res = ctl.step(
            t,
            StepInput(
                bays=bays,
                grid=GridInput((prev_site[0], prev_site[1], prev_site[2]), Freshness.FRESH, t),
                wall_time=day0 + dt.timedelta(seconds=t),
            ),
        )
        step_s += time.perf_counter() - s0
        assert not res.new_faults, res.audit
        for ev in evs:
            v = res.setpoints_a[ev.bay]
            if v != ev.last_cmd:
                ev.queue.append((t + ev.delay_s, v))
                ev.last_cmd = v
            # The node acknowledges within the tick (seen by the next step).
            ev.acked_a, ev.acked_at = v, t + ACK_S
        prev_site = site
        prev_draw = [ev.draw_a for ev in evs]
        ev_energy_ah += sum(ev.draw_a * len(ev.phases) for ev in evs) * PERIOD_S / 3600.0

    return {
        "worst_ratio": worst_ratio,
        "worst_at_h": worst_at / 3600.0,
        "longest_s": longest_ticks * PERIOD_S,
        "events": float(events),
        "unexplained_a": unexplained_a,
        "unexplained_ticks": float(unexplained_ticks),
        "ev_energy_kwh": ev_energy_ah * 230.0 / 1000.0,
        "step_ms": step_s / ticks * 1000.0,
        "wall_s": time.perf_counter() - t_wall0,
    }


@pytest.mark.bench
def test_bench_compliance_24h() -> None:
    bound_s = PERIOD_S + EV_RESPONSE_MAX_S
    typical = simulate(TYPICAL)
    stress = simulate(STRESS)
    # The reserve a building with such steps calls for (rounded up to 0.5 A).
    sized_reserve = float(np.ceil((largest_rise_a(STRESS) - 0.05 * LIMIT_A) * 2) / 2)
    sized = simulate(STRESS, reserve_a=sized_reserve)
    write_report(
        "compliance_24h",
        {
            "worst_overload_ratio": metric(typical["worst_ratio"], "ratio", target=1.1),
            "longest_exceedance": metric(typical["longest_s"], "s", target=bound_s),
            "exceedance_events": metric(typical["events"], "count"),
            "unexplained_excess": metric(typical["unexplained_a"], "A", target=0.0),
            "ev_energy": metric(typical["ev_energy_kwh"], "kWh", better="higher"),
            "step_mean": metric(typical["step_ms"], "ms"),
            "stress_worst_overload_ratio": metric(sized["worst_ratio"], "ratio", target=1.05),
            "stress_longest_exceedance": metric(sized["longest_s"], "s", target=bound_s),
            "stress_exceedance_events": metric(sized["events"], "count"),
            "stress_unexplained_excess": metric(sized["unexplained_a"], "A", target=0.0),
            "stress_ev_energy": metric(sized["ev_energy_kwh"], "kWh", better="higher"),
            "stress_typical_reserve_worst_overload_ratio": metric(stress["worst_ratio"], "ratio"),
            "stress_typical_reserve_longest_exceedance": metric(stress["longest_s"], "s"),
            "stress_typical_reserve_unexplained_excess": metric(
                stress["unexplained_a"], "A", target=0.0
            ),
        },
        notes={
            "simulated_h": HOURS,
            "meter_period_s": PERIOD_S,
            "ev_response_max_s": EV_RESPONSE_MAX_S,
            "main_limit_a": LIMIT_A,
            "main_reserve_a": RESERVE_A,
            "stress_sized_reserve_a": sized_reserve,
            "stress_largest_rise_a": round(largest_rise_a(STRESS), 2),
            "bays": "8 on one dedicated circuit: 4 three-phase, 4 single-phase (L2, L3, L1, L2), 16 A",
            "typical_spikes": _spikes(TYPICAL),
            "stress_spikes": _spikes(STRESS),
            "typical_worst_at_h": round(typical["worst_at_h"], 3),
            "stress_worst_at_h": round(sized["worst_at_h"], 3),
            "wall_s": round(typical["wall_s"] + stress["wall_s"] + sized["wall_s"], 1),
            "seed": SEED,
        },
    )
    for run in (typical, stress, sized):
        # The chargers never add to an overload: every excess is a building step.
        assert run["unexplained_a"] <= 1e-6, run
    assert typical["worst_ratio"] <= 1.1, typical
    assert typical["longest_s"] <= bound_s, typical
    assert typical["ev_energy_kwh"] > 100.0, typical
    assert sized["worst_ratio"] <= 1.05, sized
    assert sized["longest_s"] <= bound_s, sized
    assert sized["ev_energy_kwh"] > 100.0, sized


def _spikes(trace: Trace) -> str:
    return (
        f"Poisson, mean every {trace.spike_every_s:g} s, {trace.spike_a[0]:g}-{trace.spike_a[1]:g} A, "
        "70% single-phase, duration 2 s + exp(mean 60 s); daily curve peaks 8:00 and 19:00"
    )
