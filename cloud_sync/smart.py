"""Smart Charging (OCPP 1.6 §3.13, 5.5, 5.7, 5.16): charging profiles and the limits they set.

The schedule arithmetic is pure (:func:`limit_at`, :func:`composite`,
:func:`connector_limit_a`); :class:`ProfileStore` keeps the installed profiles
in memory and in the journal (``charging_profiles``, :mod:`cloud_sync.store`) and answers
:meth:`ProfileStore.current_limits_a` for the load manager.

Rules kept here: ChargePointMaxProfile only on connector 0 and it caps the
whole station; TxDefaultProfile on connector 0 is the default of every
connector, one on a connector overrides it; TxProfile only while a
transaction runs on that connector and it wins over TxDefaultProfile. Within
a purpose the highest stack level whose schedule is active wins; the
composite is the minimum per interval. Watts become amps with the phases of
the period (or of the bay) at 230 V.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from cloud_sync.store import OcppStore, StoredProfile
from controller.core.outputs import floor_steps

VOLTAGE_V = 230.0
CP_MAX = "ChargePointMaxProfile"
TX_DEFAULT = "TxDefaultProfile"
TX = "TxProfile"
_CYCLE_S = {"Daily": 86_400, "Weekly": 604_800}


def parse_time(value: str) -> float:
    """ISO 8601 with ``Z`` or an offset and optional fractions; a naive time is taken as UTC."""
    dt = datetime.fromisoformat(value.strip().replace("z", "Z"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass(frozen=True, slots=True)
class Period:
    start_s: int
    limit: float
    phases: int | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    id: int
    connector: int
    stack_level: int
    purpose: str
    kind: str  # Absolute / Recurring / Relative
    unit: str  # A / W
    periods: tuple[Period, ...]
    recurrency: str | None = None
    valid_from: float | None = None
    valid_to: float | None = None
    start: float | None = None
    duration: int | None = None
    transaction_id: int | None = None
    min_rate: float | None = None

    @classmethod
    def from_ocpp(cls, connector: int, d: dict[str, Any], installed_at: float) -> Profile:
        """From a csChargingProfiles object in snake_case keys (as the ocpp library hands it)."""
        sched = d["charging_schedule"]
        periods = tuple(
            Period(int(p["start_period"]), float(p["limit"]), p.get("number_phases"))
            for p in sched["charging_schedule_period"]
        )
        kind = str(d["charging_profile_kind"])
        start = parse_time(sched["start_schedule"]) if sched.get("start_schedule") else None
        if start is None and kind == "Absolute":
            start = parse_time(d["valid_from"]) if d.get("valid_from") else installed_at
        if start is None and kind == "Recurring":
            start = parse_time(d["valid_from"]) if d.get("valid_from") else installed_at
        return cls(
            id=int(d["charging_profile_id"]),
            connector=connector,
            stack_level=int(d["stack_level"]),
            purpose=str(d["charging_profile_purpose"]),
            kind=kind,
            unit=str(sched["charging_rate_unit"]),
            periods=periods,
            recurrency=d.get("recurrency_kind"),
            valid_from=parse_time(d["valid_from"]) if d.get("valid_from") else None,
            valid_to=parse_time(d["valid_to"]) if d.get("valid_to") else None,
            start=start,
            duration=sched.get("duration"),
            transaction_id=d.get("transaction_id"),
            min_rate=(
                float(sched["min_charging_rate"])
                if sched.get("min_charging_rate") is not None
                else None
            ),
        )


def check(p: Profile, *, max_stack: int, max_periods: int) -> str | None:
    """Why ``p`` cannot be installed, or None."""
    if not 0 <= p.stack_level <= max_stack:
        return f"stackLevel {p.stack_level} outside 0..{max_stack}"
    if not p.periods or len(p.periods) > max_periods:
        return f"{len(p.periods)} periods (1..{max_periods} allowed)"
    if p.periods[0].start_s != 0:
        return "the first period must start at 0"
    starts = [q.start_s for q in p.periods]
    if any(b <= a for a, b in itertools.pairwise(starts)):
        return "period starts must ascend"
    if any(q.limit < 0 for q in p.periods):
        return "negative limit"
    if p.unit not in ("A", "W"):
        return f"unknown unit {p.unit}"
    if p.kind == "Recurring" and p.recurrency not in _CYCLE_S:
        return "Recurring needs recurrencyKind Daily or Weekly"
    if p.valid_from is not None and p.valid_to is not None and p.valid_to <= p.valid_from:
        return "validTo is not after validFrom"
    return None


# --------------------------------------------------------------------------- pure schedule math


def _origin(p: Profile, t: float, tx_start: float | None) -> float | None:
    if p.kind == "Relative":
        return tx_start
    assert p.start is not None
    if p.kind == "Recurring":
        cycle = _CYCLE_S[p.recurrency or "Daily"]
        return p.start + math.floor((t - p.start) / cycle) * cycle
    return p.start


def limit_at(p: Profile, t: float, tx_start: float | None) -> Period | None:
    """The period of ``p`` in force at wall time ``t``, or None when ``p`` sets nothing then."""
    if p.valid_from is not None and t < p.valid_from:
        return None
    if p.valid_to is not None and t >= p.valid_to:
        return None
    origin = _origin(p, t, tx_start)
    if origin is None:
        return None
    off = t - origin
    if off < 0 or (p.duration is not None and off >= p.duration):
        return None
    current = None
    for q in p.periods:
        if q.start_s <= off:
            current = q
        else:
            break
    return current


def next_change(p: Profile, t: float, tx_start: float | None) -> float | None:
    """The first instant after ``t`` at which :func:`limit_at` of ``p`` may change."""
    points: list[float] = [x for x in (p.valid_from, p.valid_to) if x is not None]
    origin = _origin(p, t, tx_start)
    if origin is not None:
        origins = [origin]
        if p.kind == "Recurring":
            origins.append(origin + _CYCLE_S[p.recurrency or "Daily"])
        for o in origins:
            points.extend(o + q.start_s for q in p.periods)
            if p.duration is not None:
                points.append(o + p.duration)
    later = [x for x in points if x > t]
    return min(later) if later else None


def to_amps(limit: float, unit: str, phases: int) -> float:
    return limit if unit == "A" else limit / (VOLTAGE_V * max(1, phases))


def _winner(
    profiles: Iterable[Profile], t: float, tx_start: float | None
) -> tuple[Profile, Period] | None:
    for p in sorted(profiles, key=lambda q: -q.stack_level):
        period = limit_at(p, t, tx_start)
        if period is not None:
            return p, period
    return None


@dataclass(frozen=True, slots=True)
class TxContext:
    """What a connector's limits depend on: its transaction (if any) and its phases."""

    connector: int
    phases: int = 3
    tx_start: float | None = None  # wall time the transaction started; None = none runs
    tx_id: int | None = None


