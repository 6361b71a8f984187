"""Home Assistant MQTT discovery payloads for the station and its bays (pure).

One device for the station and one per bay (``via_device`` the station), in
the shapes Home Assistant documents for MQTT discovery: each entity has a
``unique_id``, a ``state_topic`` with a ``value_template`` into the retained
JSON state (see :mod:`drivers.mqtt_state.topics`), ``device``, and the
station's availability topic (its last will says ``offline``). Commands
(mode select, stop button, availability switch) write the command topics the
broker's ACL opens to the ``homeassistant`` account.

Config topics are ``<discovery_prefix>/<component>/<station_id>/<object_id>/config``
with ``object_id`` = ``station__<key>`` or ``bay-<bay_id>__<key>``, so a config
seen on the broker names the bay it belongs to (:func:`bay_of`), and a bay
removed from the config has its entities removed (an empty retained payload).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from drivers.mqtt_state.topics import Topics

MODES = ("standard", "eco", "solar")
STATION_OBJECT = "station"


@dataclass(frozen=True, slots=True)
class BayInfo:
    id: str
    connector: int
    kind: str
    max_current_a: float


def _object(bay_id: str | None, key: str) -> str:
    return f"{STATION_OBJECT}__{key}" if bay_id is None else f"bay-{bay_id}__{key}"


def bay_of(object_id: str) -> str | None:
    """The bay a config topic's object id belongs to (None: the station's or not ours)."""
    owner = object_id.rsplit("__", 1)[0]
    return owner.removeprefix("bay-") if owner.startswith("bay-") else None


def config_topic(prefix: str, component: str, station_id: str, object_id: str) -> str:
    return f"{prefix}/{component}/{station_id}/{object_id}/config"


def messages(
    topics: Topics, *, station_name: str, bays: list[BayInfo], prefix: str, version: str
) -> dict[str, str]:
    """Every discovery config as topic → JSON payload (published retained)."""
    sid = topics.station_id
    station_device = {
        "identifiers": [f"edge-station-{sid}"],
        "name": station_name,
        "manufacturer": "edge-station",
        "model": "Charging station controller",
        "sw_version": version,
    }
    avail = {
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    out: dict[str, str] = {}

    def add(component: str, bay_id: str | None, key: str, body: dict[str, Any]) -> None:
        oid = _object(bay_id, key)
        body = {"unique_id": f"{sid}-{oid}", "object_id": f"{sid}_{oid}", **avail, **body}
        out[config_topic(prefix, component, sid, oid)] = json.dumps(body, sort_keys=True)

    site = topics.site_state
    add(
        "sensor",
        None,
        "power",
        {
            "name": "Charging power",
            "state_topic": site,
            "value_template": "{{ value_json.power_w }}",
            "device_class": "power",
            "unit_of_measurement": "W",
            "state_class": "measurement",
            "device": station_device,
        },
    )
    add(
        "binary_sensor",
        None,
        "grid_operator",
        {
            "name": "Limited by grid operator",
            "state_topic": site,
            "value_template": "{{ 'ON' if value_json.grid_operator else 'OFF' }}",
            "device_class": "problem",
            "device": station_device,
        },
    )
    add(
        "binary_sensor",
        None,
        "accepting",
        {
            "name": "Accepting sessions",
            "state_topic": site,
            "value_template": "{{ 'ON' if value_json.accepting_sessions else 'OFF' }}",
            "device_class": "running",
            "device": station_device,
        },
    )
    for b in bays:
        state = topics.bay_state(b.id)
        device = {
            "identifiers": [f"edge-station-{sid}-{b.id}"],
            "name": f"{station_name} {b.id}",
            "manufacturer": "edge-station",
            "model": "Locker" if b.kind == "locker" else "EV charging point",
            "via_device": f"edge-station-{sid}",
        }
        add(
            "sensor",
            b.id,
            "status",
            {
                "name": "Status",
                "state_topic": state,
                "value_template": "{{ value_json.status }}",
                "device_class": "enum",
                "options": [
                    "Available",
                    "Preparing",
                    "Charging",
                    "SuspendedEVSE",
                    "SuspendedEV",
                    "Finishing",
                    "Reserved",
                    "Unavailable",
                    "Faulted",
                ],
                "device": device,
            },
        )
        add(
            "sensor",
            b.id,
            "power",
            {
                "name": "Power",
                "state_topic": state,
                "value_template": "{{ value_json.power_w }}",
                "device_class": "power",
                "unit_of_measurement": "W",
                "state_class": "measurement",
                "device": device,
            },
        )
        for i, phase in enumerate(("L1", "L2", "L3")):
            add(
                "sensor",
                b.id,
                f"current_{phase.lower()}",
                {
                    "name": f"Current {phase}",
                    "state_topic": state,
                    "value_template": f"{{{{ value_json.current_a[{i}] }}}}",
                    "device_class": "current",
                    "unit_of_measurement": "A",
                    "state_class": "measurement",
                    "device": device,
                },
            )
        add(
            "sensor",
            b.id,
            "energy",
            {
                "name": "Session energy",
                "state_topic": state,
                "value_template": "{{ value_json.energy_wh }}",
                "device_class": "energy",
                "unit_of_measurement": "Wh",
                "state_class": "total_increasing",
                "device": device,
            },
        )
        add(
            "binary_sensor",
            b.id,
            "limited",
            {
                "name": "Limited by site",
                "state_topic": state,
                "value_template": "{{ 'ON' if value_json.limited_by_site else 'OFF' }}",
                "device": device,
            },
        )
        add(
            "select",
            b.id,
            "mode",
            {
                "name": "Mode",
                "state_topic": state,
                "value_template": "{{ value_json.mode or 'standard' }}",
                "command_topic": topics.command(b.id, "mode"),
                "options": list(MODES),
                "device": device,
            },
        )
        add(
            "button",
            b.id,
            "stop",
            {
                "name": "Stop charging",
                "command_topic": topics.command(b.id, "stop"),
                "payload_press": "stop",
                "device": device,
            },
        )
    return out
