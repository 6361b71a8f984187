"""The station's ``[site_lease]`` section and the coordinator's own config file.

A station (``station.toml``)::

    [site_lease]
    site = "yard"          # the site's name in the topics (the coordinator's [coordinator] site)
    max_lease_s = 60       # a lease is never trusted longer than this, whatever it says
    report_interval_s = 0.2

The coordinator (``coordinator.toml``)::

    [coordinator]
    site = "yard"
    main_limit_a = 63
    main_guaranteed_headroom_a = 24
    main_reserve_a = 2
    site_meter = "st-a"    # whose grid meter measures the site (it reports it)
    lease_s = 10
    period_s = 1
    [[coordinator.stations]]
    id = "st-a"
    max_a = 32
    guaranteed_a = 12
    config = "/etc/edge-station/st-a.toml"   # optional: checked against this share
    [mqtt]                 # the broker, as in station.toml (user "coordinator")
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.core.config import ConfigError, load_config
from controller.load.coordinate import CoordinatorConfig, check_site_shares
from controller.load.model import PHASES
from controller.ports import PermanentError
from drivers.esp32.mqtt_config import MqttConfig, check_mqtt

_TOPIC_PART = r"^[A-Za-z0-9._-]+$"


class SiteLeaseSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str = Field(min_length=1, pattern=_TOPIC_PART)
    max_lease_s: float = Field(default=60.0, ge=1.0, le=3600.0)
    report_interval_s: float = Field(default=0.2, ge=0.05, le=10.0)


def _errors(prefix: str, err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        out.append(
            f"{prefix}{'.' + path if path else ''}: {e['msg'].removeprefix('Value error, ')}"
        )
    return out


def check_site_lease(section: dict[str, Any] | None) -> list[str]:
    if section is None:
        return []
    try:
        SiteLeaseSection.model_validate(section)
    except ValidationError as err:
        return _errors("site_lease", err)
    return []


def parse_site_lease(section: dict[str, Any]) -> SiteLeaseSection:
    problems = check_site_lease(section)
    if problems:
        raise PermanentError("; ".join(problems))
    return SiteLeaseSection.model_validate(section)


def topics(prefix: str, site: str) -> Topics:
    return Topics(f"{prefix}/site/{site}")


@dataclass(frozen=True, slots=True)
class Topics:
    base: str

    def lease(self, station: str) -> str:
        return f"{self.base}/lease/{station}"

    def report(self, station: str) -> str:
        return f"{self.base}/report/{station}"

    def all_reports(self) -> str:
        return f"{self.base}/report/+"

    @property
    def status(self) -> str:
        return f"{self.base}/coordinator"


# --------------------------------------------------------------------------- the coordinator's file


@dataclass(frozen=True, slots=True)
class CoordinatorFile:
    coordinator: CoordinatorConfig
    mqtt: MqttConfig


def read_coordinator_file(path: Path) -> tuple[CoordinatorFile | None, list[str]]:
    """The coordinator's config and its problems (the proof's among them), as sentences."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        return None, [f"The file cannot be read: {err.strerror or err}."]
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        return None, [f"The file is not valid TOML: {err}."]
    problems: list[str] = []
    extra = sorted(set(data) - {"coordinator", "mqtt"})
    if extra:
        problems.append(
            f"The file has sections a coordinator does not use: {', '.join(extra)} "
            "(it needs [coordinator] and [mqtt])."
        )
    if "coordinator" not in data:
        return None, [*problems, "The file has no [coordinator] section."]
    try:
        coord = CoordinatorConfig.model_validate(data["coordinator"])
    except ValidationError as err:
        return None, [*problems, *_errors("coordinator", err)]
    mqtt_section = data.get("mqtt")
    mqtt_problems = check_mqtt(mqtt_section)
    if mqtt_problems:
        return None, [*problems, *mqtt_problems]
    problems += check_site_shares(coord)
    problems += _check_station_files(coord, path.parent)
    return CoordinatorFile(coord, MqttConfig.model_validate(mqtt_section)), problems


def _check_station_files(coord: CoordinatorConfig, base: Path) -> list[str]:
    out: list[str] = []
    for share in coord.stations:
        if share.config is None:
            continue
        file = Path(share.config)
        if not file.is_absolute():
            file = base / file
        try:
            cfg = load_config(file)
        except ConfigError as err:
            out.append(
                f"Station {share.id}'s config {file} is not valid: {'; '.join(err.problems)}."
            )
            continue
        if cfg.station.id != share.id:
            out.append(f"Station {share.id}'s config {file} is for station {cfg.station.id}.")
        lease = cfg.site_lease or {}
        if lease.get("site") != coord.site:
            out.append(
                f"Station {share.id} does not take its share from site {coord.site}: "
                f'add [site_lease] site = "{coord.site}" to {file}.'
            )
        if cfg.site is None:
            out.append(f"Station {share.id} has no load management ([site]) to keep its share.")
            continue
        for p, phase in enumerate(PHASES):
            own = cfg.site.main_guaranteed_headroom_a[p]
            if own > share.guaranteed_a[p] + 1e-9:
                out.append(
                    f"On {phase} station {share.id} falls back to {own:g} A (its guaranteed "
                    f"headroom) but the site guarantees it only {share.guaranteed_a[p]:g} A: "
                    "lower the station's guaranteed headroom or raise its share here."
                )
    return out
