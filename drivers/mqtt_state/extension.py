"""The ``mqtt_state`` extension: the station's state, commands, events and Home Assistant
discovery on its broker.

Entry point ``edge_station.extensions: mqtt_state = drivers.mqtt_state.extension:EXTENSION``.
"""

from __future__ import annotations

import weakref
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from drivers.esp32.mqtt_config import check_mqtt, parse_mqtt
from drivers.mqtt_state.config import HomeAssistantSection, MqttStateSection, check_sections

if TYPE_CHECKING:
    from controller.core.config import StationConfig
    from controller.core.station import Station
    from drivers.mqtt_state.service import MqttStateService

SERVICES: weakref.WeakKeyDictionary[Station, MqttStateService] = weakref.WeakKeyDictionary()


class MqttStateExtension:
    name = "mqtt_state"

    def check(self, cfg: StationConfig) -> list[str]:
        problems = check_sections(cfg.mqtt_state, cfg.homeassistant)
        if problems or (cfg.mqtt_state is None and cfg.homeassistant is None):
            return problems
        if cfg.mqtt is None:
            name = "mqtt_state" if cfg.mqtt_state is not None else "homeassistant"
            return [f"{name}: needs the broker's [mqtt] section"]
        return check_mqtt(cfg.mqtt)

    def attach(self, station: Station) -> None:
        cfg = station.cfg
        if cfg.mqtt_state is None and cfg.homeassistant is None:
            return
        from drivers.mqtt_state.service import MqttStateService

        try:
            sw = version("edge-station")
        except PackageNotFoundError:
            sw = ""
        service = MqttStateService(
            station,
            parse_mqtt(cfg.mqtt),
            MqttStateSection.model_validate(cfg.mqtt_state or {}),
            HomeAssistantSection.model_validate(cfg.homeassistant)
            if cfg.homeassistant is not None
            else None,
            sw,
        )
        SERVICES[station] = service
        station.add_service("mqtt-state", service.run)


EXTENSION = MqttStateExtension()
