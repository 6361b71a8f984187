"""Configuration of Modbus meters (a ``[[meters]]`` entry of station.toml) and the factory.

Meters whose ``bus`` is the same serial device (or the same TCP host and
port, e.g. an RS-485 gateway) share one :class:`ModbusBus` and so one lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controller.ports import Clock, PermanentError

from .bus import Endpoint, ModbusBus, SerialEndpoint, TcpEndpoint
from .maps import PROTOCOL_MAX_REGISTERS, MapError, Quantity, RegisterMap, load_map
from .meter import ModbusMeter


class TcpBusConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["tcp"] = "tcp"
    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)
    timeout_s: float = Field(1.0, gt=0, le=30)
    inter_frame_gap_s: float | None = Field(None, ge=0, le=1, description="default 0")
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)


class SerialBusConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["rtu"] = "rtu"
    device: str = Field(min_length=1, description="e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baudrate: int | None = Field(None, gt=0, description="default: the map's factory default")
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None
    bytesize: Literal[7, 8] = 8
    timeout_s: float = Field(1.0, gt=0, le=30)
    inter_frame_gap_s: float | None = Field(None, ge=0, le=1, description="default 3.5 characters")
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)


BusConfig = Annotated[TcpBusConfig | SerialBusConfig, Field(discriminator="transport")]


class MeterConfig(BaseModel):
    """One Modbus meter. Example (station.toml)::

    [[meters]]
    name = "grid"
    map = "sdm630"              # bundled map name, or a path to a map file
    unit_id = 1
    poll_interval_s = 0.5
    bus = { transport = "rtu", device = "/dev/ttyUSB0", parity = "E" }
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    map: str = Field(min_length=1)
    unit_id: int = Field(1, ge=0, le=255)
    poll_interval_s: float = Field(1.0, ge=0.1, le=60)
    max_registers: int | None = Field(
        None, ge=1, le=PROTOCOL_MAX_REGISTERS, description="overrides the map's per-request limit"
    )
    every_poll: tuple[Quantity, ...] | None = Field(
        None,
        description="quantities read on every poll (the others one request per poll, in turn); "
        "default: what the meter's role needs, all for a bare meter",
    )
    bus: BusConfig

    @model_validator(mode="after")
    def _check(self) -> MeterConfig:
        if isinstance(self.bus, SerialBusConfig) and not 1 <= self.unit_id <= 247:
            raise ValueError("unit_id must be 1..247 on a serial bus")
        try:
            load_map(self.map)
        except MapError as exc:  # surface as a validation error of this entry's `map`
            raise ValueError(f"map: {exc}") from exc
        return self

    def register_map(self) -> RegisterMap:
        return load_map(self.map)

    def endpoint(self) -> Endpoint:
        b = self.bus
        if isinstance(b, TcpBusConfig):
            return TcpEndpoint(b.host, b.port)
        serial = self.register_map().serial
        return SerialEndpoint(
            device=b.device,
            baudrate=b.baudrate or serial.baudrate,
            parity=b.parity or serial.parity,
            stopbits=b.stopbits or serial.stopbits,
            bytesize=b.bytesize,
        )


def _bus_key(cfg: MeterConfig) -> tuple[str, ...]:
    b = cfg.bus
    if isinstance(b, TcpBusConfig):
        return ("tcp", b.host, str(b.port))
    return ("rtu", str(Path(b.device)))


def build_meters(
    configs: Iterable[MeterConfig], *, clock: Clock | None = None
) -> list[ModbusMeter]:
    """Build the meters, one shared bus per serial device / TCP endpoint.

    Raises :class:`PermanentError` when meters on one bus disagree about it
    (baud rate, timeout...) or two meters share a name or a unit id on a bus.
    """
    buses: dict[tuple[str, ...], tuple[MeterConfig, ModbusBus]] = {}
    units: set[tuple[tuple[str, ...], int]] = set()
    names: set[str] = set()
    meters: list[ModbusMeter] = []
    for cfg in configs:
        if cfg.name in names:
            raise PermanentError(f"meter {cfg.name!r}: name used twice")
        names.add(cfg.name)
        key = _bus_key(cfg)
        if (key, cfg.unit_id) in units:
            raise PermanentError(
                f"meter {cfg.name!r}: unit_id {cfg.unit_id} already used on that bus"
            )
        units.add((key, cfg.unit_id))
        endpoint = cfg.endpoint()
        if key in buses:
            first, bus = buses[key]
            settings = cfg.bus.model_dump(exclude={"baudrate", "parity", "stopbits"})
            if endpoint != bus.endpoint or settings != first.bus.model_dump(
                exclude={"baudrate", "parity", "stopbits"}
            ):
                raise PermanentError(
                    f"meter {cfg.name!r}: bus settings differ from meter {first.name!r} on the same bus "
                    f"({endpoint} vs {bus.endpoint}); set them explicitly and identically"
                )
        else:
            b = cfg.bus
            bus = ModbusBus(
                endpoint,
                timeout_s=b.timeout_s,
                inter_frame_gap_s=b.inter_frame_gap_s,
                backoff_initial_s=b.backoff_initial_s,
                backoff_max_s=b.backoff_max_s,
                clock=clock,
            )
            buses[key] = (cfg, bus)
        meters.append(
            ModbusMeter(
                cfg.name,
                cfg.register_map(),
                bus,
                unit_id=cfg.unit_id,
                poll_interval_s=cfg.poll_interval_s,
                max_registers=cfg.max_registers,
                every_poll=cfg.every_poll,
                clock=clock,
            )
        )
    return meters
