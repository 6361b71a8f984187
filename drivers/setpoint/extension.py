"""The ``setpoint`` extension: checks ``[external]`` and runs its transports.

Entry point ``edge_station.extensions: setpoint = drivers.setpoint.extension:EXTENSION``.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from drivers.esp32.mqtt_config import check_mqtt, parse_mqtt
from drivers.setpoint.config import check_external, parse_external
from drivers.setpoint.gate import external_gate

if TYPE_CHECKING:
    from controller.core.config import StationConfig
    from controller.core.station import Station


# The transports each station runs, by name (for its tests and benchmarks to find their ports).
TRANSPORTS: weakref.WeakKeyDictionary[Station, dict[str, Any]] = weakref.WeakKeyDictionary()


class SetpointExtension:
    name = "setpoint"

    def check(self, cfg: StationConfig) -> list[str]:
        if cfg.external is None:
            return []
        problems = check_external(cfg.external)
        if problems:
            return problems
        if cfg.site is None:
            problems.append("external: external limits need load management; add a [site] section")
        ext = parse_external(cfg.external)
        if ext.mqtt is not None and cfg.mqtt is None:
            problems.append("external.mqtt: needs the broker's [mqtt] section")
        elif ext.mqtt is not None:
            problems += check_mqtt(cfg.mqtt)
        return problems

    def attach(self, station: Station) -> None:
        if station.cfg.external is None:
            return
        gate = external_gate(station)
        if gate is None:
            return
        ext = parse_external(station.cfg.external)
        load = station.load
        assert load is not None
        running = TRANSPORTS.setdefault(station, {})
        if ext.modbus is not None:
            from drivers.setpoint.modbus import ModbusSetpointServer

            mb = ModbusSetpointServer(
                gate,
                [b.id for b in station.cfg.bays],
                host=ext.modbus.host,
                port=ext.modbus.port,
                unit_id=ext.modbus.unit_id,
            )
            running["modbus"] = mb
            station.add_service("setpoint-modbus", mb.run)
        if ext.mqtt is not None:
            from drivers.setpoint.mqtt import MqttSetpoints

            mq = MqttSetpoints(gate, parse_mqtt(station.cfg.mqtt), station.cfg.station.id)
            load.external_listeners.append(mq.changed)
            running["mqtt"] = mq
            station.add_service("setpoint-mqtt", mq.run)
        if ext.http is not None:
            from drivers.setpoint.http import HttpSetpoints

            hs = HttpSetpoints(gate, host=ext.http.host, port=ext.http.port, token=ext.http.token())
            running["http"] = hs
            station.add_service("setpoint-http", hs.run)


EXTENSION = SetpointExtension()
