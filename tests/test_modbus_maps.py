"""Register map files: every bundled map is valid; a bad map gives an error naming file and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drivers.modbus.maps import MAPS_DIR, MapError, Quantity, available_maps, load_map, parse_map

GOOD = """
model = "x"
function = 4
[fields]
power_total = { address = 0x34, type = "float32" }
"""


def test_all_required_models_are_bundled() -> None:
    assert {"sdm630", "sdm120", "sdm72d", "abb_b23", "em24"} <= set(available_maps())


@pytest.mark.parametrize("name", available_maps())
def test_bundled_map_is_valid(name: str) -> None:
    m = load_map(name)
    assert m.model == name
    assert m.resolved()


def test_facts_from_datasheets() -> None:
    sdm = load_map("sdm630")
    assert (sdm.function, sdm.word_order, sdm.max_registers) == (4, "big", 80)
    assert sdm.fields[Quantity.POWER_TOTAL].address == 0x34
    assert load_map("sdm120").serial.baudrate == 2400
    assert load_map("sdm120").phases == 1
    em24 = load_map("em24")
    assert (em24.word_order, em24.max_registers, em24.fields[Quantity.IMPORT_ENERGY].address) == (
        "little",
        11,
        0x3E,
    )
    assert all(
        f.optional
        for q, f in load_map("sdm72d").fields.items()
        if q.value[-2:] in ("l1", "l2", "l3")
    )
    abb = load_map("abb_b23")
    assert abb.sentinels and abb.function == 3


def test_documented_example_in_maps_md_is_valid() -> None:
    text = (MAPS_DIR.parent / "MAPS.md").read_text()
    example = re.search(r"```toml\n(.*?)```", text, re.S)
    assert example is not None
    m = parse_map(example.group(1), source="MAPS.md")
    assert m.fields[Quantity.CURRENT_L1].scale == 0.001


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('type = "float32"', None),
        ('type = "float33"', r"fields\.power_total\.type: Input should be 'uint16'"),
        (
            "address = 0x10000",
            r"fields\.power_total\.address: Input should be less than or equal to 65535",
        ),
        (
            "address = -1",
            r"fields\.power_total\.address: Input should be greater than or equal to 0",
        ),
        ('address = "0x34"', r"fields\.power_total\.address: Input should be a valid integer"),
        ('unit = "kV"', r"fields\.power_total\.unit: 'kV' is not one of \['W', 'kW'\]"),
        ("scale = 0", r"fields\.power_total\.scale: scale must not be 0"),
        ("colour = 1", r"fields\.power_total\.colour: Extra inputs are not permitted"),
    ],
)
def test_field_errors_name_file_and_field(tmp_path: Path, line: str, message: str | None) -> None:
    entry = {"address": "address = 0x34", "type": 'type = "float32"'}
    key = line.split(" ", 1)[0]
    entry[key] = line
    path = tmp_path / "bad.toml"
    path.write_text(
        'model = "x"\nfunction = 4\n[fields.power_total]\n' + "\n".join(entry.values()) + "\n"
    )
    if message is None:
        assert load_map(path).fields[Quantity.POWER_TOTAL].address == 0x34
        return
    with pytest.raises(MapError) as err:
        load_map(path)
    assert str(err.value).startswith(f"{path}: "), str(err.value)
    assert re.search(message, str(err.value)), str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GOOD.replace("power_total", "power_l4"),
            r"fields\.power_l4\.\[key\]: Input should be 'voltage_l1'",
        ),
        (GOOD.replace("function = 4", "function = 6"), r"function: Input should be 3 or 4"),
        (GOOD.replace('model = "x"\n', ""), r"model: Field required"),
        (
            'model = "x"\nfunction = 4\nmax_registers = 200\n[fields]\npower_total = { address = 0, type = "float32" }',
            r"max_registers: Input should be less than or equal to 125",
        ),
        (
            'model = "x"\nfunction = 4\nmax_registers = 1\n[fields]\npower_total = { address = 0, type = "float32" }',
            r"fields\.power_total\.type: float32 needs 2 registers but max_registers is 1",
        ),
        (
            'model = "x"\nfunction = 4\n[fields]\npower_total = { address = 0xFFFF, type = "float32" }',
            r"runs past register 0xFFFF",
        ),
        (
            'model = "x"\nfunction = 4\n[fields]\n',
            r"fields: Dictionary should have at least 1 item",
        ),
        ("model = ", r"not valid TOML"),
    ],
)
def test_map_errors(text: str, message: str | None) -> None:
    with pytest.raises(MapError) as err:
        parse_map(text, source="site/meter.toml")
    assert str(err.value).startswith("site/meter.toml: ")
    if message:
        assert re.search(message, str(err.value)), str(err.value)


def test_unknown_map_name_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MapError, match=r"unknown meter map 'sdm999'.*sdm630"):
        load_map("sdm999")
    with pytest.raises(MapError, match=r"nope\.toml: cannot read map file"):
        load_map(tmp_path / "nope.toml")
