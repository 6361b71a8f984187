"""External limits as leases: what a site energy manager or the grid operator allows.

An energy manager (HEMS) sends a site or per-bay limit, in A per phase or in W,
over MQTT, Modbus TCP or HTTP (the transports live in ``drivers/setpoint``).
Each limit is a *lease*: it holds for ``lease_s`` after it was received and
must be refreshed before then. A lease that runs out is replaced by the
configured fallback — never by "unlimited": a missing value is not a
permission. The site scope starts in fallback until the first lease arrives.

The grid operator's signal (§14a EnWG: a control box closes a contact) caps
the site at ``grid_operator_w`` while it is active, whatever the leases say.

None of this raises a limit: the load loop hands these caps to the allocation
as *additional* upper bounds (station cap, per-bay cap), so the station only
ever takes the lower of its own limits and an external one.

Pure: every method takes ``now`` (monotonic seconds, the load loop's clock).
Each change of what is in force comes back as an :class:`ExternalChange` for
the audit log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

SITE = "site"

# Refused as a failed value: a limit beyond any plausible supply is a garbled one.
_MAX_PLAUSIBLE_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class ExternalConfig:
    lease_s: float = 60.0
    """A limit not refreshed within this many seconds lapses to the fallback."""
    fallback_site_a: float = 6.0
    """Per phase, for the whole site, while its lease has lapsed (or before the first one)."""
    fallback_bay_a: float = 6.0
    """For a bay whose own lease has lapsed."""
    grid_operator_w: float = 4200.0
    """The site's power while the grid operator's signal is active (§14a EnWG: 4.2 kW)."""
    volts: float = 230.0
    phases: int = 3
    max_a: float = 64.0
    """The site's main limit per phase: a limit above twice this is a failed value."""
    site_leased: bool = True
    """An energy manager is expected to lease the site's limit: until it does, the fallback
    holds. False when only the grid operator's signal is wired (no energy manager)."""


@dataclass(frozen=True, slots=True)
class ExternalChange:
    """What changed, for the audit log and the metrics."""

    kind: str
    """``applied``, ``lapsed`` (fallback now in force), ``refused``,
    ``grid_operator_on`` or ``grid_operator_off``."""
    scope: str
    """``site`` or a bay id."""
    source: str
    old_a: float | None
    new_a: float | None
    detail: str = ""


@dataclass(slots=True)
class _Lease:
    amps: float
    source: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class ExternalCaps:
    """What is in force now: per phase for the site, per bay; None = no external cap."""

    site_a: float | None
    bays_a: dict[str, float]
    grid_operator: bool
    fallback: tuple[str, ...]
    """Scopes on their fallback (their lease lapsed, or none came yet for the site)."""
    changes: tuple[ExternalChange, ...] = field(default=())


def floor_a(amps: float) -> float:
    """Down to the 0.1 A the wire carries, never up."""
    return math.floor(amps * 10.0 + 1e-9) / 10.0