def connector_limit_a(
    profiles: Iterable[Profile], ctx: TxContext, t: float, *, with_station_cap: bool = False
) -> float | None:
    """Amps the profiles allow on ``ctx.connector`` at ``t`` (None = no limit from profiles).

    Connector 0 is the station: only ChargePointMaxProfile counts (three phases).
    """
    ps = list(profiles)
    limits: list[float] = []
    if ctx.connector == 0 or with_station_cap:
        cp = _winner((p for p in ps if p.purpose == CP_MAX), t, ctx.tx_start)
        if cp is not None:
            phases = cp[1].phases or (3 if ctx.connector == 0 else ctx.phases)
            limits.append(to_amps(cp[1].limit, cp[0].unit, phases))
    if ctx.connector != 0:
        chosen = None
        if ctx.tx_start is not None:
            chosen = _winner(
                (
                    p
                    for p in ps
                    if p.purpose == TX
                    and p.connector == ctx.connector
                    and (
                        p.transaction_id is None
                        or ctx.tx_id is None
                        or p.transaction_id == ctx.tx_id
                    )
                ),
                t,
                ctx.tx_start,
            )
        if chosen is None:
            chosen = _winner(
                (p for p in ps if p.purpose == TX_DEFAULT and p.connector == ctx.connector),
                t,
                ctx.tx_start,
            )
        if chosen is None:
            chosen = _winner(
                (p for p in ps if p.purpose == TX_DEFAULT and p.connector == 0), t, ctx.tx_start
            )
        if chosen is not None:
            limits.append(to_amps(chosen[1].limit, chosen[0].unit, chosen[1].phases or ctx.phases))
    return min(limits) if limits else None


