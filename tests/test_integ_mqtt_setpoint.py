"""External limits over MQTT, through a real mosquitto running the shipped ACL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.setpoint.extension import TRANSPORTS
from tests.support.integ import audit_rows, running_station, until
from tests.support.mosquitto import Mosquitto, broker

PASSWORDS = {"controller": "c-secret", "hems": "h-secret", "bay1": "b-secret"}
BASE = "edge/integ"


@pytest.fixture
def mosq(tmp_path: Path) -> Iterator[Mosquitto]:
    with broker(tmp_path / "mosquitto", PASSWORDS) as b:
        yield b


def sections(b: Mosquitto, **external: Any) -> dict[str, Any]:
    return {
        "mqtt": {
            "host": b.host,
            "port": b.port,
            "username": "controller",
            "password": PASSWORDS["controller"],
        },
        "external": {"lease_s": 5, "fallback_site_a": 6, "mqtt": {}, **external},
    }


def client(b: Mosquitto, user: str) -> aiomqtt.Client:
    return aiomqtt.Client(b.host, b.port, username=user, password=PASSWORDS[user])


async def test_a_limit_published_by_the_energy_manager_is_applied_and_its_state_retained(
    tmp_path: Path, mosq: Mosquitto
) -> None:
    async with running_station(tmp_path, **sections(mosq)) as (st, hub):
        mq = TRANSPORTS[st]["mqtt"]
        await asyncio.wait_for(mq.connected.wait(), 10)
        node = hub.nodes["b1"]
        await node.wait_output(lambda o: o[1] == 6.0)
        async with client(mosq, "hems") as hems:
            await hems.subscribe(f"{BASE}/limit/state", qos=1)
            await hems.publish(f"{BASE}/limit/site/set", json.dumps({"a": 10}), qos=1)
            await node.wait_output(lambda o: o[1] == 10.0, timeout=5)
            await hems.publish(f"{BASE}/limit/site/set", json.dumps({"w": 5520}), qos=1)
            t0 = time.monotonic()
            await node.wait_output(lambda o: o[1] == 8.0, timeout=3)  # 5520 W / 690 V
            assert time.monotonic() - t0 < 1.0
            async with asyncio.timeout(5):
                async for msg in hems.messages:
                    state = json.loads(msg.payload)  # type: ignore[arg-type]
                    if state["site_a"] == 8.0:
                        break
            assert state["fallback"] is False and state["site_source"] == "mqtt"
            # Garbage and out-of-bounds values change nothing.
            await hems.publish(f"{BASE}/limit/site/set", b"{not json", qos=1)
            await hems.publish(f"{BASE}/limit/site/set", json.dumps({"a": -3}), qos=1)
            await hems.publish(f"{BASE}/limit/b7/set", json.dumps({"a": 3}), qos=1)
            await until(st, lambda: mq.refused >= 3)
            assert node.outputs[-1][1] == 8.0
        # The energy manager is gone: the lease runs out, the fallback holds.
        await node.wait_output(lambda o: o[1] == 6.0, timeout=8)
        async with client(mosq, "hems") as late:
            await late.subscribe(f"{BASE}/limit/state", qos=1)
            retained = []
            async with asyncio.timeout(5):
                async for msg in late.messages:
                    retained.append(msg.retain)
                    state = json.loads(msg.payload)  # type: ignore[arg-type]
                    if state["fallback"]:
                        break
            assert retained[0]  # a late subscriber learns what holds at once
        rows = await audit_rows(st, "external")
        kinds = [r["kind"] for r in rows]
        assert kinds.count("refused") == 2 and "lapsed" in kinds  # garbage JSON is only logged


async def test_only_the_energy_manager_account_may_set_limits(
    tmp_path: Path, mosq: Mosquitto
) -> None:
    async with running_station(tmp_path, **sections(mosq)) as (st, hub):
        mq = TRANSPORTS[st]["mqtt"]
        await asyncio.wait_for(mq.connected.wait(), 10)
        node = hub.nodes["b1"]
        async with client(mosq, "bay1") as intruder:
            await intruder.publish(f"{BASE}/limit/site/set", json.dumps({"a": 0}), qos=1)
            await intruder.publish(f"{BASE}/grid_operator/set", b"true", qos=1)
        async with client(mosq, "hems") as hems:
            # Sent after the intruder's: once it arrives, the intruder's would have too.
            await hems.publish(f"{BASE}/limit/site/set", json.dumps({"a": 9}), qos=1)
            await node.wait_output(lambda o: o[1] == 9.0, timeout=5)
        assert mq.received == 1
        assert not st.snapshots.station()["external"]["grid_operator"]


async def test_the_grid_operator_signal_over_mqtt(tmp_path: Path, mosq: Mosquitto) -> None:
    async with running_station(tmp_path, **sections(mosq, fallback_site_a=20)) as (st, hub):
        mq = TRANSPORTS[st]["mqtt"]
        await asyncio.wait_for(mq.connected.wait(), 10)
        node = hub.nodes["b1"]
        await node.wait_output(lambda o: o[1] == 16.0, timeout=5)
        async with client(mosq, "hems") as hems:
            await hems.publish(f"{BASE}/grid_operator/set", json.dumps({"active": True}), qos=1)
            await node.wait_output(lambda o: o[1] == 6.0, timeout=3)
            await hems.publish(f"{BASE}/grid_operator/set", json.dumps({"active": False}), qos=1)
            await until(st, lambda: not st.snapshots.station()["external"]["grid_operator"])
        kinds = [r["kind"] for r in await audit_rows(st, "external")]
        assert "grid_operator_on" in kinds and "grid_operator_off" in kinds


async def test_a_broker_killed_mid_lease_lapses_to_the_fallback_and_limits_work_again_after(
    tmp_path: Path, mosq: Mosquitto
) -> None:
    async with running_station(tmp_path, **sections(mosq)) as (st, hub):
        mq = TRANSPORTS[st]["mqtt"]
        await asyncio.wait_for(mq.connected.wait(), 10)
        node = hub.nodes["b1"]
        async with client(mosq, "hems") as hems:
            t0 = time.monotonic()
            await hems.publish(f"{BASE}/limit/site/set", json.dumps({"a": 12}), qos=1)
            await node.wait_output(lambda o: o[1] == 12.0, timeout=5)
        await asyncio.to_thread(mosq.kill)
        # Nobody can renew the lease now: the fallback holds once it runs out, not before.
        await node.wait_output(lambda o: o[1] == 6.0, timeout=10)
        assert 5.0 - 0.5 <= time.monotonic() - t0 <= 5.0 + 1.5
        assert node.setpoint_a <= 12.0 and all(o[1] <= 12.0 for o in node.outputs[-5:])
        await asyncio.to_thread(mosq.start)
        await asyncio.wait_for(mq.connected.wait(), 15)  # the supervisor restarted the service
        async with client(mosq, "hems") as hems:
            await hems.publish(f"{BASE}/limit/site/set", json.dumps({"a": 10}), qos=1)
            await node.wait_output(lambda o: o[1] == 10.0, timeout=5)
        kinds = [r["kind"] for r in await audit_rows(st, "external")]
        assert kinds.count("lapsed") == 1
