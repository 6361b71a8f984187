"""Plausibility of meter readings: which values a meter can physically report, and the gate.

A value outside physical bounds is a decoding error, a meter that lost its
calibration or a gateway answering for a silent meter — never a measurement.
Such a reading is a FAILED reading: load management never uses it. The rules,
per quantity (names as in the register maps):

- ``current_lN``: an RMS magnitude, so ``0 <= I <= bound``. The bound comes from
  the meter's role: twice the main limit of that phase for the grid meter (up to
  twice the limit is a real overload the station must see and act on; beyond it
  the main breaker would have tripped), twice the bay's maximum for a bay meter,
  the configured ``max_current_a`` of any meter when given (a PV inverter's or a
  CT's rating), else :data:`PHYSICAL_MAX_CURRENT_A`. A negative current is a
  decoding error: export shows as negative power, never as negative current
  (maps of meters that sign their currents say so and the driver hands over
  magnitudes).
- ``voltage_lN``: 100–300 V (phase to neutral).
- ``frequency``: 45–65 Hz.
- ``power_lN`` / ``power_total``: ``|P| <= V * I`` (a power factor is at most 1),
  with :data:`POWER_TOLERANCE` for the meter's accuracy and
  :data:`POWER_FLOOR_W` for its resolution near zero. Power and current are
  compared only when they came from the same request (same stamp), because a
  load that switches between two requests would look like a lie; the voltage
  may be older (it moves slowly) and is :data:`VOLTAGE_MAX_V` when missing or
  implausible itself.
  Without current, power is only bounded by ``VOLTAGE_MAX_V * bound``.
- ``import_energy`` / ``export_energy``: never negative, never lower than the
  previous value, and never more above it than the most power the meter can see
  over the time between the two requests, plus :data:`ENERGY_SLACK_WH` for the
  register resolution. The previous value is the last one *seen*, plausible or
  not: a single garbage value costs two failed readings, a counter reset (a
  replaced meter) one, and neither locks the meter out for ever.

Quantities a meter lacks are skipped. :class:`MeterGate` applies the rules to
every reading, keeps the energy marks and the counts, and says when to audit:
the first implausible reading, an hourly reminder while it lasts, and the
recovery with the count — a meter spewing garbage does not flood the audit log.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from controller.ports import Freshness, MeterReading, MeterSample

VOLTAGE_MIN_V = 100.0
VOLTAGE_MAX_V = 300.0
FREQUENCY_MIN_HZ = 45.0
FREQUENCY_MAX_HZ = 65.0
CURRENT_FACTOR = 2.0
"""Bound on a current, as a multiple of the limit the meter's role implies."""
PHYSICAL_MAX_CURRENT_A = 1000.0
"""When nothing else bounds a meter: above the largest low-voltage building supply
(630 A main fuses) a charging station is installed on, with margin."""
POWER_TOLERANCE = 0.10
"""Class 1 meters are within 1 % on each of V, I and P; 10 % covers that and rounding."""
POWER_FLOOR_W = 50.0
ENERGY_SLACK_WH = 200.0
"""Two counts of the coarsest counter of the bundled maps (EM24: 0.1 kWh; a float32
kWh register near 10^6 kWh has ~0.06 kWh steps)."""
REMIND_S = 3600.0
"""While a meter stays implausible, one audit row per this many seconds."""

_PHASES = ("l1", "l2", "l3")


@dataclass(frozen=True, slots=True)
class Bounds:
    """Largest RMS current per phase this meter can plausibly measure (A)."""

    current_a: tuple[float, float, float]

    @property
    def max_power_w(self) -> float:
        return VOLTAGE_MAX_V * sum(self.current_a)


