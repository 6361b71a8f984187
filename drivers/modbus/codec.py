"""Pure decode layer: registers ↔ values, per :class:`MapField`. No I/O.

Decoding: registers → bytes (word and byte order) → raw number (data type)
→ ``None`` if the raw value means "not available" → raw * factor in the
canonical unit. Encoding is the exact inverse and is what the simulator uses,
so both ends of the wire share one codec.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

from controller.ports import MeterSample

from .maps import DataType, MapField, Quantity
from .planner import ReadBlock

_STRUCT = {
    DataType.UINT16: ">H",
    DataType.INT16: ">h",
    DataType.UINT32: ">I",
    DataType.INT32: ">i",
    DataType.UINT64: ">Q",
    DataType.INT64: ">q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
}


def _to_bytes(regs: Sequence[int], word_order: str, byte_order: str) -> bytes:
    words = list(regs) if word_order == "big" else list(reversed(regs))
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    if byte_order == "little":
        raw = b"".join(raw[i : i + 2][::-1] for i in range(0, len(raw), 2))
    return raw


def _from_bytes(raw: bytes, word_order: str, byte_order: str) -> list[int]:
    if byte_order == "little":
        raw = b"".join(raw[i : i + 2][::-1] for i in range(0, len(raw), 2))
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    return words if word_order == "big" else list(reversed(words))


def decode_raw(field: MapField, regs: Sequence[int]) -> int | float:
    """The raw number in ``regs`` (exactly ``field.count`` registers), unscaled."""
    if len(regs) != field.count:
        raise ValueError(f"{field.quantity}: expected {field.count} registers, got {len(regs)}")
    value: int | float = struct.unpack(
        _STRUCT[field.dtype], _to_bytes(regs, field.word_order, field.byte_order)
    )[0]
    return value


def decode(field: MapField, regs: Sequence[int]) -> float | None:
    """The value in the canonical unit, or ``None`` when the meter says "not available"."""
    raw = decode_raw(field, regs)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            return None
    elif raw in field.not_available:
        return None
    value = raw * field.factor
    return abs(value) if field.magnitude else value


def encode(field: MapField, value: float | None) -> list[int]:
    """Registers holding ``value`` (canonical unit); ``None`` writes the n/a sentinel.

    Integers are rounded and clamped to the type's range (excluding sentinels),
    as a real meter would saturate rather than wrap.
    """
    raw: int | float
    if value is None:
        if field.dtype.is_float:
            raw = math.nan
        elif field.not_available:
            raw = max(field.not_available)
        else:
            raise ValueError(f"{field.quantity}: this map has no 'not available' value")
    elif field.dtype.is_float:
        raw = value / field.factor
    else:
        bits = 16 * field.count
        lo, hi = (
            (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
            if field.dtype.is_signed
            else (0, (1 << bits) - 1)
        )
        raw = max(lo, min(hi, round(value / field.factor)))
        while raw in field.not_available and raw > lo:
            raw -= 1
    packed = struct.pack(_STRUCT[field.dtype], raw)
    return _from_bytes(packed, field.word_order, field.byte_order)


def decode_block(block: ReadBlock, regs: Sequence[int]) -> dict[Quantity, float | None]:
    """Values of every field of ``block`` from the registers it returned."""
    if len(regs) != block.count:
        raise ValueError(
            f"block at {block.address:#06x}: expected {block.count} registers, got {len(regs)}"
        )
    out: dict[Quantity, float | None] = {}
    for field in block.fields:
        start = field.address - block.address
        out[field.quantity] = decode(field, regs[start : start + field.count])
    return out


def to_sample(
    values: Mapping[Quantity, float | None],
    at: float,
    stamps: Mapping[Quantity, float] | None = None,
) -> MeterSample:
    """Assemble a :class:`MeterSample`; quantities the map lacks stay ``None``.

    ``stamps`` says when each value was requested; those that differ from ``at``
    go into the sample's ``read_at``.
    """
    q = Quantity

    def g(k: Quantity) -> float | None:
        return values.get(k)

    return MeterSample(
        at=at,
        voltage_v=(g(q.VOLTAGE_L1), g(q.VOLTAGE_L2), g(q.VOLTAGE_L3)),
        current_a=(g(q.CURRENT_L1), g(q.CURRENT_L2), g(q.CURRENT_L3)),
        power_w=(g(q.POWER_L1), g(q.POWER_L2), g(q.POWER_L3)),
        power_total_w=g(q.POWER_TOTAL),
        frequency_hz=g(q.FREQUENCY),
        import_wh=g(q.IMPORT_ENERGY),
        export_wh=g(q.EXPORT_ENERGY),
        read_at={k.value: t for k, t in (stamps or {}).items() if t != at and k in values},
    )
