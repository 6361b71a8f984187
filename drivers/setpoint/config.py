"""The ``[external]`` section: leases, fallbacks, the grid operator's power, and the transports.

Validated here (the controller keeps the section as a raw dict)::

    [external]
    lease_s = 60            # a limit not refreshed within this lapses to the fallback
    fallback_site_a = 6     # per phase, while the site's lease has lapsed (and before the first)
    fallback_bay_a = 6      # a bay whose own lease lapsed
    grid_operator_kw = 4.2  # the site's power while the grid operator's signal is active
    [external.mqtt]         # topics on the [mqtt] broker (see REGISTERS.md)
    [external.modbus]       # the station as a Modbus TCP server (no authentication:
    host = "192.168.1.10"   #   default 127.0.0.1; a LAN address only on a trusted network)
    port = 5020
    unit_id = 1
    [external.http]         # POST /limit with a bearer token
    host = "192.168.1.10"
    port = 8091
    token_file = "hems.token"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.ports import PermanentError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttSource(_Strict):
    pass


class ModbusSource(_Strict):
    # Modbus has no authentication: listen on the LAN only when the installer says so.
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=5020, ge=0, le=65535)
    unit_id: int = Field(default=1, ge=0, le=247)


class HttpSource(_Strict):
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8091, ge=0, le=65535)
    token_file: Path

    def token(self) -> str:
        try:
            return self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PermanentError(f"external.http.token_file: cannot read: {exc}") from exc


class ExternalSection(_Strict):
    lease_s: float = Field(default=60.0, ge=5, le=3600)
    fallback_site_a: float = Field(default=6.0, ge=0, le=1000)
    fallback_bay_a: float = Field(default=6.0, ge=0, le=1000)
    grid_operator_kw: float = Field(default=4.2, ge=0, le=1000)
    mqtt: MqttSource | None = None
    modbus: ModbusSource | None = None
    http: HttpSource | None = None


def check_external(section: dict[str, Any] | None) -> list[str]:
    """Problems of ``[external]`` as ``external.path: message`` lines."""
    if section is None:
        return []
    try:
        cfg = ExternalSection.model_validate(section)
    except ValidationError as err:
        out = []
        for e in err.errors():
            path = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            out.append(f"external{'.' + path if path else ''}: {msg}")
        return out
    if cfg.http is not None:
        f = cfg.http.token_file
        if not f.is_file():
            return [f"external.http.token_file: {f} is not a readable file"]
        if len(cfg.http.token()) < 16:
            return ["external.http.token_file: the token must be at least 16 characters long"]
    return []


def parse_external(section: dict[str, Any] | None) -> ExternalSection:
    problems = check_external(section)
    if problems:
        raise PermanentError("; ".join(problems))
    return ExternalSection.model_validate(section or {})
