"""Owner rules: which are active at a given local time, and what they resolve to.

Resolution is deterministic and safety-first: when several active rules limit the
same thing, the lowest limit applies. When that contradicts the owner's stated
priority (a rule of higher or equal priority allows more), the contradiction is
reported as a :class:`RuleConflict` rather than silently resolved by priority.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from controller.load.model import WEEKDAYS, BayCurrentCapRule, RuleConfig, SitePowerCapRule

SITE_TARGET = "site"


def rule_active(rule: RuleConfig, at: dt.datetime) -> bool:
    """Whether ``rule``'s window contains the local wall time ``at``."""
    day = WEEKDAYS[at.weekday()]
    if rule.from_time is None or rule.to_time is None:
        return day in rule.days
    t = at.time()
    start, end = rule.from_time, rule.to_time
    if start < end:
        return day in rule.days and start <= t < end
    # Past midnight: the early part belongs to the window that began the day before.
    if t >= start:
        return day in rule.days
    if t < end:
        return WEEKDAYS[(at.weekday() - 1) % 7] in rule.days
    return False


def active_rules(rules: Iterable[RuleConfig], at: dt.datetime) -> tuple[RuleConfig, ...]:
    return tuple(r for r in rules if rule_active(r, at))


@dataclass(frozen=True, slots=True)
class RuleConflict:
    """Rules that cannot all be honoured; ``applied`` is the one that wins (safety first)."""

    kind: str  # "contradiction" | "below_min"
    targets: tuple[str, ...]  # bay ids, or ("site",)
    applied: str
    overridden: tuple[str, ...]
    detail: str


@dataclass(frozen=True, slots=True)
class ResolvedRules:
    bay_caps: Mapping[str, tuple[float, str]]
    """bay id -> (cap in A per phase, id of the rule that sets it)."""
    site_power: tuple[float, str] | None
    """(cap in W, rule id) on the total charging power, or None."""
    conflicts: tuple[RuleConflict, ...]


def _order(rule: RuleConfig) -> tuple[int, str]:
    return (-rule.priority, rule.id)


def _contradicting(
    winner: RuleConfig, value: float, others: Sequence[tuple[RuleConfig, float]]
) -> tuple[str, ...]:
    return tuple(
        r.id for r, v in others if r.id != winner.id and v > value and r.priority >= winner.priority
    )


def resolve_rules(
    rules: Sequence[RuleConfig],
    bay_ids: Sequence[str],
    bay_min_a: Mapping[str, float],
) -> ResolvedRules:
    """Resolve the already-active ``rules`` into one limit per target, plus conflicts."""
    ordered = sorted(rules, key=_order)
    per_bay: dict[str, list[tuple[RuleConfig, float]]] = {}
    power: list[tuple[RuleConfig, float]] = []
    for rule in ordered:
        if isinstance(rule, BayCurrentCapRule):
            targets = bay_ids if rule.bays == "all" else rule.bays
            for b in targets:
                per_bay.setdefault(b, []).append((rule, rule.amps))
        elif isinstance(rule, SitePowerCapRule):
            power.append((rule, rule.kw * 1000.0))

    caps: dict[str, tuple[float, str]] = {}
    # Group conflicts by (applied, overridden) so "all bays" rules give one record, not 64.
    grouped: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}
    details: dict[tuple[str, str, tuple[str, ...]], str] = {}
    for bay in bay_ids:
        cands = per_bay.get(bay)
        if not cands:
            continue
        # min() keeps the first of equal values, i.e. the highest priority one.
        winner, value = min(cands, key=lambda rv: rv[1])
        caps[bay] = (value, winner.id)
        losers = _contradicting(winner, value, cands)
        if losers:
            key = ("contradiction", winner.id, losers)
            grouped.setdefault(key, []).append(bay)
            details[key] = (
                f"rule {winner.id!r} caps at {value} A while {', '.join(repr(x) for x in losers)} "
                "of higher or equal priority allow more; the lower limit applies"
            )
        if value < bay_min_a.get(bay, 0.0):
            key = ("below_min", winner.id, ())
            grouped.setdefault(key, []).append(bay)
            details[key] = (
                f"rule {winner.id!r} caps at {value} A, below the minimum charging current: "
                "the bay is paused"
            )

    site_power: tuple[float, str] | None = None
    if power:
        winner, value = min(power, key=lambda rv: rv[1])
        site_power = (value, winner.id)
        losers = _contradicting(winner, value, power)
        if losers:
            key = ("contradiction", winner.id, losers)
            grouped.setdefault(key, []).append(SITE_TARGET)
            details[key] = (
                f"rule {winner.id!r} caps charging at {value / 1000:g} kW while "
                f"{', '.join(repr(x) for x in losers)} of higher or equal priority allow more; "
                "the lower limit applies"
            )

    conflicts = tuple(
        RuleConflict(kind=k[0], targets=tuple(t), applied=k[1], overridden=k[2], detail=details[k])
        for k, t in sorted(grouped.items())
    )
    return ResolvedRules(bay_caps=caps, site_power=site_power, conflicts=conflicts)
