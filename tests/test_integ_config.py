"""check-config names what is wrong in the integrations' sections, and absent sections change
nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.cli.main import check
from controller.core.config import parse_config
from tests.support.integ import config

MQTT = {"host": "localhost", "username": "controller", "password": "pw"}


def problems(tmp: Path, **sections: Any) -> list[str]:
    return check(parse_config(config(tmp, 1, **sections)))


def test_without_the_new_sections_nothing_changes(tmp_path: Path) -> None:
    assert problems(tmp_path) == []


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"mqtt_state": {}}, "mqtt_state: needs the broker's [mqtt] section"),
        ({"homeassistant": {"discovery": True}}, "homeassistant: needs the broker's [mqtt]"),
        ({"mqtt": MQTT, "homeassistant": {"prefix": "a/b"}}, "homeassistant.prefix: String should"),
        ({"mqtt": MQTT, "mqtt_state": {"command": True}}, "mqtt_state.command: Extra inputs"),
        ({"webhooks": {"targets": [{"url": "ftp://x"}]}}, "webhooks.targets[0].url: String should"),
        (
            {"webhooks": {"targets": [{"url": "http://h/x", "events": ["coffee"]}]}},
            "webhooks.targets[0].events: unknown event(s) ['coffee']",
        ),
        (
            {"webhooks": {"targets": [{"url": "http://h/x", "secret_file": "/nonexistent"}]}},
            "webhooks.targets[0].secret_file: /nonexistent is not a readable file",
        ),
        (
            {"gpio": {"grid_limit": {"pin": 22}, "emergency_stop": {"pin": 22}}},
            "gpio: grid_limit: pin 22 already used by emergency_stop",
        ),
    ],
)
def test_a_bad_section_is_named(tmp_path: Path, sections: dict[str, Any], expected: str) -> None:
    found = problems(tmp_path, **sections)
    assert any(expected in p for p in found), found


def test_the_grid_limit_contact_needs_load_management(tmp_path: Path) -> None:
    data = config(tmp_path, 1, gpio={"grid_limit": {"pin": 22}})
    del data["site"]
    found = check(parse_config(data))
    assert (
        "gpio.grid_limit: the grid operator's limit needs load management; add a [site] section"
        in found
    )


def test_good_sections_pass(tmp_path: Path) -> None:
    assert (
        problems(
            tmp_path,
            mqtt=MQTT,
            mqtt_state={"commands": False},
            homeassistant={"discovery": True},
            webhooks={"targets": [{"url": "https://example.org/hook", "events": ["fault"]}]},
            external={"lease_s": 30, "mqtt": {}, "modbus": {}},
            gpio={"grid_limit": {"pin": 22}},
        )
        == []
    )
