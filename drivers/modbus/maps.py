"""Register maps: one TOML data file per meter model, validated with pydantic.

A map says where each quantity lives (address, data type, function code),
how to scale it and which raw values mean "not available". The format is
documented for site owners in ``MAPS.md``; bundled maps live in ``maps/``.
This module owns parsing and validation only; decoding is in :mod:`codec`.
"""

from __future__ import annotations

import enum
import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from controller.ports import PermanentError

MAPS_DIR = Path(__file__).parent / "maps"

# Modbus allows at most 125 registers in one read (function 03/04).
PROTOCOL_MAX_REGISTERS = 125


class MapError(PermanentError):
    """A register map file is missing, unreadable or invalid. The message names the file and field."""


class Quantity(enum.StrEnum):
    """What a map field measures; each one lands in one :class:`MeterSample` attribute."""

    VOLTAGE_L1 = "voltage_l1"
    VOLTAGE_L2 = "voltage_l2"
    VOLTAGE_L3 = "voltage_l3"
    CURRENT_L1 = "current_l1"
    CURRENT_L2 = "current_l2"
    CURRENT_L3 = "current_l3"
    POWER_L1 = "power_l1"
    POWER_L2 = "power_l2"
    POWER_L3 = "power_l3"
    POWER_TOTAL = "power_total"
    FREQUENCY = "frequency"
    IMPORT_ENERGY = "import_energy"
    EXPORT_ENERGY = "export_energy"

    @property
    def kind(self) -> str:
        return self.value.rsplit("_", 1)[0] if self.value[-2:] in ("l1", "l2", "l3") else self.value


# Accepted units per kind, as the factor to the canonical unit (V, A, W, Hz, Wh).
UNITS: dict[str, dict[str, float]] = {
    "voltage": {"V": 1.0},
    "current": {"A": 1.0, "mA": 0.001},
    "power": {"W": 1.0, "kW": 1000.0},
    "power_total": {"W": 1.0, "kW": 1000.0},
    "frequency": {"Hz": 1.0},
    "import_energy": {"Wh": 1.0, "kWh": 1000.0, "MWh": 1_000_000.0},
    "export_energy": {"Wh": 1.0, "kWh": 1000.0, "MWh": 1_000_000.0},
}


class DataType(enum.StrEnum):
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    UINT64 = "uint64"
    INT64 = "int64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"

    @property
    def registers(self) -> int:
        return {"16": 1, "32": 2, "64": 4}[self.value[-2:]]

    @property
    def is_float(self) -> bool:
        return self.value.startswith("float")

    @property
    def is_signed(self) -> bool:
        return self.value.startswith(("int", "float"))


class FieldSpec(BaseModel):
    """One quantity in a map file (``[fields.<quantity>]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: int = Field(ge=0, le=0xFFFF, description="0-based PDU register address")
    type: DataType
    scale: float = Field(1.0, description="raw value * scale = value in `unit`")
    unit: str | None = Field(None, description="unit after scaling; default the canonical one")
    function: Literal[3, 4] | None = Field(None, description="overrides the map's function")
    optional: bool = Field(False, description="only some units of this model provide it")
    not_available: tuple[int, ...] = Field((), description="extra raw values meaning n/a")

    @field_validator("scale")
    @classmethod
    def _scale_nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale must not be 0")
        return v

    @model_validator(mode="after")
    def _fits_address_space(self) -> FieldSpec:
        if self.address + self.type.registers - 1 > 0xFFFF:
            raise ValueError(f"a {self.type} at {self.address:#06x} runs past register 0xFFFF")
        return self


class SerialDefaults(BaseModel):
    """Factory defaults of the meter's RS-485 port; the site config may override them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    baudrate: int = Field(9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