class ExternalLimits:
    def __init__(self, cfg: ExternalConfig, bays: Mapping[str, int]) -> None:
        """``bays``: each bay's id and its number of phases (for limits in W)."""
        self.cfg = cfg
        self._bays = dict(bays)
        self._leases: dict[str, _Lease] = {}
        # A site lease that never came is a lapsed one.
        self._lapsed: set[str] = {SITE} if cfg.site_leased else set()
        self._grid_operator: dict[str, bool] = {}
        self._assumed: set[str] = set()  # sources not read yet, held active meanwhile
        self._pending: list[ExternalChange] = []
        self.counts: dict[str, int] = {}

    # ------------------------------------------------------------------ inputs

    def offer(
        self,
        now: float,
        *,
        scope: str,
        source: str,
        amps: float | None = None,
        watts: float | None = None,
        lease_s: float | None = None,
    ) -> ExternalChange:
        """A limit from ``source`` for ``scope``: applied (a lease) or refused with a reason.

        ``lease_s`` may shorten the configured lease, never lengthen it.
        """
        old = self._in_force(scope)
        problem = self._problem(scope, amps, watts)
        if problem:
            return self._note(ExternalChange("refused", scope, source, old, None, problem))
        if amps is None:
            assert watts is not None
            phases = self.cfg.phases if scope == SITE else self._bays[scope]
            amps = watts / (self.cfg.volts * phases)
        amps = floor_a(amps)
        hold = self.cfg.lease_s if lease_s is None else min(max(lease_s, 0.0), self.cfg.lease_s)
        self._leases[scope] = _Lease(amps, source, now + hold)
        self._lapsed.discard(scope)
        change = ExternalChange("applied", scope, source, old, amps)
        if old != amps:
            return self._note(change)
        return change  # a renewal of the same value: counted, not audited

    def assume_grid_operator(self, source: str) -> None:
        """``source`` is wired but not read yet: its signal counts as active until it is.

        Neither this nor the first reading is a change to audit (it is how the station
        starts, not something the grid operator did).
        """
        self._grid_operator[source] = True
        self._assumed.add(source)

    def grid_operator(self, source: str, active: bool) -> ExternalChange | None:
        """The grid operator's signal from ``source`` (a GPIO contact, a setpoint source)."""
        before = self.grid_operator_active
        self._grid_operator[source] = active
        after = self.grid_operator_active
        if source in self._assumed:
            self._assumed.discard(source)
            return None
        if before == after:
            return None
        cap = self._grid_operator_a()
        return self._note(
            ExternalChange(
                "grid_operator_on" if after else "grid_operator_off",
                SITE,
                source,
                None if after else cap,
                cap if after else None,
            )
        )

    @property
    def grid_operator_active(self) -> bool:
        return any(self._grid_operator.values())

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, now: float) -> ExternalCaps:
        """The caps in force at ``now``; leases that ran out lapse here, once each."""
        for scope, lease in list(self._leases.items()):
            if now >= lease.expires_at:
                del self._leases[scope]
                self._lapsed.add(scope)
                fb = self._fallback(scope)
                self._note(
                    ExternalChange(
                        "lapsed",
                        scope,
                        lease.source,
                        lease.amps,
                        fb,
                        f"not refreshed within {self.cfg.lease_s:g} s",
                    )
                )
        site = self._in_force(SITE)
        if self.grid_operator_active:
            g = self._grid_operator_a()
            site = g if site is None else min(site, g)
        bays = {b: a for b in self._bays if (a := self._in_force(b)) is not None}
        changes, self._pending = tuple(self._pending), []
        return ExternalCaps(
            site_a=site,
            bays_a=bays,
            grid_operator=self.grid_operator_active,
            fallback=tuple(sorted(self._lapsed)),
            changes=changes,
        )

    def next_expiry(self) -> float | None:
        """When the next lease runs out (the load loop wakes then), None without leases."""
        return min((lease.expires_at for lease in self._leases.values()), default=None)

    def status(self, now: float) -> dict[str, object]:
        """For the owner UI and the kiosk: what holds the site back, in sentences."""
        site = self._leases.get(SITE)
        messages: list[str] = []
        if self.grid_operator_active:
            messages.append(
                f"Limited by grid operator: the site may draw at most "
                f"{self.cfg.grid_operator_w / 1000:g} kW."
            )
        if SITE in self._lapsed:
            messages.append(
                "The energy manager has not renewed its limit in time: the station charges "
                f"with its fallback of {self.cfg.fallback_site_a:g} A per phase."
            )
        lapsed_bays = sorted(self._lapsed - {SITE})
        if lapsed_bays:
            messages.append(
                "The energy manager has not renewed its limit for "
                + ", ".join(lapsed_bays)
                + f": each charges with at most {self.cfg.fallback_bay_a:g} A."
            )
        return {
            "grid_operator": self.grid_operator_active,
            "fallback": bool(self._lapsed),
            "site_a": self._in_force(SITE),
            "site_source": site.source if site else None,
            "site_expires_in_s": round(site.expires_at - now, 1) if site else None,
            "bays_a": {b: a for b in sorted(self._bays) if (a := self._in_force(b)) is not None},
            "messages": messages,
        }

    # ------------------------------------------------------------------ helpers

    def _note(self, change: ExternalChange) -> ExternalChange:
        self._pending.append(change)
        self.counts[change.kind] = self.counts.get(change.kind, 0) + 1
        return change

    def _fallback(self, scope: str) -> float:
        return self.cfg.fallback_site_a if scope == SITE else self.cfg.fallback_bay_a

    def _in_force(self, scope: str) -> float | None:
        lease = self._leases.get(scope)
        if lease is not None:
            return lease.amps
        if scope in self._lapsed:
            return self._fallback(scope)
        return None

    def _grid_operator_a(self) -> float:
        return floor_a(self.cfg.grid_operator_w / (self.cfg.volts * self.cfg.phases))

    def _problem(self, scope: str, amps: float | None, watts: float | None) -> str:
        if scope != SITE and scope not in self._bays:
            return f"no bay {scope!r}"
        if (amps is None) == (watts is None):
            return "give a limit in A or in W (one of them)"
        value = amps if amps is not None else watts
        assert value is not None
        if not math.isfinite(value) or value < 0:
            return "a limit is a number of at least 0"
        top = self.cfg.max_a * _MAX_PLAUSIBLE_FACTOR
        if amps is not None and amps > top:
            return f"{amps:g} A is beyond any plausible limit ({top:g} A)"
        if watts is not None and watts > top * self.cfg.volts * self.cfg.phases:
            return f"{watts:g} W is beyond any plausible limit"
        return ""


__all__ = ["SITE", "ExternalCaps", "ExternalChange", "ExternalConfig", "ExternalLimits", "floor_a"]
