"""The meter simulator's register encoder and the driver's codec, held to each other
and to the datasheets' own examples: a codec bug shows up here as a disagreement."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.codec import decode
from drivers.modbus.maps import DataType, MapField, Quantity, available_maps, load_map
from simulators.meter.registers import DoesNotFit, registers_of

ALL_FIELDS = [
    pytest.param(name, f, id=f"{name}-{f.quantity}")
    for name in available_maps()
    for f in load_map(name).resolved()
]


def _largest(field: MapField) -> float:
    """The largest magnitude the field's type holds below its sentinels."""
    if field.dtype.is_float:
        return 1e6
    bits = 16 * field.count - (1 if field.dtype.is_signed else 0)
    return ((1 << bits) - 2) * field.factor


def test_datasheet_examples() -> None:
    """Eastron: 230.0 V as IEEE-754 float32, high word first, is 0x4366 0x0000.
    Carlo Gavazzi EM24: INT32 low word first, 0.1 V per unit: 230.0 V = 2300 = 0x000008FC."""
    sdm = {f.quantity: f for f in load_map("sdm630").resolved()}
    assert registers_of(sdm[Quantity.VOLTAGE_L1], 230.0) == [0x4366, 0x0000]
    em24 = {f.quantity: f for f in load_map("em24").resolved()}
    assert registers_of(em24[Quantity.VOLTAGE_L1], 230.0) == [0x08FC, 0x0000]
    assert registers_of(em24[Quantity.CURRENT_L1], -1.5) == [0xFA24, 0xFFFF]  # -1500


@pytest.mark.parametrize(("map_name", "field"), ALL_FIELDS)
@given(share=st.floats(min_value=-1.0, max_value=1.0))
def test_driver_reads_what_the_simulator_serves(
    map_name: str, field: MapField, share: float
) -> None:
    value = share * _largest(field)
    if not field.dtype.is_signed:
        value = abs(value)
    regs = registers_of(field, value)
    assert len(regs) == field.count and all(0 <= r <= 0xFFFF for r in regs)
    got = decode(field, regs)
    assert got is not None, f"{map_name} {field.quantity}: {value} read back as not available"
    want = abs(value) if field.magnitude else value
    if field.dtype.is_float:
        assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-3 * field.factor)
    else:
        assert abs(got - want) <= field.factor  # one step of resolution (sentinel dodge included)


@pytest.mark.parametrize(("map_name", "field"), ALL_FIELDS)
def test_not_available_reads_back_as_none(map_name: str, field: MapField) -> None:
    if not field.dtype.is_float and not field.not_available:
        with pytest.raises(DoesNotFit):
            registers_of(field, None)
        return
    assert decode(field, registers_of(field, None)) is None


@pytest.mark.parametrize("dtype", list(DataType))
@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_every_layout_round_trips(dtype: DataType, word_order: str, byte_order: str) -> None:
    field = MapField(
        quantity=Quantity.IMPORT_ENERGY,
        address=0,
        dtype=dtype,
        function=4,
        factor=1.0,
        optional=False,
        not_available=frozenset(),
        word_order=word_order,
        byte_order=byte_order,
    )
    value = 12345.0 if dtype.registers > 1 or not dtype.is_signed else 1234.0
    assert decode(field, registers_of(field, value)) == pytest.approx(value)
    if dtype.registers == 2 and word_order == "little" and byte_order == "big":
        assert registers_of(field, value)[1] in (0x0000, 0x4640)  # high half last


def test_a_value_the_type_cannot_hold_is_refused() -> None:
    field = {f.quantity: f for f in load_map("sdm630").resolved()}[Quantity.CURRENT_L1]
    with pytest.raises(DoesNotFit):
        registers_of(field, 1e300)
