"""The options of a ``transport = "ocpp"`` bus and the table of charger models.

A bus is one OCPP 1.6J server (``listen``, path ``/ocpp/<charge point id>``)
for the wallboxes of its bays. Its ``ocpp`` table holds the security profile
(0: none, 1: Basic auth, 2: Basic auth over TLS), the per-charger passwords,
the TLS files, and timing: how long a charging profile the station sends is
valid (the OCPP form of a lease) and how often the wallboxes report.
Charger quirks come from ``models.toml`` plus the bus's own ``charger_models``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

NOMINAL_V = 230.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChargerModel(_Strict):
    """What one wallbox model does differently (see ``models.toml``)."""

    vendor: str = ""
    model: str = ""
    measurands: list[str] = Field(
        default_factory=lambda: ["Current.Import", "Energy.Active.Import.Register"]
    )
    tx_default: bool = True
    rate_unit: Literal["A", "W"] = "A"
    fallback: Literal["profile", "none"] = "profile"
    min_interval_s: int = Field(default=1, ge=0, le=3600)


class WallboxBus(_Strict):
    security_profile: Literal[0, 1, 2] = 0
    passwords: dict[str, SecretStr] = Field(
        default_factory=dict, description="charge point id -> Basic auth password (profile 1, 2)"
    )
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    path_prefix: str = Field(default="/ocpp/", pattern=r"^/([A-Za-z0-9._-]+/)*$")
    heartbeat_s: int = Field(default=60, ge=1, le=86400)
    meter_interval_s: int = Field(
        default=2, ge=1, le=60, description="MeterValueSampleInterval asked of the wallboxes"
    )
    profile_validity_s: float = Field(
        default=30.0,
        ge=5.0,
        le=3600.0,
        description="validity of each limit the station sends; renewed at half of it",
    )
    response_timeout_s: float = Field(default=5.0, gt=0, le=60)
    offline_after_s: float = Field(
        default=10.0, ge=2.0, le=600, description="websocket silence after which a wallbox is lost"
    )
    models: dict[str, str] = Field(
        default_factory=dict, description="charge point id -> model name (else from its boot)"
    )
    charger_models: dict[str, ChargerModel] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _security(self) -> WallboxBus:
        if self.security_profile == 2 and (self.tls_cert_file is None or self.tls_key_file is None):
            raise ValueError("security_profile 2 needs tls_cert_file and tls_key_file")
        if self.security_profile >= 1 and not self.passwords:
            raise ValueError(
                f"security_profile {self.security_profile} needs a password per wallbox (passwords)"
            )
        known = set(builtin_models()) | set(self.charger_models)
        for cp, name in self.models.items():
            if name not in known:
                raise ValueError(
                    f"models.{cp}: unknown charger model {name!r} (known: {sorted(known)})"
                )
        return self

    def model_table(self) -> dict[str, ChargerModel]:
        return {**builtin_models(), **self.charger_models}


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int


def parse_listen(text: str) -> Listen:
    """``"0.0.0.0:8887"`` (``[::]:8887`` for IPv6); a clear ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f'listen: {text!r} is not "host:port" (e.g. "0.0.0.0:8887")')
    return Listen(host.strip("[]") or "0.0.0.0", int(port))


def builtin_models() -> dict[str, ChargerModel]:
    raw = resources.files("drivers.ocpp_wallbox").joinpath("models.toml").read_text("utf-8")
    return {name: ChargerModel.model_validate(v) for name, v in tomllib.loads(raw).items()}


def parse_bus(data: dict[str, Any] | None) -> WallboxBus:
    return WallboxBus.model_validate(data or {})


def bus_problems(prefix: str, data: dict[str, Any] | None) -> list[str]:
    try:
        parse_bus(data)
    except ValidationError as err:
        return [
            f"{'.'.join([prefix, *(str(p) for p in e['loc'])])}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        ]
    return []


def match_model(
    table: dict[str, ChargerModel], vendor: str, model: str, forced: str | None = None
) -> tuple[str, ChargerModel]:
    """The model named for this charger, else the first whose vendor and model prefix match."""
    if forced is not None and forced in table:
        return forced, table[forced]
    v, m = vendor.casefold(), model.casefold()
    for name, spec in table.items():
        if spec.vendor and spec.vendor.casefold() == v and m.startswith(spec.model.casefold()):
            return name, spec
    return "generic", table.get("generic", ChargerModel())


__all__ = [
    "NOMINAL_V",
    "ChargerModel",
    "Listen",
    "WallboxBus",
    "builtin_models",
    "bus_problems",
    "match_model",
    "parse_bus",
    "parse_listen",
]