class RegisterMap(BaseModel):
    """A whole map file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    description: str = ""
    function: Literal[3, 4]
    accepts_functions: tuple[Literal[3, 4], ...] = Field(
        (), description="other function codes the meter answers identically (simulator only)"
    )
    word_order: Literal["big", "little"] = Field("big", description="big = high word first")
    byte_order: Literal["big", "little"] = Field("big", description="big = Modbus standard")
    max_registers: int = Field(PROTOCOL_MAX_REGISTERS, ge=1, le=PROTOCOL_MAX_REGISTERS)
    max_gap: int | None = Field(None, ge=0, description="largest unused span read through")
    sentinels: bool = Field(
        False, description="all-ones (unsigned) / max positive (signed) mean n/a"
    )
    signed_currents: bool = Field(
        False,
        description="currents may carry the direction of flow as a sign: the driver takes "
        "their magnitude (direction comes from power)",
    )
    answer_time_s: float | None = Field(
        None, gt=0, le=10, description="documented worst answer time of one request (s)"
    )
    serial: SerialDefaults = Field(default_factory=lambda: SerialDefaults.model_validate({}))
    fields: dict[Quantity, FieldSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_fields(self) -> RegisterMap:
        for quantity, spec in self.fields.items():
            units = UNITS[quantity.kind]
            if spec.unit is not None and spec.unit not in units:
                raise ValueError(
                    f"fields.{quantity}.unit: {spec.unit!r} is not one of {sorted(units)}"
                )
            if spec.type.registers > self.max_registers:
                raise ValueError(
                    f"fields.{quantity}.type: {spec.type} needs {spec.type.registers} "
                    f"registers but max_registers is {self.max_registers}"
                )
        return self

    @property
    def phases(self) -> int:
        three = {Quantity.VOLTAGE_L2, Quantity.CURRENT_L2, Quantity.POWER_L2, Quantity.POWER_L3}
        return 3 if three & self.fields.keys() else 1

    def resolved(self) -> tuple[MapField, ...]:
        """The fields with map-wide settings folded in, sorted by function and address."""
        out = []
        for quantity, spec in self.fields.items():
            units = UNITS[quantity.kind]
            unit = spec.unit or next(iter(units))
            na: set[int] = set(spec.not_available)
            if self.sentinels and not spec.type.is_float:
                bits = 16 * spec.type.registers
                # Raw values are compared after decoding, so signed sentinels are the signed max.
                na.add((1 << (bits - 1)) - 1 if spec.type.is_signed else (1 << bits) - 1)
            out.append(
                MapField(
                    quantity=quantity,
                    address=spec.address,
                    dtype=spec.type,
                    function=spec.function or self.function,
                    factor=spec.scale * units[unit],
                    optional=spec.optional,
                    not_available=frozenset(na),
                    word_order=self.word_order,
                    byte_order=self.byte_order,
                    magnitude=self.signed_currents and quantity.kind == "current",
                )
            )
        return tuple(sorted(out, key=lambda f: (f.function, f.address, f.quantity)))


@dataclass(frozen=True, slots=True)
class MapField:
    """A field ready to decode: raw * ``factor`` = canonical unit (V, A, W, Hz, Wh)."""

    quantity: Quantity
    address: int
    dtype: DataType
    function: int
    factor: float
    optional: bool
    not_available: frozenset[int]
    word_order: str
    byte_order: str
    magnitude: bool = False
    """Decode to the absolute value (a signed current: the sign is the direction of flow)."""

    @property
    def count(self) -> int:
        return self.dtype.registers


def _format_validation(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_map(text: str, *, source: str = "<string>") -> RegisterMap:
    """Parse and validate map TOML text; errors name ``source`` and the field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MapError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return RegisterMap.model_validate(data)
    except ValidationError as exc:
        raise MapError(_format_validation(source, exc)) from exc


def available_maps() -> list[str]:
    """Names of the bundled maps (usable as ``map = "<name>"`` in station.toml)."""
    return sorted(p.stem for p in MAPS_DIR.glob("*.toml"))


@functools.cache
def load_map(ref: str | Path) -> RegisterMap:
    """Load a bundled map by name (``"sdm630"``) or any map file by path."""
    path = Path(ref)
    if path.suffix != ".toml" and len(path.parts) == 1:
        path = MAPS_DIR / f"{ref}.toml"
        if not path.exists():
            raise MapError(f"unknown meter map {str(ref)!r}; bundled maps: {available_maps()}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MapError(f"{path}: cannot read map file: {exc}") from exc
    return parse_map(text, source=str(path))