def composite(
    profiles: Iterable[Profile],
    ctx: TxContext,
    start: float,
    duration_s: int,
    *,
    unit: str = "A",
    default_a: float,
) -> list[tuple[int, float]]:
    """GetCompositeSchedule: ``[(startPeriod, limit)]`` over ``duration_s`` from ``start``.

    The limit is the minimum of everything in force in each interval; where no
    profile sets anything the connector's own maximum (``default_a``) applies.
    """
    ps = list(profiles)
    phases = 3 if ctx.connector == 0 else ctx.phases
    out: list[tuple[int, float]] = []
    t = start
    end = start + duration_s
    while t < end:
        amps = connector_limit_a(ps, ctx, t, with_station_cap=True)
        amps = default_a if amps is None else min(amps, default_a)
        value = amps if unit == "A" else amps * VOLTAGE_V * phases
        value = floor_steps(value, 10) / 10  # a limit the CSMS reads: floored, never rounded up
        if not out or out[-1][1] != value:
            out.append((round(t - start), value))
        changes = [c for p in ps if (c := next_change(p, t, ctx.tx_start)) is not None]
        t = min([*changes, end])
    return out


# --------------------------------------------------------------------------- store


def _json_number(o: object) -> float:
    # The ocpp library hands fractional numbers over as Decimal (its schemas check
    # multipleOf exactly); the journal keeps the profile as JSON.
    if isinstance(o, Decimal):
        return float(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


class ProfileStore:
    """Installed profiles, in memory for the load manager and in the journal for restarts."""

    def __init__(self, store: OcppStore, *, max_installed: int = 32) -> None:
        self._store = store
        self.max_installed = max_installed
        self.profiles: dict[int, Profile] = {}

    async def load(self) -> None:
        self.profiles = {}
        for r in await self._store.charging_profiles():
            try:
                p = Profile.from_ocpp(r.connector, json.loads(r.profile_json), r.installed_at)
            except (KeyError, ValueError, TypeError):
                continue
            self.profiles[p.id] = p

    async def install(self, p: Profile, raw: dict[str, Any], now: float) -> str | None:
        """Store ``p`` (replacing one with the same id, or same purpose+level+connector).

        Returns why it was refused, or None.
        """
        replaced = [
            q.id
            for q in self.profiles.values()
            if q.id == p.id
            or (
                q.purpose == p.purpose
                and q.stack_level == p.stack_level
                and q.connector == p.connector
            )
        ]
        if len(self.profiles) - len(replaced) >= self.max_installed:
            return "too many profiles installed"
        row = StoredProfile(
            p.id,
            p.connector,
            p.stack_level,
            p.purpose,
            p.transaction_id,
            json.dumps(raw, default=_json_number),
            now,
        )
        await self._store.install_charging_profile(row, replaces=replaced)
        for pid in replaced:
            del self.profiles[pid]
        self.profiles[p.id] = p
        return None

    async def clear(
        self,
        *,
        profile_id: int | None = None,
        connector: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> int:
        """ClearChargingProfile: by id, or by every filter given; returns how many went."""
        gone = []
        for p in self.profiles.values():
            if profile_id is not None:
                if p.id == profile_id:
                    gone.append(p.id)
                continue
            if connector is not None and p.connector != connector:
                continue
            if purpose is not None and p.purpose != purpose:
                continue
            if stack_level is not None and p.stack_level != stack_level:
                continue
            gone.append(p.id)
        if gone:
            await self._store.remove_charging_profiles(gone)
        for pid in gone:
            del self.profiles[pid]
        return len(gone)

    async def end_transaction(self, connector: int) -> None:
        """A TxProfile ends with its transaction."""
        if any(p.purpose == TX and p.connector == connector for p in self.profiles.values()):
            await self.clear(connector=connector, purpose=TX)

    def limits(self, contexts: Iterable[TxContext], now_wall: float) -> dict[int, float | None]:
        ps = list(self.profiles.values())
        out: dict[int, float | None] = {0: connector_limit_a(ps, TxContext(0), now_wall)}
        for ctx in contexts:
            out[ctx.connector] = connector_limit_a(ps, ctx, now_wall)
        return out
