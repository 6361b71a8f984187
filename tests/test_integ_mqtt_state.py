"""The station's state, commands and Home Assistant discovery on a real mosquitto (shipped ACL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.mqtt_state.extension import SERVICES
from tests.support.integ import running_station, until
from tests.support.mosquitto import Mosquitto, broker

PASSWORDS = {"controller": "c-secret", "homeassistant": "ha-secret", "hems": "h-secret"}
BASE = "edge/integ"


@pytest.fixture
def mosq(tmp_path: Path) -> Iterator[Mosquitto]:
    with broker(tmp_path / "mosquitto", PASSWORDS) as b:
        yield b


def sections(b: Mosquitto) -> dict[str, Any]:
    return {
        "mqtt": {
            "host": b.host,
            "port": b.port,
            "username": "controller",
            "password": PASSWORDS["controller"],
        },
        "mqtt_state": {},
        "homeassistant": {"discovery": True},
    }


def client(b: Mosquitto, user: str) -> aiomqtt.Client:
    return aiomqtt.Client(b.host, b.port, username=user, password=PASSWORDS[user])


def _decode(payload: Any) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode() if isinstance(payload, bytes) else payload


async def retained(b: Mosquitto, pattern: str, user: str = "homeassistant") -> dict[str, Any]:
    """Every retained message under ``pattern``: a fresh subscriber's first burst, which the
    broker sends at once (collected until the line has been quiet for a second)."""
    out: dict[str, Any] = {}
    async with client(b, user) as c:
        await c.subscribe(pattern, qos=1)
        while True:
            try:
                async with asyncio.timeout(1.0):
                    m = await anext(aiter(c.messages))
            except TimeoutError:
                return out
            if m.retain:
                out[str(m.topic)] = _decode(m.payload)


# The keys Home Assistant's MQTT discovery documents for each component we publish.
REQUIRED = {
    "sensor": {"state_topic", "unique_id", "device", "availability_topic", "name"},
    "binary_sensor": {"state_topic", "unique_id", "device", "availability_topic", "name"},
    "select": {"state_topic", "command_topic", "options", "unique_id", "device", "name"},
    "button": {"command_topic", "unique_id", "device", "availability_topic", "name"},
}
UNITS = {"power": "W", "current": "A", "energy": "Wh"}


async def test_discovery_configs_have_home_assistants_shape_and_are_retained(
    tmp_path: Path, mosq: Mosquitto
) -> None:
    async with running_station(tmp_path, n=2, **sections(mosq)) as (st, _hub):
        await asyncio.wait_for(SERVICES[st].connected.wait(), 10)
        configs = await retained(mosq, "homeassistant/+/integ/+/config")
        states = await retained(mosq, f"{BASE}/state/#")
    assert len(configs) == 3 + 2 * 9  # station: 3 entities; each bay: 9
    ids = set()
    for topic, cfg in configs.items():
        component = topic.split("/")[1]
        assert REQUIRED[component] <= set(cfg), (topic, sorted(cfg))
        ids.add(cfg["unique_id"])
        assert cfg["availability_topic"] == f"{BASE}/state/availability"
        dev = cfg["device"]
        assert dev["identifiers"] and dev["name"]
        if "device_class" in cfg and cfg["device_class"] in UNITS:
            assert cfg["unit_of_measurement"] == UNITS[cfg["device_class"]]
        if "state_topic" in cfg:
            assert cfg["state_topic"] in states  # each entity reads a retained document
        if "command_topic" in cfg:
            assert cfg["command_topic"].startswith(f"{BASE}/cmd/")
    assert len(ids) == len(configs)  # unique ids
    bays = {c["device"]["identifiers"][0] for c in configs.values()}
    assert bays == {"edge-station-integ", "edge-station-integ-b1", "edge-station-integ-b2"}
    mode = configs["homeassistant/select/integ/bay-b1__mode/config"]
    assert mode["options"] == ["standard", "eco", "solar"]
    b1 = states[f"{BASE}/state/bay/b1"]
    assert b1["status"] in ("Charging", "SuspendedEV") and b1["session_id"]
    assert states[f"{BASE}/state/availability"] == "online"


async def test_commands_work_for_home_assistant_and_are_refused_without_acl_rights(
    tmp_path: Path, mosq: Mosquitto
) -> None:
    async with running_station(tmp_path, n=1, **sections(mosq)) as (st, hub):
        svc = SERVICES[st]
        await asyncio.wait_for(svc.connected.wait(), 10)
        rt = st.bays["b1"]
        assert rt.state.session is not None
        async with client(mosq, "hems") as hems:  # may read state, may not command
            await hems.publish(f"{BASE}/cmd/b1/stop", b"stop", qos=1)
            await hems.publish(f"{BASE}/cmd/b1/mode", b"eco", qos=1)
        async with client(mosq, "homeassistant") as ha:
            await ha.subscribe(f"{BASE}/event/command", qos=1)
            await ha.subscribe(f"{BASE}/state/bay/b1", qos=1)
            await ha.publish(f"{BASE}/cmd/b1/mode", b"eco", qos=1)
            result = await _next(ha, f"{BASE}/event/command")
            assert result["ok"] and result["command"] == "mode"
            assert svc.commands_done == 1  # the other account's commands never arrived
            assert rt.state.session is not None and rt.state.session.mode == "eco"
            state = await _until_doc(ha, f"{BASE}/state/bay/b1", lambda d: d["mode"] == "eco")
            assert state["session_id"] == rt.state.session.session_id
            await ha.publish(f"{BASE}/cmd/b1/mode", b"turbo", qos=1)
            bad = await _next(ha, f"{BASE}/event/command")
            assert not bad["ok"] and "standard, eco, solar" in bad["message"]
            await ha.publish(f"{BASE}/cmd/b9/stop", b"stop", qos=1)
            assert not (await _next(ha, f"{BASE}/event/command"))["ok"]
            await ha.publish(f"{BASE}/cmd/b1/stop", b"stop", qos=1)
            stopped = await _next(ha, f"{BASE}/event/command")
            assert stopped["ok"], stopped
            await until(st, lambda: rt.state.session is None)
            await ha.publish(f"{BASE}/cmd/b1/available", b"false", qos=1)
            made = await _next(ha, f"{BASE}/event/command")
            # No transaction runs any more (the vehicle is still plugged in, the bay is
            # Finishing): OCPP 1.6 says Accepted, and the bay is unavailable at once.
            assert made["ok"] and made["code"] == "accepted", made
            assert not st.bays["b1"].state.available
        assert hub.nodes["b1"].outputs[-1][0] is False


async def test_a_removed_bay_loses_its_entities_and_the_station_says_when_it_goes(
    tmp_path: Path, mosq: Mosquitto
) -> None:
    async with running_station(tmp_path / "a", n=2, **sections(mosq)) as (st, _hub):
        await asyncio.wait_for(SERVICES[st].connected.wait(), 10)
    configs = await retained(mosq, "homeassistant/+/integ/+/config")
    assert any("bay-b2__" in t for t in configs)
    async with client(mosq, "homeassistant") as ha:
        await ha.subscribe(f"{BASE}/state/availability", qos=1)
        async with asyncio.timeout(5):
            async for m in ha.messages:
                assert m.payload == b"offline" and m.retain  # an orderly stop
                break
    async with running_station(tmp_path / "b", n=1, **sections(mosq)) as (st, _hub):
        svc = SERVICES[st]
        await asyncio.wait_for(svc.connected.wait(), 10)
        await until(st, lambda: svc.removed_configs == 9)
        configs = await retained(mosq, "homeassistant/+/integ/+/config")
        assert configs and not any("bay-b2__" in t for t in configs)
        assert any("bay-b1__" in t for t in configs)


async def _next(c: aiomqtt.Client, topic: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        async for m in c.messages:
            if str(m.topic) == topic:
                return json.loads(m.payload)  # type: ignore[no-any-return,arg-type]
    raise AssertionError("unreachable")


async def _until_doc(c: aiomqtt.Client, topic: str, pred: Any) -> dict[str, Any]:
    while True:
        doc = await _next(c, topic)
        if pred(doc):
            return doc
