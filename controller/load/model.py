"""Load-management configuration: the site tree, the bays' electrical data and owner rules.

These pydantic models are embedded in ``station.toml``. Every cross-reference
(circuit parents, a bay's circuit, a rule's bays) and every limit that would make
a bay unable to charge at its minimum current is checked here, and each error
message starts with the path of the offending field.

Currents are per phase in amperes; per-phase values accept a single number
(the same on L1, L2 and L3) or a list of three. On a single-phase site
(``phases = 1``) only the L1 values count.

Timers have safe minimums (:data:`MIN_SWITCH_TIME_S` and friends): below them
the loop reacts to its own switching and bays flap, so they are refused with
the minimum and the reason rather than clamped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

PhaseName = Literal["L1", "L2", "L3"]
PHASES: tuple[PhaseName, PhaseName, PhaseName] = ("L1", "L2", "L3")
Amps3 = tuple[float, float, float]
MAIN_ID = "main"
"""Node id of the main breaker: the root of the site tree."""

MIN_EV_RESPONSE_S = 5.0
"""IEC 61851-1 gives a vehicle up to 5 s to follow a lower PWM duty cycle."""
MIN_SWITCH_TIME_S = 30.0
"""Floor of ``min_on_time_s`` and ``min_off_time_s`` (and never below ``ev_response_s``)."""
MIN_INCREASE_DELAY_S = 1.0
"""One load-loop period: an increase must survive at least one more reading."""
MIN_INCREASE_HYSTERESIS_A = 0.5
"""Five setpoint steps of 0.1 A: above meter noise and rounding."""

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _per_phase(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (value, value, value)
    return value


NonNegA = Annotated[float, Field(ge=0)]
PerPhaseA = Annotated[tuple[NonNegA, NonNegA, NonNegA], BeforeValidator(_per_phase)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _switch_minimum(info: ValidationInfo) -> float:
    # ev_response_s is declared (so validated) before the switch times.
    ev_response = float(info.data.get("ev_response_s", MIN_EV_RESPONSE_S))
    return max(MIN_SWITCH_TIME_S, ev_response)


class CircuitConfig(_Model):
    """A circuit (sub-distribution, RCD group...) below the main breaker or another circuit."""

    id: str = Field(min_length=1)
    parent: str = MAIN_ID
    limit_a: PerPhaseA
    guaranteed_headroom_a: PerPhaseA = (0.0, 0.0, 0.0)
    """Current the owner guarantees is free on this circuit without a meter (safe shares, fallback)."""

    @model_validator(mode="after")
    def _headroom_within_limit(self) -> Self:
        for p, (head, lim) in enumerate(zip(self.guaranteed_headroom_a, self.limit_a, strict=True)):
            if head > lim:
                raise ValueError(
                    f"guaranteed_headroom_a: {head} A on {PHASES[p]} above limit_a {lim} A"
                )
        if self.id == MAIN_ID:
            raise ValueError(f"id: {MAIN_ID!r} is reserved for the main breaker")
        return self


class SiteConfig(_Model):
    """The main breaker, the circuit tree and the timing of the load controller."""

    phases: Literal[1, 3] = 3
    """The supply: 3 (L1, L2, L3) or 1 (L1 only, e.g. a single-phase grid meter such as an SDM120)."""
    main_limit_a: PerPhaseA
    main_guaranteed_headroom_a: PerPhaseA = (0.0, 0.0, 0.0)
    main_reserve_a: PerPhaseA = (0.0, 0.0, 0.0)
    """Kept free at the main breaker for building load steps while the EVs take time to follow."""
    circuits: tuple[CircuitConfig, ...] = ()
    nominal_voltage_v: float = Field(default=230.0, gt=0)
    grid_meter_timeout_s: float = Field(default=3.0, gt=0)
    fallback_budget_a: PerPhaseA | None = None
    """EV budget at the main breaker while the grid meter has FAILED; default: the guaranteed headroom."""
    eco_current_a: float = Field(default=10.0, gt=0)
    overcurrent_tolerance_a: float = Field(default=2.0, ge=0)
    overcurrent_s: float = Field(default=10.0, ge=0)
    ev_response_s: float = Field(default=5.0, ge=0)
    """How long an EV may take to follow a lower setpoint before that counts as overcurrent."""
    min_on_time_s: float = Field(default=120.0, ge=0)
    min_off_time_s: float = Field(default=60.0, ge=0)
    relay_cycles_per_hour: int = Field(default=20, ge=1)
    rotation_slot_s: float = Field(default=900.0, gt=0)
    """When not everyone fits at minimum current, waiting bays take their turn this often."""
    ramp_step_a: float = Field(default=2.0, gt=0)
    increase_hysteresis_a: float = Field(default=1.0, ge=0)
    increase_delay_s: float = Field(default=3.0, ge=0)
    solar_start_margin_w: float = Field(default=300.0, ge=0)
    solar_stop_margin_w: float = Field(default=300.0, ge=0)

    @property
    def phase_indices(self) -> tuple[int, ...]:
        """The phases the site is supplied on (indices 0..2)."""
        return (0, 1, 2) if self.phases == 3 else (0,)

    # Each timer is checked on its own so that check-config lists every one that is too
    # short, each with its minimum and why: installers read these messages.

    @field_validator("ev_response_s")
    @classmethod
    def _ev_response(cls, v: float) -> float:
        if v < MIN_EV_RESPONSE_S:
            raise ValueError(
                f"{v:g} s is below the safe minimum of {MIN_EV_RESPONSE_S:g} s: IEC 61851-1 "
                "gives a vehicle up to 5 s to follow a lower setpoint, and a shorter value "
                "would hand out current it may still draw"
            )
        return v

    @field_validator("min_on_time_s")
    @classmethod
    def _min_on(cls, v: float, info: ValidationInfo) -> float:
        least = _switch_minimum(info)
        if v < least:
            raise ValueError(
                f"{v:g} s is below the safe minimum of {least:g} s: a vehicle takes up to "
                "ev_response_s to start drawing and the meters a few seconds more to show it; "
                "pausing a bay sooner reacts to its own switch-on and makes bays flap, "
                "wearing their relays"
            )
        return v

    @field_validator("min_off_time_s")
    @classmethod
    def _min_off(cls, v: float, info: ValidationInfo) -> float:
        least = _switch_minimum(info)
        if v < least:
            raise ValueError(
                f"{v:g} s is below the safe minimum of {least:g} s: a paused vehicle takes up "
                "to ev_response_s to stop drawing and the meters a few seconds more to show "
                "it; switching it on sooner makes bays flap, wearing their relays"
            )
        return v

    @field_validator("increase_delay_s")
    @classmethod
    def _increase_delay(cls, v: float) -> float:
        if v < MIN_INCREASE_DELAY_S:
            raise ValueError(
                f"{v:g} s is below the safe minimum of {MIN_INCREASE_DELAY_S:g} s: an increase "
                "must hold for at least one load-loop period so that a single meter reading "
                "never raises a setpoint"
            )
        return v

    @field_validator("increase_hysteresis_a")
    @classmethod
    def _hysteresis(cls, v: float) -> float:
        if v < MIN_INCREASE_HYSTERESIS_A:
            raise ValueError(
                f"{v:g} A is below the safe minimum of {MIN_INCREASE_HYSTERESIS_A:g} A: below "
                "it, meter noise and the 0.1 A setpoint resolution make setpoints go up and "
                "down with every reading"
            )
        return v

    @model_validator(mode="after")
    def _check_tree(self) -> Self:
        for p, (head, lim) in enumerate(
            zip(self.main_guaranteed_headroom_a, self.main_limit_a, strict=True)
        ):
            if p not in self.phase_indices:
                continue
            if head > lim:
                raise ValueError(
                    f"main_guaranteed_headroom_a: {head} A on {PHASES[p]} above main_limit_a {lim} A"
                )
        for p, (res, lim) in enumerate(zip(self.main_reserve_a, self.main_limit_a, strict=True)):
            if p in self.phase_indices and res >= lim:
                raise ValueError(
                    f"main_reserve_a: {res} A on {PHASES[p]} leaves nothing of main_limit_a {lim} A"
                )
        if self.fallback_budget_a is not None:
            for p, (fb, head) in enumerate(
                zip(self.fallback_budget_a, self.main_guaranteed_headroom_a, strict=True)
            ):
                if p in self.phase_indices and fb > head:
                    raise ValueError(
                        f"fallback_budget_a: {fb} A on {PHASES[p]} above "
                        f"main_guaranteed_headroom_a {head} A (nothing else is known to be free "
                        "when the grid meter has failed)"
                    )
        ids: dict[str, int] = {}
        for i, c in enumerate(self.circuits):
            if c.id in ids:
                raise ValueError(f"circuits[{i}].id: duplicate circuit id {c.id!r}")
            ids[c.id] = i
        for i, c in enumerate(self.circuits):
            if c.parent != MAIN_ID and c.parent not in ids:
                raise ValueError(f"circuits[{i}].parent: unknown circuit {c.parent!r}")
        for i, c in enumerate(self.circuits):
            seen = {c.id}
            node = c.parent
            while node != MAIN_ID:
                if node in seen:
                    raise ValueError(f"circuits[{i}].parent: cycle through {node!r}")
                seen.add(node)
                node = self.circuits[ids[node]].parent
        return self

    def circuit(self, circuit_id: str) -> CircuitConfig | None:
        for c in self.circuits:
            if c.id == circuit_id:
                return c
        return None

    def path_to_main(self, circuit_id: str) -> list[tuple[str, Amps3]]:
        """(node id, limit) from ``circuit_id`` up to and including the main breaker."""
        path: list[tuple[str, Amps3]] = []
        node = circuit_id
        while node != MAIN_ID:
            c = self.circuit(node)
            if c is None:
                raise KeyError(node)
            path.append((c.id, c.limit_a))
            node = c.parent
        path.append((MAIN_ID, self.main_limit_a))
        return path

    @property
    def effective_fallback_a(self) -> Amps3:
        return (
            self.fallback_budget_a
            if self.fallback_budget_a is not None
            else self.main_guaranteed_headroom_a
        )


class BayLoadConfig(_Model):
    """A bay as the load manager sees it."""

    id: str = Field(min_length=1)
    circuit_id: str = MAIN_ID
    phases: Literal[1, 3] = 3
    phase: PhaseName | None = None
    """The phase a single-phase bay loads: required, because it is how the bay is wired."""
    min_current_a: float = Field(default=6.0, gt=0)
    max_current_a: float = Field(gt=0)
    safe_current_a: float = Field(default=0.0, ge=0)
    """Where the node falls by itself when its lease expires: 0 or within [min, max]."""

    @model_validator(mode="after")
    def _check_currents(self) -> Self:
        if self.max_current_a < self.min_current_a:
            raise ValueError(
                f"max_current_a: {self.max_current_a} A below min_current_a {self.min_current_a} A"
            )
        if self.safe_current_a > 0 and not (
            self.min_current_a <= self.safe_current_a <= self.max_current_a
        ):
            raise ValueError(
                f"safe_current_a: {self.safe_current_a} A must be 0 or within "
                f"[{self.min_current_a}, {self.max_current_a}] A"
            )
        if self.phases == 1 and self.phase is None:
            raise ValueError(
                f"phase: bay {self.id!r} is single-phase: say which phase it is wired to "
                '(phase = "L1", "L2" or "L3")'
            )
        return self

    def loaded_phases(self) -> tuple[int, ...]:
        """Phase indices (0..2) this bay loads."""
        if self.phases == 3:
            return (0, 1, 2)
        assert self.phase is not None  # validated: a single-phase bay names its phase
        return (PHASES.index(self.phase),)


class _RuleBase(_Model):
    id: str = Field(min_length=1)
    priority: int = 0
    """Higher wins when rules agree in direction; a contradiction is reported (the lower limit applies)."""
    from_time: dt.time | None = Field(default=None, alias="from")
    to_time: dt.time | None = Field(default=None, alias="to")
    days: tuple[Weekday, ...] = WEEKDAYS
    """Days on which the window starts (a window past midnight belongs to the day it began)."""

    @model_validator(mode="after")
    def _check_window(self) -> Self:
        if (self.from_time is None) != (self.to_time is None):
            raise ValueError("from/to: give both ends of the time window or neither")
        if self.from_time is not None and self.from_time == self.to_time:
            raise ValueError("to: the time window is empty (from == to)")
        if not self.days:
            raise ValueError("days: at least one day")
        return self


class BayCurrentCapRule(_RuleBase):
    """Limit the listed bays (or all) to ``amps`` per phase during the window."""

    kind: Literal["bay_current_cap"] = "bay_current_cap"
    amps: float = Field(ge=0)
    bays: tuple[str, ...] | Literal["all"] = "all"


class SitePowerCapRule(_RuleBase):
    """Cap the total charging power of the station (all bays, all phases) at ``kw``."""

    kind: Literal["site_power_cap"] = "site_power_cap"
    kw: float = Field(ge=0)


RuleConfig = Annotated[BayCurrentCapRule | SitePowerCapRule, Field(discriminator="kind")]


class LoadConfig(_Model):
    """Everything the load manager needs: cross-checked as a whole."""

    site: SiteConfig
    bays: tuple[BayLoadConfig, ...] = ()
    rules: tuple[RuleConfig, ...] = ()

    @model_validator(mode="after")
    def _check_refs(self) -> Self:
        ids: set[str] = set()
        for i, bay in enumerate(self.bays):
            if bay.id in ids:
                raise ValueError(f"bays[{i}].id: duplicate bay id {bay.id!r}")
            ids.add(bay.id)
            if self.site.phases == 1 and bay.loaded_phases() != (0,):
                what = "three-phase" if bay.phases == 3 else f"wired to {bay.phase}"
                raise ValueError(
                    f"bays[{i}].phases: bay {bay.id!r} is {what}, but the site is single-phase "
                    '([site] phases = 1): set phases = 1 and phase = "L1"'
                )
            if bay.circuit_id != MAIN_ID and self.site.circuit(bay.circuit_id) is None:
                raise ValueError(f"bays[{i}].circuit_id: unknown circuit {bay.circuit_id!r}")
            for node, limit in self.site.path_to_main(bay.circuit_id):
                for p in bay.loaded_phases():
                    if limit[p] < bay.min_current_a:
                        where = (
                            "site.main_limit_a" if node == MAIN_ID else f"circuit {node!r} limit_a"
                        )
                        raise ValueError(
                            f"bays[{i}].min_current_a: {bay.min_current_a} A does not fit "
                            f"{where} {limit[p]} A on {PHASES[p]}"
                        )
            if self.site.eco_current_a < bay.min_current_a:
                raise ValueError(
                    f"site.eco_current_a: {self.site.eco_current_a} A below bays[{i}].min_current_a "
                    f"{bay.min_current_a} A (Eco would never charge)"
                )
        rule_ids: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.id in rule_ids:
                raise ValueError(f"rules[{i}].id: duplicate rule id {rule.id!r}")
            rule_ids.add(rule.id)
            if isinstance(rule, BayCurrentCapRule) and rule.bays != "all":
                for b in rule.bays:
                    if b not in ids:
                        raise ValueError(f"rules[{i}].bays: unknown bay {b!r}")
        return self

    def bay(self, bay_id: str) -> BayLoadConfig:
        for b in self.bays:
            if b.id == bay_id:
                return b
        raise KeyError(bay_id)


def bay_phase_map(bays: Sequence[BayLoadConfig]) -> dict[str, tuple[int, ...]]:
    return {b.id: b.loaded_phases() for b in bays}
