"""The meter simulator's own register encoder, written from the map format in
``drivers/modbus/MAPS.md`` (register = 16-bit word; a wide value spans
consecutive words; ``word_order`` says which word holds the high half,
``byte_order`` which byte of a word comes first; raw × scale = value).

It deliberately does not call the driver's codec: the simulator is the
driver's counterpart on the wire, so a codec bug must show up as a
disagreement between the two (``tests/test_meter_interop.py``), not be shared.
The map files themselves are datasheet facts and are read by both.
"""

from __future__ import annotations

import math
import struct

from drivers.modbus.maps import MapField


class DoesNotFit(ValueError):
    """The value cannot be held by the field's register type."""


def _raw_bytes(field: MapField, value: float | None) -> bytes:
    """The value as big-endian bytes of the field's width, before word/byte ordering."""
    width = 2 * field.count
    kind = field.dtype.value
    if kind.startswith("float"):
        raw = math.nan if value is None else value / field.factor
        try:
            return struct.pack(">f" if width == 4 else ">d", raw)
        except OverflowError as exc:
            raise DoesNotFit(f"{field.quantity}: {value} does not fit a {kind}") from exc
    signed = kind.startswith("int")
    bits = 8 * width
    lowest, highest = (
        (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    )
    if value is None:
        if not field.not_available:
            raise DoesNotFit(f"{field.quantity}: this map has no 'not available' value")
        number = max(field.not_available)
    else:
        # A real meter saturates at its type's limits rather than wrapping, and never
        # shows its "not available" sentinel for a real reading.
        number = max(lowest, min(highest, round(value / field.factor)))
        while number in field.not_available and number > lowest:
            number -= 1
    return number.to_bytes(width, "big", signed=signed)


def registers_of(field: MapField, value: float | None) -> list[int]:
    """The registers a meter serves for ``value`` (canonical unit); None: "not available"."""
    data = _raw_bytes(field, value)
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if field.word_order == "little":
        words.reverse()
    if field.byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]
