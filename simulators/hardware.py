"""The simulated hardware a station config names: node buses (serial or MQTT), meters, GPIO.

``start_hardware`` reads a raw ``station.toml`` dict, starts a simulator for
each part it names and rewrites the dict to point at them: each serial bus's
port becomes a pseudo-terminal link in ``sim_dir``; MQTT buses (or every bus,
with ``transport="mqtt"``) talk through a private mosquitto; each Modbus meter
becomes a Modbus TCP server on localhost; GPIO runs on gpiozero's mock pins.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.broker import PrivateBroker
from simulators.esp32_node.bus import SimNodeSpec, SimulatedBus
from simulators.esp32_node.control import NodeGroup
from simulators.esp32_node.mqtt_front import MqttSimNodes
from simulators.esp32_node.node import SimNode
from simulators.meter.profile import Phases

DEFAULT_ESTOP_PIN = 26


class NodeSet:
    """Several node groups (one per bus) seen as one, by node name."""

    def __init__(self, groups: list[NodeGroup]) -> None:
        self.groups = groups

    @property
    def nodes(self) -> dict[str, SimNode]:
        out: dict[str, SimNode] = {}
        for g in self.groups:
            out.update(g.nodes)
        return out

    def clock(self) -> float:
        return self.groups[0].clock() if self.groups else 0.0

    def tick(self) -> None:
        for g in self.groups:
            g.tick()

    def set_online(self, name: str, online: bool) -> None:
        for g in self.groups:
            if name in g.nodes:
                g.set_online(name, online)


def one_group(groups: list[NodeGroup]) -> NodeGroup:
    return groups[0] if len(groups) == 1 else NodeSet(groups)


@dataclass(frozen=True)
class Wiring:
    """Which phase each bay's node loads (a single-phase bay's L1 is the phase it is wired to)."""

    shift: dict[str, int]

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Wiring:
        out: dict[str, int] = {}
        for b in raw.get("bays", []):
            phase = b.get("phase") or "L1"
            out[str(b.get("node_id") or b["id"])] = int(str(phase)[1]) - 1
        return cls(out)

    def amps(self, nodes: Mapping[str, SimNode], only: str | None = None) -> Phases:
        total = [0.0, 0.0, 0.0]
        for name, node in nodes.items():
            if only is not None and name != only:
                continue
            c = node.physics.currents()
            k = self.shift.get(name, 0)
            for i in range(3):
                total[(i + k) % 3] += c[i]
        return (total[0], total[1], total[2])


def _specs(raw: dict[str, Any], bus_id: str) -> list[SimNodeSpec]:
    out = []
    for b in raw.get("bays", []):
        if b.get("bus") != bus_id:
            continue
        out.append(
            SimNodeSpec(
                str(b.get("node_id") or b["id"]),
                int(b.get("address", 1)),
                "locker" if b.get("kind") == "locker" else "evse",
                max_current_a=max(32.0, float(b.get("max_current_a", 16.0))),
                serial=b.get("node_serial"),
            )
        )
    return out


async def start_nodes(
    stack: contextlib.AsyncExitStack, raw: dict[str, Any], sim_dir: Path, transport: str | None
) -> list[NodeGroup]:
    """Start the nodes of every serial / MQTT bus ``raw`` names (``transport``: force one)."""
    groups: list[NodeGroup] = []
    mqtt_buses: list[dict[str, Any]] = []
    for bus in raw.get("buses", []):
        declared = str(bus.get("transport", "serial"))
        kind = transport if transport and declared in ("serial", "mqtt") else declared
        if kind == "serial":
            specs = _specs(raw, str(bus["id"]))
            link = "ttyBAYS" if len(raw["buses"]) == 1 else f"tty-{bus['id']}"
            sb = await stack.enter_async_context(SimulatedBus(sim_dir, specs, link_name=link))
            bus["transport"], bus["port"] = "serial", sb.port_path
            groups.append(sb)
        elif kind == "mqtt":
            bus["transport"] = "mqtt"
            bus.pop("port", None)
            mqtt_buses.append(bus)
        elif kind == "gpio":
            gpio = raw.setdefault("gpio", {})
            gpio["pin_factory"] = "mock"
    if mqtt_buses:
        specs = [s for bus in mqtt_buses for s in _specs(raw, str(bus["id"]))]
        broker = await stack.enter_async_context(
            PrivateBroker(sim_dir / "mosquitto", [s.name for s in specs])
        )
        mq = dict(raw.get("mqtt") or {})
        mq.update(host=broker.host, port=broker.port, username=broker.controller)
        mq.pop("password_file", None)
        mq.pop("tls", None)
        mq["password"] = broker.password(broker.controller)
        raw["mqtt"] = mq
        station_id = str(raw.get("station", {}).get("id", "edge-station-1"))
        nodes = MqttSimNodes(
            broker.host,
            broker.port,
            station_id,
            specs,
            passwords=broker.password,
            prefix=str(mq.get("topic_prefix", "edge")),
        )
        await stack.enter_async_context(nodes)
        await nodes.wait_connected(limit_s=30.0)
        groups.append(nodes)
    return groups


def estop_from(raw: dict[str, Any], *, default: bool) -> tuple[int | str, bool] | None:
    """The emergency-stop pin (and its polarity) on mock pins; ``default``: add one on pin 26."""
    gpio = raw.get("gpio")
    if gpio is None:
        if not default:
            return None
        gpio = raw["gpio"] = {
            "emergency_stop": {"pin": DEFAULT_ESTOP_PIN, "active_high": False, "pull": "up"}
        }
    gpio["pin_factory"] = "mock"
    stop = gpio.get("emergency_stop")
    if stop is None:
        return None
    return stop["pin"], bool(stop.get("active_high", False))
