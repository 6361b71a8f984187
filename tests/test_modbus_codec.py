"""Pure decode layer: registers -> values for every bundled map (word order, scale, sign, n/a)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.codec import decode, decode_block, encode, to_sample
from drivers.modbus.maps import MapField, Quantity, load_map, parse_map
from drivers.modbus.planner import plan_reads

MAPS = ["sdm630", "sdm120", "sdm72d", "abb_b23", "em24"]


def field(map_name: str, quantity: str) -> MapField:
    return next(f for f in load_map(map_name).resolved() if f.quantity == quantity)


CASES = [
    # map, quantity, registers, expected (canonical unit) -- None = not available
    ("sdm630", "voltage_l1", [0x4366, 0x8000], 230.5),
    ("sdm630", "current_l3", [0x4180, 0x0000], 16.0),
    ("sdm630", "power_l1", [0xC4BB, 0x8000], -1500.0),  # negative = export
    ("sdm630", "power_total", [0x4561, 0xC000], 3612.0),
    ("sdm630", "frequency", [0x4248, 0x0000], 50.0),
    ("sdm630", "import_energy", [0x449A, 0x5000], 1_234_500.0),  # kWh -> Wh
    ("sdm630", "export_energy", [0x3F80, 0x0000], 1000.0),
    ("sdm630", "voltage_l2", [0x7FC0, 0x0000], None),  # NaN
    ("sdm630", "voltage_l3", [0x7F80, 0x0000], None),  # +Inf
    ("sdm120", "power_total", [0x4516, 0x0000], 2400.0),
    ("sdm120", "power_l1", [0x4516, 0x0000], 2400.0),
    ("sdm120", "import_energy", [0x4120, 0x0000], 10_000.0),
    ("sdm72d", "power_total", [0xC5BB, 0x8000], -6000.0),
    ("sdm72d", "export_energy", [0x4000, 0x0000], 2000.0),
    ("abb_b23", "voltage_l1", [0x0000, 0x0901], 230.5),  # 0.1 V
    ("abb_b23", "current_l2", [0x0000, 0x0640], 16.0),  # 0.01 A
    ("abb_b23", "power_total", [0xFFFD, 0xB610], -1500.0),  # INT32 0.01 W, negative
    ("abb_b23", "power_l1", [0x0001, 0x86A0], 1000.0),
    ("abb_b23", "frequency", [0x138B], 50.03),
    ("abb_b23", "import_energy", [0x0000, 0x0000, 0x0001, 0xE240], 1_234_560.0),  # UINT64 0.01 kWh
    ("abb_b23", "current_l1", [0xFFFF, 0xFFFF], None),  # unsigned: all 0xFF
    ("abb_b23", "power_l2", [0x7FFF, 0xFFFF], None),  # signed: 0x7FFF...
    ("abb_b23", "frequency", [0xFFFF], None),
    ("abb_b23", "export_energy", [0xFFFF] * 4, None),
    ("abb_b23", "power_l3", [0xFFFF, 0xFFFF], -0.01),  # -1 is a value, not a sentinel
    ("em24", "voltage_l1", [0x0901, 0x0000], 230.5),  # low word first, x10
    ("em24", "current_l1", [0x3E80, 0x0000], 16.0),  # x1000
    ("em24", "power_l1", [0xC568, 0xFFFF], -1500.0),  # -15000, low word first
    ("em24", "power_total", [0x1170, 0x0001], 7000.0),  # 70000: the high word matters
    ("em24", "frequency", [0x01F4], 50.0),  # INT16 x10
    ("em24", "import_energy", [0x3039, 0x0000], 1_234_500.0),  # kWh x10
    ("em24", "export_energy", [0x1170, 0x0001], 7_000_000.0),
    ("em24", "voltage_l2", [0xFFFF, 0x7FFF], 214_748_364.7),  # no sentinels on this map
]


@pytest.mark.parametrize(("map_name", "quantity", "regs", "expected"), CASES)
def test_decode_table(
    map_name: str, quantity: str, regs: list[int], expected: float | None
) -> None:
    value = decode(field(map_name, quantity), regs)
    if expected is None:
        assert value is None
    else:
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    ("map_name", "quantity", "regs", "expected"), [c for c in CASES if c[3] is not None]
)
def test_encode_is_inverse_of_decode(
    map_name: str, quantity: str, regs: list[int], expected: float
) -> None:
    assert encode(field(map_name, quantity), expected) == regs


def test_word_order_is_what_distinguishes_em24_from_abb() -> None:
    regs = [0x0001, 0x0002]
    assert decode(field("abb_b23", "power_l1"), regs) == pytest.approx(0x00010002 * 0.01)
    assert decode(field("em24", "power_l1"), regs) == pytest.approx(0x00020001 * 0.1)


def test_byte_order_little_and_custom_not_available() -> None:
    m = parse_map(
        """
        model = "x"
        function = 3
        byte_order = "little"
        [fields]
        power_total = { address = 0, type = "int16", not_available = [-1] }
        frequency = { address = 1, type = "uint16", scale = 0.01 }
        """
    )
    power, hz = sorted(m.resolved(), key=lambda f: f.address)
    assert decode(power, [0xDC05]) == 1500.0  # 0x05DC byte-swapped
    assert decode(power, [0xFFFF]) is None
    assert decode(hz, [0x8B13]) == pytest.approx(50.03)


def test_encode_none_writes_the_sentinel_and_clamps_out_of_range() -> None:
    cur = field("abb_b23", "current_l1")
    assert encode(cur, None) == [0xFFFF, 0xFFFF]
    assert decode(cur, encode(cur, 1e12)) is not None  # saturates below the sentinel
    assert decode(cur, encode(cur, -5.0)) == 0.0
    assert math.isnan(decode_raw_f32(encode(field("sdm630", "voltage_l1"), None)))
    with pytest.raises(ValueError, match="not available"):
        encode(field("em24", "voltage_l1"), None)


def decode_raw_f32(regs: list[int]) -> float:
    import struct

    return float(struct.unpack(">f", bytes.fromhex(f"{regs[0]:04x}{regs[1]:04x}"))[0])


def test_decode_rejects_wrong_register_count() -> None:
    with pytest.raises(ValueError, match="expected 2 registers"):
        decode(field("sdm630", "voltage_l1"), [1])


def test_decode_block_and_sample_assembly() -> None:
    m = load_map("sdm120")
    (block,) = plan_reads(m.resolved(), max_registers=m.max_registers)
    regs = [0] * block.count
    regs[0:2] = [0x4366, 0x8000]  # V 230.5
    regs[0x0C:0x0E] = [0x4516, 0x0000]  # P 2400
    values = decode_block(block, regs)
    sample = to_sample(values, at=12.5)
    assert sample.at == 12.5
    assert sample.voltage_v == (230.5, None, None)
    assert sample.power_w == (2400.0, None, None)
    assert sample.power_total_w == 2400.0
    assert values[Quantity.CURRENT_L1] == 0.0
    with pytest.raises(ValueError, match="expected 76 registers"):
        decode_block(block, regs[:-1])


@pytest.mark.parametrize("map_name", MAPS)
@given(data=st.data())
def test_round_trip_within_resolution(map_name: str, data: st.DataObject) -> None:
    for f in load_map(map_name).resolved():
        bits = 16 * f.count
        if f.dtype.is_float:
            value = data.draw(st.floats(-1e6, 1e6, allow_nan=False))
            tol = max(abs(value) * 1e-6, 1e-30)
        else:
            lo = -(1 << (bits - 1)) + 1 if f.dtype.is_signed else 0
            hi = min((1 << (bits - 1)) - 2 if f.dtype.is_signed else (1 << bits) - 2, 10**12)
            value = data.draw(st.integers(lo, hi)) * f.factor
            tol = abs(f.factor) * 0.51
        got = decode(f, encode(f, value))
        assert got is not None
        assert abs(got - (abs(value) if f.magnitude else value)) <= tol


def test_signed_currents_decode_to_their_magnitude() -> None:
    """EM24: a current register may carry the flow's sign; the driver hands over |I|."""
    amps = field("em24", "current_l1")
    assert amps.magnitude and not field("em24", "power_l1").magnitude
    assert decode(amps, encode(amps, -12.345)) == pytest.approx(12.345)
    power = field("em24", "power_l1")
    assert decode(power, encode(power, -2500.0)) == pytest.approx(-2500.0)
    assert not field("sdm630", "current_l1").magnitude
    sdm = field("sdm630", "current_l1")
    assert decode(sdm, encode(sdm, -3.0)) == -3.0  # the gate refuses it later, by name