def bounds_for(
    role: str,
    *,
    main_limit_a: tuple[float, float, float] | None = None,
    bay_max_a: float | None = None,
    rating_a: float | None = None,
) -> Bounds:
    """The bounds of a meter from its role (see the module docstring)."""
    if rating_a is not None:
        return Bounds((rating_a, rating_a, rating_a))
    if role in ("grid", "pv") and main_limit_a is not None:
        a, b, c = (CURRENT_FACTOR * x for x in main_limit_a)
        return Bounds((a, b, c))
    if role == "bay" and bay_max_a is not None:
        x = CURRENT_FACTOR * bay_max_a
        return Bounds((x, x, x))
    return Bounds((PHYSICAL_MAX_CURRENT_A,) * 3)


@dataclass(frozen=True, slots=True)
class Problem:
    """One implausible value: which, what it was, and why it cannot be."""

    quantity: str
    value: float
    reason: str

    def __str__(self) -> str:
        return f"{self.quantity} = {self.value:.6g}: {self.reason}"


@dataclass(frozen=True, slots=True)
class EnergyMark:
    """The last counter value seen (Wh) and when it was requested."""

    value_wh: float
    at: float


Marks = dict[str, EnergyMark]


def _scale_v(volts: float | None) -> float:
    """The voltage to scale a current with: the measured one when plausible, else the highest."""
    if volts is not None and VOLTAGE_MIN_V <= volts <= VOLTAGE_MAX_V:
        return volts
    return VOLTAGE_MAX_V


def _phase_values(
    s: MeterSample,
) -> Iterator[tuple[int, str, float | None, float | None, float | None]]:
    for i, ph in enumerate(_PHASES):
        yield i, ph, s.voltage_v[i], s.current_a[i], s.power_w[i]


def check_sample(sample: MeterSample, bounds: Bounds, marks: Marks) -> tuple[list[Problem], Marks]:
    """The problems of ``sample`` (empty: plausible) and the energy marks for the next one."""
    out: list[Problem] = []
    for i, ph, volts, amps, watts in _phase_values(sample):
        if volts is not None and not VOLTAGE_MIN_V <= volts <= VOLTAGE_MAX_V:
            out.append(
                Problem(f"voltage_{ph}", volts, f"outside {VOLTAGE_MIN_V:g}–{VOLTAGE_MAX_V:g} V")
            )
        bound = bounds.current_a[i]
        if amps is not None:
            if amps < 0:
                out.append(Problem(f"current_{ph}", amps, "an RMS current is never negative"))
            elif amps > bound:
                out.append(Problem(f"current_{ph}", amps, f"above {bound:g} A"))
        if watts is not None:
            limit = VOLTAGE_MAX_V * bound
            if abs(watts) > limit:
                out.append(Problem(f"power_{ph}", watts, f"beyond ±{limit:g} W"))
            elif (
                amps is not None
                and amps >= 0
                and sample.stamp(f"power_{ph}") == sample.stamp(f"current_{ph}")
            ):
                v = _scale_v(volts)
                most = v * amps * (1 + POWER_TOLERANCE) + POWER_FLOOR_W
                if abs(watts) > most:
                    out.append(
                        Problem(f"power_{ph}", watts, f"more than V·I allows ({most:.0f} W)")
                    )
    total = sample.power_total_w
    if total is not None:
        if abs(total) > bounds.max_power_w:
            out.append(Problem("power_total", total, f"beyond ±{bounds.max_power_w:g} W"))
        elif all(
            a is not None
            and a >= 0
            and sample.stamp(f"current_{ph}") == sample.stamp("power_total")
            for ph, a in zip(_PHASES, sample.current_a, strict=True)
        ):
            most = POWER_FLOOR_W * 3
            for volts, amps in zip(sample.voltage_v, sample.current_a, strict=True):
                v = _scale_v(volts)
                most += v * (amps or 0.0) * (1 + POWER_TOLERANCE)
            if abs(total) > most:
                out.append(
                    Problem("power_total", total, f"more than the phases' V·I allow ({most:.0f} W)")
                )
    hz = sample.frequency_hz
    if hz is not None and not FREQUENCY_MIN_HZ <= hz <= FREQUENCY_MAX_HZ:
        out.append(
            Problem("frequency", hz, f"outside {FREQUENCY_MIN_HZ:g}–{FREQUENCY_MAX_HZ:g} Hz")
        )
    new_marks = dict(marks)
    for name, value in (("import_energy", sample.import_wh), ("export_energy", sample.export_wh)):
        if value is None:
            continue
        at = sample.stamp(name)
        prev = marks.get(name)
        new_marks[name] = EnergyMark(value, at)
        if value < 0:
            out.append(Problem(name, value, "a counter is never negative"))
        elif prev is not None and at != prev.at:
            if value < prev.value_wh:
                out.append(Problem(name, value, f"went back from {prev.value_wh:.6g} Wh"))
            else:
                most = bounds.max_power_w * max(0.0, at - prev.at) / 3600.0 + ENERGY_SLACK_WH
                if value - prev.value_wh > most:
                    out.append(
                        Problem(
                            name,
                            value,
                            f"rose {value - prev.value_wh:.6g} Wh in {at - prev.at:.1f} s "
                            f"(at most {most:.0f} Wh)",
                        )
                    )
    return out, new_marks


