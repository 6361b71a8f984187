"""The simulated wallbox's own smart charging, from OCPP 1.6 §3.13 (written from the spec).

Profiles are kept per (connector, purpose, stack level). The limit at a time
is, per connector: the valid TxProfile of the running transaction with the
highest stack level, else the valid TxDefaultProfile with the highest stack
level (one for the connector wins over one for connector 0); then capped by
the valid ChargePointMaxProfile. Only what the station uses here is modelled:
Absolute and Relative schedules, their periods, validFrom/validTo, A and W.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

VOLTS = 230.0


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class Profile:
    id: int
    connector: int
    purpose: str
    stack: int
    kind: str
    unit: str
    periods: tuple[tuple[float, float], ...]  # (start offset s, limit)
    start: float | None
    valid_from: float | None
    valid_to: float | None
    tx_id: int | None

    @classmethod
    def parse(cls, connector: int, p: dict[str, Any]) -> Profile:
        sched = p["charging_schedule"]
        periods = tuple(
            (float(x["start_period"]), float(x["limit"])) for x in sched["charging_schedule_period"]
        )
        if not periods:
            raise ValueError("a schedule needs a period")
        start = sched.get("start_schedule")
        return cls(
            id=int(p["charging_profile_id"]),
            connector=connector,
            purpose=str(p["charging_profile_purpose"]),
            stack=int(p["stack_level"]),
            kind=str(p["charging_profile_kind"]),
            unit=str(sched["charging_rate_unit"]),
            periods=periods,
            start=parse_iso(start) if start else None,
            valid_from=parse_iso(p["valid_from"]) if p.get("valid_from") else None,
            valid_to=parse_iso(p["valid_to"]) if p.get("valid_to") else None,
            tx_id=p.get("transaction_id"),
        )

    def valid(self, now: float) -> bool:
        if self.valid_from is not None and now < self.valid_from:
            return False
        return self.valid_to is None or now < self.valid_to

    def limit_a(self, now: float, tx_start: float | None, phases: int) -> float | None:
        origin = self.start if self.kind == "Absolute" else tx_start
        if origin is None:
            origin = now
        offset = now - origin
        if offset < self.periods[0][0]:
            return None
        value = self.periods[0][1]
        for start, limit in self.periods:
            if offset >= start:
                value = limit
        return value / (VOLTS * phases) if self.unit == "W" else value


class ProfileBook:
    def __init__(self) -> None:
        self.profiles: dict[tuple[int, str, int], Profile] = {}

    def install(self, p: Profile) -> None:
        # Same id replaces; same (connector, purpose, stack) replaces too (the spec's rule).
        self.profiles = {k: v for k, v in self.profiles.items() if v.id != p.id}
        self.profiles[(p.connector, p.purpose, p.stack)] = p

    def clear(
        self, profile_id: int | None, connector: int | None, purpose: str | None, stack: int | None
    ) -> bool:
        keep: dict[tuple[int, str, int], Profile] = {}
        hit = False
        for k, v in self.profiles.items():
            match = (
                (profile_id is None or v.id == profile_id)
                and (connector is None or v.connector == connector)
                and (purpose is None or v.purpose == purpose)
                and (stack is None or v.stack == stack)
            )
            hit |= match
            if not match:
                keep[k] = v
        self.profiles = keep
        return hit

    def end_transaction(self, connector: int) -> None:
        self.profiles = {
            k: v
            for k, v in self.profiles.items()
            if not (v.connector == connector and v.purpose == "TxProfile")
        }

    def _best(
        self, purpose: str, connectors: tuple[int, ...], now: float, tx: int | None
    ) -> Profile | None:
        for c in connectors:
            found = [
                v
                for v in self.profiles.values()
                if v.purpose == purpose
                and v.connector == c
                and v.valid(now)
                and (purpose != "TxProfile" or v.tx_id in (None, tx))
            ]
            if found:
                return max(found, key=lambda v: v.stack)
        return None

    def limit_a(
        self, connector: int, now: float, tx_id: int | None, tx_start: float | None, phases: int
    ) -> float | None:
        """The limit in force on ``connector`` (amps per phase); None: no profile limits it."""
        limit: float | None = None
        if tx_id is not None:
            p = self._best("TxProfile", (connector,), now, tx_id)
            if p is not None:
                limit = p.limit_a(now, tx_start, phases)
        if limit is None:
            p = self._best("TxDefaultProfile", (connector, 0), now, tx_id)
            if p is not None:
                limit = p.limit_a(now, tx_start, phases)
        cp = self._best("ChargePointMaxProfile", (0,), now, None)
        if cp is not None:
            top = cp.limit_a(now, tx_start, phases)
            if top is not None:
                limit = top if limit is None else min(limit, top)
        return limit
