"""Site leases: a station's budget per phase, handed out by the site's coordinator.

Several stations share one site limit (one grid connection, one main breaker).
A coordinator (:mod:`controller.load.coordinate`) hands each station a *lease*
per phase over the site's MQTT broker; the station allocates within it (the
lease is one more upper bound, composed with the site limit and an OCPP
ChargePointMaxProfile: the lower wins) and reports its demand back.

This module owns the wire format of both messages and the station's side:
:class:`StationLease` holds the lease in force. It is pure: every method takes
``now``, the station's monotonic clock (the load loop's).

Expiry and clock skew: a lease carries ``ttl_s`` and the coordinator's wall
``expires`` time, but the station never compares that to its own wall clock
(two hosts' clocks may disagree by minutes). A lease holds for ``ttl_s`` from
its *receipt* on the station's monotonic clock. A lease that waited in the
broker (a retained message delivered on (re)subscribe) counts only for the
remaining time the broker reports (MQTT 5 message expiry, counted down by the
broker on its own clock) less one second for the broker's whole-second
rounding, and a lease whose ``(epoch, seq)`` is not newer than the one in force
is no renewal at all. Transit delay makes the station's lease end a little
later than the coordinator's view of it; the coordinator allows for that
with a margin before it counts an old lease as gone.

When the lease lapses (or none came yet), the station falls back to its
guaranteed share (its ``main_guaranteed_headroom_a``: the headroom its own
safe shares are proven against), but never above the last lease it held: a
station never draws more than its last lease while the coordinator or the
broker is away.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from controller.load.model import PHASES, Amps3

_MAX_PLAUSIBLE_A = 10_000.0
BROKER_ROUNDING_S = 1.0
"""MQTT message expiry counts whole seconds: a stored lease may look up to this much younger."""


class LeaseError(ValueError):
    """A lease or report that cannot be read: counted, logged, never used."""


def floor_a(amps: float) -> float:
    """Down to the 0.1 A the wire carries, never up."""
    return math.floor(amps * 10.0 + 1e-6) / 10.0


def floor3(values: Amps3) -> Amps3:
    return (floor_a(values[0]), floor_a(values[1]), floor_a(values[2]))


def min3(a: Amps3, b: Amps3) -> Amps3:
    return (min(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2]))


# --------------------------------------------------------------------------- wire


@dataclass(frozen=True, slots=True)
class Lease:
    """``<prefix>/site/<site>/lease/<station>``, retained, from the coordinator."""

    station: str
    phases_a: Amps3
    ttl_s: float
    epoch: int
    """The coordinator's run (its start time in ms): a restarted coordinator starts a new one."""
    seq: int
    """Increases with every lease of one epoch."""
    expires: float
    """The coordinator's wall clock, for people reading the topic; stations do not compare it."""

    def encode(self) -> bytes:
        return json.dumps(
            {
                "station": self.station,
                "phases_a": list(self.phases_a),
                "ttl_s": self.ttl_s,
                "epoch": self.epoch,
                "seq": self.seq,
                "expires": round(self.expires, 3),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> Lease:
        d = _object(raw)
        ttl = _number(d, "ttl_s")
        if ttl <= 0:
            raise LeaseError("ttl_s must be above 0")
        return cls(
            station=_text(d, "station"),
            phases_a=_amps3(d, "phases_a"),
            ttl_s=ttl,
            epoch=_int(d, "epoch"),
            seq=_int(d, "seq"),
            expires=_number(d, "expires"),
        )


@dataclass(frozen=True, slots=True)
class Report:
    """``<prefix>/site/<site>/report/<station>``, from each station after each load step."""

    station: str
    demand_a: Amps3
    """What the station's charging bays could use per phase (their maximum, their OCPP caps)."""
    measured_a: Amps3
    """What its bays draw now per phase (fresh telemetry only)."""
    grid_a: Amps3 | None = None
    """Its grid meter's current per phase while fresh (the coordinator names whose is the site's)."""
    applied: tuple[int, int] | None = None
    """``(epoch, seq)`` of the lease the station allocates within now; None on its fallback."""

    def encode(self) -> bytes:
        return json.dumps(
            {
                "station": self.station,
                "demand_a": list(self.demand_a),
                "measured_a": list(self.measured_a),
                "grid_a": list(self.grid_a) if self.grid_a is not None else None,
                "applied": list(self.applied) if self.applied is not None else None,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> Report:
        d = _object(raw)
        applied = d.get("applied")
        if applied is not None:
            if (
                not isinstance(applied, list)
                or len(applied) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in applied)
            ):
                raise LeaseError("applied must be [epoch, seq] or null")
        return cls(
            station=_text(d, "station"),
            demand_a=_amps3(d, "demand_a"),
            measured_a=_amps3(d, "measured_a"),
            grid_a=_amps3(d, "grid_a") if d.get("grid_a") is not None else None,
            applied=(applied[0], applied[1]) if applied is not None else None,
        )


def _object(raw: bytes | str) -> dict[str, Any]:
    try:
        d = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LeaseError(f"not JSON: {exc}") from exc
    if not isinstance(d, dict):
        raise LeaseError("not a JSON object")
    return d


def _text(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise LeaseError(f"{key} must be a non-empty text")
    return v


def _int(d: dict[str, Any], key: str) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise LeaseError(f"{key} must be a whole number of at least 0")
    return v


def _number(d: dict[str, Any], key: str) -> float:
    v = d.get(key)
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        raise LeaseError(f"{key} must be a number")
    return float(v)


def _amps3(d: dict[str, Any], key: str) -> Amps3:
    v = d.get(key)
    if not isinstance(v, list) or len(v) != 3:
        raise LeaseError(f"{key} must be three currents (L1, L2, L3)")
    out: list[float] = []
    for x in v:
        if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
            raise LeaseError(f"{key} must be three numbers")
        if x < 0 or x > _MAX_PLAUSIBLE_A:
            raise LeaseError(f"{key}: {x} A is not a plausible current")
        out.append(float(x))
    return (out[0], out[1], out[2])


# --------------------------------------------------------------------------- the station's side


@dataclass(frozen=True, slots=True)
class LeaseChange:
    """For the audit log: ``applied``, ``lapsed``, ``refused`` (``renewed`` is only counted)."""

    kind: str
    old_a: Amps3
    new_a: Amps3
    detail: str = ""


@dataclass(frozen=True, slots=True)
class LeaseState:
    cap_a: Amps3
    """The station's budget per phase now: the lease, or the fallback."""
    leased: bool
    applied: tuple[int, int] | None
    changes: tuple[LeaseChange, ...] = field(default=())


@dataclass(slots=True)
class _Held:
    phases_a: Amps3
    epoch: int
    seq: int
    until: float


class StationLease:
    def __init__(self, station: str, guaranteed_a: Amps3, *, max_lease_s: float = 60.0) -> None:
        self.station = station
        self.guaranteed_a = guaranteed_a
        self.max_lease_s = max_lease_s
        self._held: _Held | None = None
        self._last: Amps3 | None = None
        self._last_id: tuple[int, int] | None = None
        self._pending: list[LeaseChange] = []
        self.counts: dict[str, int] = {}

    @property
    def fallback_a(self) -> Amps3:
        """The guaranteed share, never above the last lease held."""
        return self.guaranteed_a if self._last is None else min3(self.guaranteed_a, self._last)

    def _in_force(self) -> Amps3:
        return self._held.phases_a if self._held is not None else self.fallback_a

    def offer(
        self, now: float, lease: Lease, *, remaining_s: float | None = None, stored: bool = False
    ) -> LeaseChange:
        """A lease as received at ``now``.

        ``remaining_s``: the broker's message expiry left when it delivered the lease;
        ``stored``: the broker delivered it from its store (a retained message on
        subscribe), not as it was published.
        """
        old = self._in_force()
        if lease.station != self.station:
            return self._note(
                LeaseChange("refused", old, old, f"a lease for {lease.station!r}"), audit=True
            )
        ident = (lease.epoch, lease.seq)
        if self._last_id is not None and (
            lease.epoch == self._last_id[0] and lease.seq <= self._last_id[1]
        ):
            # Not newer than what this station already took: a replay (the broker's retained
            # copy after a reconnect) renews nothing. Another epoch (a restarted coordinator,
            # or the stored lease of the one before) counts, for no longer than its expiry.
            return self._note(LeaseChange("stale", old, old, f"seq {lease.seq}"), audit=False)
        ttl = min(lease.ttl_s, self.max_lease_s)
        if remaining_s is not None:
            ttl = min(ttl, remaining_s - (BROKER_ROUNDING_S if stored else 0.0))
        elif stored:
            # No expiry from the broker: a stored lease's age is unknown, so it is no lease.
            ttl = 0.0
        if ttl <= 0.0:
            return self._note(
                LeaseChange("stale", old, old, "expired before it arrived"), audit=False
            )
        phases = floor3(lease.phases_a)
        self._held = _Held(phases, lease.epoch, lease.seq, now + ttl)
        self._last, self._last_id = phases, ident
        if phases == old:
            return self._note(LeaseChange("renewed", old, phases), audit=False)
        return self._note(LeaseChange("applied", old, phases, f"seq {lease.seq}"), audit=True)

    def evaluate(self, now: float) -> LeaseState:
        """The budget at ``now``; a lease that ran out lapses here (once)."""
        held = self._held
        if held is not None and now >= held.until:
            self._held = None
            self._note(
                LeaseChange("lapsed", held.phases_a, self.fallback_a, "not renewed in time"),
                audit=True,
            )
        held = self._held
        changes, self._pending = tuple(self._pending), []
        return LeaseState(
            cap_a=self._in_force(),
            leased=held is not None,
            applied=(held.epoch, held.seq) if held is not None else None,
            changes=changes,
        )

    def next_expiry(self) -> float | None:
        return self._held.until if self._held is not None else None

    def status(self, now: float) -> dict[str, Any]:
        """For the owner UI: the budget and, on the fallback, why, in a sentence."""
        held = self._held
        leased = held is not None and now < held.until
        cap = self._in_force()
        messages: list[str] = []
        if not leased:
            messages.append(
                "The site coordinator has not renewed this station's share in time: the station "
                f"charges within its guaranteed share of {_amps_text(cap)}."
            )
        return {
            "leased": leased,
            "cap_a": list(cap),
            "expires_in_s": round(held.until - now, 1) if held is not None and leased else None,
            "messages": messages,
        }

    def _note(self, change: LeaseChange, *, audit: bool) -> LeaseChange:
        self.counts[change.kind] = self.counts.get(change.kind, 0) + 1
        if audit:
            self._pending.append(change)
        return change


def _amps_text(a: Amps3) -> str:
    if a[0] == a[1] == a[2]:
        return f"{a[0]:g} A per phase"
    return ", ".join(f"{a[p]:g} A on {PHASES[p]}" for p in range(3))


def station_demand(bays: list[tuple[tuple[int, ...], float]], station_cap_a: float | None) -> Amps3:
    """Per phase, what a station's charging bays could use: ``(loaded phases, their most)``
    each, within the station's own OCPP cap."""
    d = [0.0, 0.0, 0.0]
    for phases, most in bays:
        for p in phases:
            d[p] += most
    if station_cap_a is not None:
        d = [min(x, max(station_cap_a, 0.0)) for x in d]
    return (d[0], d[1], d[2])


__all__ = [
    "Lease",
    "LeaseChange",
    "LeaseError",
    "LeaseState",
    "Report",
    "StationLease",
    "floor3",
    "floor_a",
    "min3",
    "station_demand",
]
