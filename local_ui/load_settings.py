"""The load manager's settings sections: site limits and circuits, modes, rules.

Each section is a small pydantic model over part of the running
:class:`controller.load.LoadConfig`. A change is merged into the running
config and validated as a whole (``LoadConfig`` cross-checks: a limit below a
bay's minimum current, an unknown circuit or bay...), then the lease proof
(:func:`check_safe_shares`) must still hold; otherwise it is refused with the
offending field named. Rule conflicts over a whole week are computed with the
load manager's own resolution (:func:`resolve_rules`) and returned as warnings
before and after saving: saving with conflicts is allowed, the lower limit wins.

A valid change is applied live with :meth:`controller.core.loadloop.LoadLoop.reconfigure`
(decreases at the next step, increases ramp) and mirrored into ``station.cfg``.
"""

from __future__ import annotations

import datetime as dt
import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.core.station import Station
from controller.load import (
    CircuitConfig,
    LoadConfig,
    RuleConfig,
    SitePowerCapRule,
    active_rules,
    check_safe_shares,
    resolve_rules,
)
from controller.load.model import MIN_SWITCH_TIME_S, WEEKDAYS, PerPhaseA
from local_ui.messages import load_refusal, rule_warning, validation_message
from local_ui.settings import Section, SettingRefused, SettingsRegistry, SettingWarning

NO_LOAD_MANAGER = (
    "This station has no load manager (no [site] in station.toml): every bay gets its "
    "configured maximum current. Add a [site] section to manage the site's limits."
)
_REF_MONDAY = dt.date(2024, 1, 1)  # any Monday: rule windows only know weekdays and times
_PATH = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")


class SiteLimitsSettings(BaseModel):
    """The main breaker and the circuits below it (per-phase values: one number or three)."""

    model_config = ConfigDict(extra="forbid")

    main_limit_a: PerPhaseA = Field(
        default=(0.0, 0.0, 0.0), title="Main breaker limit (A per phase)"
    )
    main_guaranteed_headroom_a: PerPhaseA = Field(
        default=(0.0, 0.0, 0.0),
        title="Guaranteed headroom (A per phase)",
        description="always free at the main breaker, even with the grid meter down",
    )
    main_reserve_a: PerPhaseA = Field(
        default=(0.0, 0.0, 0.0),
        title="Reserve (A per phase)",
        description="kept free for building load steps",
    )
    circuits: tuple[CircuitConfig, ...] = Field(default=(), title="Circuits")


class LoadModesSettings(BaseModel):
    """Eco current and the relay protection (anti-flapping)."""

    model_config = ConfigDict(extra="forbid")

    eco_current_a: float = Field(default=10.0, gt=0, le=80, title="Eco current (A)")
    # The load model's floor, so the form cannot offer a value it would refuse.
    min_on_time_s: float = Field(
        default=120.0, ge=MIN_SWITCH_TIME_S, le=3600, title="Minimum on time (s)"
    )
    min_off_time_s: float = Field(
        default=60.0, ge=MIN_SWITCH_TIME_S, le=3600, title="Minimum off time (s)"
    )
    relay_cycles_per_hour: int = Field(
        default=20, ge=1, le=120, title="Relay cycle budget (starts per hour)"
    )


class LoadRulesSettings(BaseModel):
    """Owner rules: ``bay_current_cap`` (amps, bays) and ``site_power_cap`` (kw), with windows."""

    model_config = ConfigDict(extra="forbid")

    rules: tuple[RuleConfig, ...] = Field(default=(), title="Rules")


_SITE_FIELDS = ("main_limit_a", "main_guaranteed_headroom_a", "main_reserve_a", "circuits")
_MODE_FIELDS = ("eco_current_a", "min_on_time_s", "min_off_time_s", "relay_cycles_per_hour")


# ---------------------------------------------------------------------- composition


def _running(station: Station) -> LoadConfig:
    if station.load is None:
        raise SettingRefused(NO_LOAD_MANAGER)
    return station.load.config