# --------------------------------------------------------------------------- the gate


@dataclass(frozen=True, slots=True)
class AuditNote:
    """An audit row the station should write: ``kind`` and its detail."""

    kind: str
    detail: dict[str, Any]


@dataclass(slots=True)
class _MeterState:
    marks: Marks = field(default_factory=dict)
    since_wall: float | None = None  # start of the current implausible episode
    episode_readings: int = 0
    reminded_wall: float = 0.0


@dataclass(slots=True)
class MeterGate:
    """Applies :func:`check_sample` to every reading of every meter; counts and rate-limits audit."""

    implausible_readings: Counter[str] = field(default_factory=Counter)
    """meter -> readings failed for implausibility (for /metrics)."""
    implausible_values: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(meter, quantity) -> implausible values seen (for /metrics)."""
    _meters: dict[str, _MeterState] = field(default_factory=dict)

    def admit(
        self, reading: MeterReading, bounds: Bounds, *, role: str, now_wall: float
    ) -> tuple[MeterReading, AuditNote | None]:
        """The reading as load management may use it (FAILED when implausible) and what to audit."""
        if reading.sample is None or reading.freshness is Freshness.FAILED:
            return reading, None
        st = self._meters.setdefault(reading.meter, _MeterState())
        problems, st.marks = check_sample(reading.sample, bounds, st.marks)
        if not problems:
            if st.since_wall is None:
                return reading, None
            note = AuditNote(
                "meter_plausible_again",
                {
                    "meter": reading.meter,
                    "role": role,
                    "implausible_readings": st.episode_readings,
                    "lasted_s": round(now_wall - st.since_wall, 1),
                },
            )
            st.since_wall, st.episode_readings = None, 0
            return reading, note
        self.implausible_readings[reading.meter] += 1
        for p in problems:
            self.implausible_values[(reading.meter, p.quantity)] += 1
        st.episode_readings += 1
        failed = dataclasses.replace(
            reading,
            freshness=Freshness.FAILED,
            sample=None,
            error="implausible: " + "; ".join(str(p) for p in problems),
        )
        detail: dict[str, Any] = {
            "meter": reading.meter,
            "role": role,
            "problems": [
                {"quantity": p.quantity, "value": p.value, "reason": p.reason} for p in problems
            ],
        }
        if st.since_wall is None:
            st.since_wall = st.reminded_wall = now_wall
            return failed, AuditNote("meter_implausible", detail)
        if now_wall - st.reminded_wall >= REMIND_S:
            st.reminded_wall = now_wall
            detail["implausible_readings"] = st.episode_readings
            detail["since_s"] = round(now_wall - st.since_wall, 1)
            return failed, AuditNote("meter_still_implausible", detail)
        return failed, None

    def implausible_now(self, meter: str) -> bool:
        st = self._meters.get(meter)
        return st is not None and st.since_wall is not None
