"""The ``[mqtt_state]`` and ``[homeassistant]`` sections (on the ``[mqtt]`` broker)::

    [mqtt_state]
    commands = true          # accept bay commands (who may send them is the broker's ACL)
    [homeassistant]
    discovery = true         # publish Home Assistant MQTT discovery configs
    prefix = "homeassistant" # Home Assistant's discovery prefix

Absent sections: nothing is published (today's behaviour).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttStateSection(_Strict):
    commands: bool = True


class HomeAssistantSection(_Strict):
    discovery: bool = False
    prefix: str = Field(default="homeassistant", pattern=r"^[A-Za-z0-9_-]+$")


def _problems(name: str, model: type[BaseModel], section: dict[str, Any] | None) -> list[str]:
    if section is None:
        return []
    try:
        model.model_validate(section)
    except ValidationError as err:
        out = []
        for e in err.errors():
            path = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            out.append(f"{name}{'.' + path if path else ''}: {msg}")
        return out
    return []


def check_sections(
    mqtt_state: dict[str, Any] | None, homeassistant: dict[str, Any] | None
) -> list[str]:
    return _problems("mqtt_state", MqttStateSection, mqtt_state) + _problems(
        "homeassistant", HomeAssistantSection, homeassistant
    )