def refusal(err: ValidationError) -> SettingRefused:
    """The first error of a whole-config validation, with the offending field's path."""
    e = err.errors()[0]
    msg = str(e["msg"]).removeprefix("Value error, ")
    loc = ".".join(str(p) for p in e["loc"])
    m = _PATH.match(msg)
    inner = m.group(1) if m else ""
    field = ".".join(x for x in (loc, inner) if x)
    if e["type"] != "value_error":
        return SettingRefused(validation_message(e), field)
    if loc and inner:
        text = f"{loc}.{msg}"
    elif loc:
        text = f"{loc}: {msg}"
    else:
        text = msg
    return SettingRefused(load_refusal(text, field), field)


def compose(station: Station, value: BaseModel) -> LoadConfig:
    """The running config with a section's ``value`` merged in, validated as a whole."""
    data = _running(station).model_dump(mode="json", by_alias=True)
    if isinstance(value, SiteLimitsSettings | LoadModesSettings):
        data["site"].update(value.model_dump(mode="json", by_alias=True))
    elif isinstance(value, LoadRulesSettings):
        data["rules"] = [r.model_dump(mode="json", by_alias=True) for r in value.rules]
    else:  # pragma: no cover - only the sections below call this
        raise TypeError(type(value).__name__)
    try:
        new = LoadConfig.model_validate(data)
    except ValidationError as err:
        raise refusal(err) from None
    problems = check_safe_shares(new.site, new.bays)
    if problems:
        raise SettingRefused(
            " ".join(load_refusal(p) for p in problems[:3]),
            "main_guaranteed_headroom_a",
        )
    return new


# ---------------------------------------------------------------------- rule conflicts


_DAY = 86400


def _at(second: int) -> tuple[str, str]:
    day, s = divmod(second % (7 * _DAY), _DAY)
    text = f"{s // 3600:02d}:{s // 60 % 60:02d}" + (f":{s % 60:02d}" if s % 60 else "")
    return WEEKDAYS[day], text


def _span(start: int, end: int) -> str:
    (d0, t0), (d1, t1) = _at(start), _at(end)
    if end - start <= _DAY and (d0 == d1 or t1 == "00:00"):
        return f"{d0} {t0}–{'24:00' if d0 != d1 else t1}"
    return f"{d0} {t0}–{d1} {t1}"


def week_conflicts(cfg: LoadConfig) -> list[SettingWarning]:
    """Every rule conflict that happens at some time of the week, with when it happens."""
    bay_ids = [b.id for b in cfg.bays]
    mins = {b.id: b.min_current_a for b in cfg.bays}
    bounds = {0}
    for r in cfg.rules:
        if r.from_time is not None and r.to_time is not None:
            bounds.update(
                t.hour * 3600 + t.minute * 60 + t.second for t in (r.from_time, r.to_time)
            )
    # Rule activity only changes at a window's ends or at midnight, so the week is a
    # sequence of intervals starting at those instants, each with one set of conflicts.
    starts = [d * _DAY + x for d in range(7) for x in sorted(bounds)]
    week = 7 * _DAY
    found: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], SettingWarning] = {}
    spans: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], list[list[int]]] = {}
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else week
        at = dt.datetime.combine(_REF_MONDAY, dt.time()) + dt.timedelta(seconds=start)
        res = resolve_rules(active_rules(cfg.rules, at), bay_ids, mins)
        for c in res.conflicts:
            key = (c.kind, c.applied, c.overridden, c.targets)
            if key not in found:
                found[key] = {
                    "kind": c.kind,
                    "message": rule_warning(c.detail)[:-1],
                    "applied": c.applied,
                    "overridden": list(c.overridden),
                    "targets": list(c.targets),
                }
            runs = spans.setdefault(key, [])
            if runs and runs[-1][1] == start:
                runs[-1][1] = end
            else:
                runs.append([start, end])
    out: list[SettingWarning] = []
    for key, entry in found.items():
        runs = spans[key]
        if len(runs) > 1 and runs[0][0] == 0 and runs[-1][1] == week:
            runs[0] = [runs[-1][0], runs[0][1] + week]  # Sunday night into Monday morning
            runs.pop()
        total = sum(b - a for a, b in runs)
        when = ["always"] if total >= week else [_span(a, b) for a, b in runs]
        more = f" and {len(when) - 3} more" if len(when) > 3 else ""
        entry["when"] = when
        entry["message"] = f"{entry['message']} ({', '.join(when[:3])}{more})."
        out.append(entry)
    out.extend(_site_power_below_min(cfg))
    return out


