"""Several MQTT buses side by side on one station, against a real mosquitto.

Each bus has its own client id and subscribes to its own nodes' topics: the
nodes of both buses (the same addresses on each bus) all charge, no bus knocks
the other off the broker, and a node is known on its own bus only.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from controller.core.auth import free_vend_step
from controller.core.config import ConfigError, parse_config
from controller.core.events import BayChanged
from controller.core.journal import Journal
from controller.core.station import Station
from drivers.esp32.mqtt_hub import MqttNodeHub, build_mqtt
from simulators.esp32_node.bus import SimNodeSpec
from simulators.esp32_node.mqtt_front import MqttSimNodes
from tests.support.mosquitto import broker, require_mosquitto

STATION = "scale-1"
PER_BUS = 4
BUSES = ("north", "south")


def _config(tmp: Path, host: str, port: int) -> dict[str, Any]:
    bays = [
        {
            "id": f"{bus}{a}",
            "connector": i * PER_BUS + a,
            "bus": bus,
            "address": a,  # the same addresses on both buses
        }
        for i, bus in enumerate(BUSES)
        for a in range(1, PER_BUS + 1)
    ]
    return {
        "station": {"id": STATION, "data_dir": str(tmp)},
        "timers": {"tick_s": 0.1, "lease_s": 3.0},
        "buses": [{"id": b, "transport": "mqtt", "host_timeout_s": 10.0} for b in BUSES],
        "bays": bays,
        "mqtt": {
            "host": host,
            "port": port,
            "password": "controller-secret",
            "ack_timeout_s": 1.0,
            "offline_after_s": 5.0,
            "heartbeat_s": 1.0,
            "backoff_initial_s": 0.1,
            "backoff_max_s": 0.5,
        },
    }


async def test_two_mqtt_buses_charge_every_node_without_knocking_each_other_off(
    tmp_path: Path,
) -> None:
    require_mosquitto()
    names = [f"{bus}{a}" for bus in BUSES for a in range(1, PER_BUS + 1)]
    users = {"controller": "controller-secret", **{n: f"pw-{n}" for n in names}}
    with broker(tmp_path / "mosquitto", users) as mosq:
        cfg = parse_config(_config(tmp_path, mosq.host, mosq.port))
        hubs: dict[str, MqttNodeHub] = {
            bus.id: build_mqtt(bus, [b for b in cfg.bays if b.bus == bus.id], cfg)
            for bus in cfg.buses
        }
        assert len({h.client_id for h in hubs.values()}) == len(BUSES)
        journal = await Journal.open(tmp_path / "journal.sqlite3")
        station = Station(cfg, journal, hubs=dict(hubs))
        station.authorizer.add(free_vend_step())
        await station.restore()
        specs = [SimNodeSpec(b.id, b.address, "evse") for b in cfg.bays]
        offline: list[str] = []  # bays that went offline after having been online
        seen_online: set[str] = set()
        run = asyncio.create_task(station.run())
        try:
            async with (
                MqttSimNodes(mosq.host, mosq.port, STATION, specs, passwords=users) as sim,
                station.events.subscription(lossy=True) as updates,
            ):
                now = sim.clock()
                for node in sim.nodes.values():
                    node.plug_in(now, max_a=16.0)

                async def until(pred: Any) -> None:
                    while not pred():
                        ev = await updates.get()
                        if not isinstance(ev, BayChanged):
                            continue
                        if ev.snapshot["node_online"]:
                            seen_online.add(ev.bay_id)
                        elif ev.bay_id in seen_online:
                            offline.append(ev.bay_id)

                async with asyncio.timeout(30):
                    await until(lambda: all(rt.state.node_online for rt in station.bays.values()))
                    for rt in station.bays.values():
                        out = await station.commands.present_token(rt.cfg.id, f"T-{rt.cfg.id}")
                        assert out.ok, out
                    await until(
                        lambda: all(
                            rt.state.phase.value == "charging"
                            and rt.state.session is not None
                            and rt.state.session.energy_wh > 0
                            for rt in station.bays.values()
                        )
                    )
        finally:
            station.request_stop("test")
            await asyncio.wait_for(run, 10)
            await journal.close()
    for bus, hub in hubs.items():
        # One connection per bus for the whole run: no storm of takeovers.
        assert hub.broker_stats["connects"] == 1, (bus, hub.broker_stats)
        # Nothing of the other bus's nodes ever arrived here.
        assert hub.broker_stats["unknown_node"] == 0, (bus, hub.broker_stats)
        for b in cfg.bays:
            if b.bus == bus:
                assert hub.node(b.node_id).stats().timeouts == 0
    assert offline == []


def test_one_node_id_on_two_mqtt_buses_is_refused_by_name(tmp_path: Path) -> None:
    raw = _config(tmp_path, "127.0.0.1", 1883)
    raw["bays"][PER_BUS]["node_id"] = "north1"
    with pytest.raises(ConfigError, match=r"bays\[4\]\.node_id: node 'north1' is on MQTT bus"):
        parse_config(raw)