def _site_power_below_min(cfg: LoadConfig) -> list[SettingWarning]:
    volts = cfg.site.nominal_voltage_v
    smallest = min(
        (b.min_current_a * len(b.loaded_phases()) * volts for b in cfg.bays),
        default=0.0,
    )
    out: list[SettingWarning] = []
    for r in cfg.rules:
        if isinstance(r, SitePowerCapRule) and 0 < r.kw * 1000.0 < smallest:
            out.append(
                {
                    "kind": "below_min",
                    "message": f"Rule “{r.id}” caps the site at {r.kw:g} kW, below the "
                    f"{smallest / 1000:.2f} kW any bay needs at its minimum current: "
                    "no bay can charge while it applies.",
                    "applied": r.id,
                    "overridden": [],
                    "targets": ["site"],
                    "when": [],
                }
            )
    return out


# ---------------------------------------------------------------------- sections


def _get_site(station: Station) -> BaseModel:
    if station.load is None:
        return SiteLimitsSettings()
    site = station.load.config.site
    return SiteLimitsSettings.model_validate({k: getattr(site, k) for k in _SITE_FIELDS})


def _get_modes(station: Station) -> BaseModel:
    if station.load is None:
        return LoadModesSettings()
    site = station.load.config.site
    return LoadModesSettings.model_validate({k: getattr(site, k) for k in _MODE_FIELDS})


def _get_rules(station: Station) -> BaseModel:
    if station.load is None:
        return LoadRulesSettings()
    return LoadRulesSettings(rules=station.load.config.rules)


def _check(station: Station, value: BaseModel) -> list[SettingWarning]:
    new = compose(station, value)
    return week_conflicts(new) if isinstance(value, LoadRulesSettings) else []


async def _apply(station: Station, value: BaseModel) -> None:
    new = compose(station, value)
    loop = station.load
    assert loop is not None  # compose refuses without one
    loop.reconfigure(new)
    # Keep the station's own view in step (what load_manager_config reads, OCPP, check-config).
    station.cfg.site = new.site
    station.cfg.rules = list(new.rules)


def _unavailable(station: Station) -> str | None:
    return NO_LOAD_MANAGER if station.load is None else None


def add_load_sections(reg: SettingsRegistry) -> None:
    reg.add(
        Section(
            "site",
            "Site limits and circuits",
            SiteLimitsSettings,
            _get_site,
            _apply,
            frozenset({"owner", "installer"}),
            check=_check,
            unavailable=_unavailable,
            description="Currents per phase. A change must leave every bay its minimum "
            "current and keep the safe shares within the guaranteed headroom.",
        )
    )
    reg.add(
        Section(
            "load_modes",
            "Modes and relay protection",
            LoadModesSettings,
            _get_modes,
            _apply,
            frozenset({"owner"}),
            check=_check,
            unavailable=_unavailable,
            description="Eco charges at this current; minimum on/off times and the hourly "
            "start budget protect relays and vehicles from flapping.",
        )
    )
    reg.add(
        Section(
            "load_rules",
            "Load rules",
            LoadRulesSettings,
            _get_rules,
            _apply,
            frozenset({"owner"}),
            check=_check,
            unavailable=_unavailable,
            description="When rules overlap, the lowest limit applies (safety first); a rule "
            "of higher or equal priority that allows more is reported as a conflict.",
        )
    )
