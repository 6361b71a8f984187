"""The MQTT node transport against a real mosquitto (started by the suite on a free port).

The broker runs the shipped ACL (``systemd/mosquitto/acl``) with one account
per node and one for the controller; the nodes are the node simulator behind
its MQTT front; the station tests use a real Station and a real Journal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from controller.core.auth import free_vend_step
from controller.core.bay import StopReason
from controller.core.config import StationConfig, parse_config
from controller.core.journal import Journal
from controller.core.station import Station
from controller.ports import (
    DriverTimeout,
    NodeConflict,
    NodeEvent,
    NodeEventKind,
    NodeLink,
    NodeTelemetry,
    NodeUpdate,
    PermanentError,
)
from drivers.esp32.codec import decode, encode
from drivers.esp32.link import NodeConfig
from drivers.esp32.messages import HOST_ADDRESS, Event, Frame, SetOutput
from drivers.esp32.mqtt_config import MqttConfig, check_mqtt, parse_mqtt
from drivers.esp32.mqtt_hub import MqttNodeHub, build_mqtt
from simulators.esp32_node.bus import SimNodeSpec, specs
from simulators.esp32_node.mqtt_front import MqttSimNodes
from tests.support.mosquitto import Mosquitto, broker
from tests.support.watch import BayWatcher

STATION = "test-1"
PASSWORDS = {"controller": "controller-secret", **{f"bay{i}": f"pw-bay{i}" for i in range(1, 5)}}


@pytest.fixture
def mosq(tmp_path: Path) -> Iterator[Mosquitto]:
    with broker(tmp_path / "mosquitto", PASSWORDS) as b:
        yield b


def mqtt_section(b: Mosquitto, **over: Any) -> dict[str, Any]:
    return {
        "host": b.host,
        "port": b.port,
        "username": "controller",
        "password": PASSWORDS["controller"],
        "ack_timeout_s": 0.5,
        "retries": 2,
        "offline_after_s": 3.0,
        "heartbeat_s": 1.0,
        "backoff_initial_s": 0.1,
        "backoff_max_s": 0.5,
        "keepalive_s": 5,
        **over,
    }


class Recorder:
    def __init__(self) -> None:
        self.updates: list[NodeUpdate] = []
        self._changed = asyncio.Event()

    def __call__(self, update: NodeUpdate) -> None:
        self.updates.append(update)
        self._changed.set()

    async def wait_for(
        self, pred: Callable[[NodeUpdate], bool], timeout: float = 5.0, start: int = 0
    ) -> NodeUpdate:
        async with asyncio.timeout(timeout):
            seen = start
            while True:
                for u in self.updates[seen:]:
                    if pred(u):
                        return u
                seen = len(self.updates)
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def hub_and_nodes(
    b: Mosquitto, n: int = 2, kind: str = "evse", **over: Any
) -> AsyncIterator[tuple[MqttNodeHub, MqttSimNodes, Recorder]]:
    cfg = parse_mqtt(mqtt_section(b, **over))
    hub = MqttNodeHub(cfg, STATION, [NodeConfig(f"bay{i}", i, 6.0) for i in range(1, n + 1)])
    rec = Recorder()
    sim = MqttSimNodes(
        b.host,
        b.port,
        STATION,
        specs(n, "evse" if kind == "evse" else "locker"),
        passwords=PASSWORDS,
    )
    task = asyncio.create_task(hub.run(rec))
    try:
        async with sim:
            yield hub, sim, rec
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def online(node_id: str, up: bool = True) -> Callable[[NodeUpdate], bool]:
    return lambda u: isinstance(u, NodeLink) and u.node_id == node_id and u.online is up


# --------------------------------------------------------------------------- broker security


async def test_anonymous_and_bad_password_are_refused(mosq: Mosquitto) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(mosq.host, mosq.port, identifier="anon", timeout=5):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            mosq.host, mosq.port, username="bay1", password="wrong", identifier="x", timeout=5
        ):
            pass
    async with aiomqtt.Client(  # the same broker accepts a good account: the refusals meant it
        mosq.host, mosq.port, username="bay1", password=PASSWORDS["bay1"], timeout=5
    ):
        pass


async def test_a_node_cannot_publish_on_another_nodes_topic(mosq: Mosquitto) -> None:
    async with hub_and_nodes(mosq, n=2) as (hub, _sim, rec):
        await rec.wait_for(online("bay1"))
        await rec.wait_for(online("bay2"))
        forged = Frame(2, HOST_ADDRESS, 999, Event(NodeEventKind.FAULT, "forged"))
        genuine = Frame(2, HOST_ADDRESS, 1000, Event(NodeEventKind.FAULT, "genuine"))
        async with aiomqtt.Client(
            mosq.host, mosq.port, username="bay2", password=PASSWORDS["bay2"], timeout=5
        ) as intruder:
            await intruder.publish(hub.topics.up("bay1"), encode(forged), qos=1)
            await intruder.publish(hub.topics.status("bay1"), b"offline", qos=1, retain=True)
            # Same connection, after the forgeries: once this arrives, they would have too.
            # bay2's account may publish on bay2's topic, but with a count of its own beside
            # the real node's: the hub names that a second sender.
            await intruder.publish(hub.topics.up("bay2"), encode(genuine), qos=1)
        await rec.wait_for(lambda u: isinstance(u, NodeConflict) and u.node_id == "bay2")
        assert not [u for u in rec.updates if isinstance(u, NodeEvent) and u.detail == "forged"]
        assert not [u for u in rec.updates if isinstance(u, NodeConflict) and u.node_id == "bay1"]
        assert not [u for u in rec.updates if isinstance(u, NodeLink) and not u.online]
        # Reading another node's commands is refused as well: mosquitto grants the
        # subscription but never delivers what the ACL forbids.
        async with aiomqtt.Client(
            mosq.host, mosq.port, username="bay2", password=PASSWORDS["bay2"], timeout=5
        ) as intruder:
            await intruder.subscribe(hub.topics.down("bay1"), qos=1)
            await intruder.subscribe(hub.topics.down("bay2"), qos=1)
            await hub.node("bay1").set_output(relay_on=False, current_a=0.0, lease_s=5.0)
            await hub.node("bay2").set_output(relay_on=False, current_a=0.0, lease_s=5.0)
            seen: list[str] = []
            async with asyncio.timeout(5):
                async for m in intruder.messages:
                    seen.append(str(m.topic))
                    assert isinstance(m.payload, bytes)
                    if isinstance(decode(m.payload).msg, SetOutput):
                        break  # bay2's command, published after bay1's
            assert seen and set(seen) == {hub.topics.down("bay2")}


# --------------------------------------------------------------------------- command semantics


async def test_commands_are_acked_applied_and_reported(mosq: Mosquitto) -> None:
    async with hub_and_nodes(mosq, n=2) as (hub, sim, rec):
        await rec.wait_for(online("bay1"))
        node = sim.nodes["bay1"]
        await sim.wait_until(lambda: node.configured)
        node.plug_in(sim.clock(), max_a=32.0)
        await hub.node("bay1").set_output(relay_on=True, current_a=10.0, lease_s=5.0)
        assert node.physics.relay_closed and node.physics.setpoint_a == 10.0
        tel = await rec.wait_for(
            lambda u: (
                isinstance(u, NodeTelemetry)
                and u.node_id == "bay1"
                and u.relay_on
                and u.max_current_a > 9.0
            )
        )
        assert isinstance(tel, NodeTelemetry) and tel.setpoint_a == 10.0
        assert hub.node("bay1").stats().frames_rx > 0
        with pytest.raises(PermanentError):  # an EVSE node has no lock: UNSUPPORTED
            await hub.node("bay1").set_lock(locked=True)


async def test_silent_node_times_out_after_retries(mosq: Mosquitto) -> None:
    async with hub_and_nodes(mosq, n=1, offline_after_s=30.0) as (hub, sim, rec):
        await rec.wait_for(online("bay1"))
        sim.nodes["bay1"].set_knobs(silent=True)
        with pytest.raises(DriverTimeout):
            await hub.node("bay1").set_output(relay_on=True, current_a=8.0, lease_s=5.0)
        st = hub.node("bay1").stats()
        assert st.retries == 2 and st.timeouts == 1


async def test_lost_ack_is_retried_and_applied_once(mosq: Mosquitto) -> None:
    async with hub_and_nodes(mosq, n=1) as (hub, sim, rec):
        await rec.wait_for(online("bay1"))
        node = sim.nodes["bay1"]
        await sim.wait_until(lambda: node.configured)
        before = node.counters.commands_applied
        node.set_knobs(corrupt_next=1)  # the ack is garbled on its way: the host resends
        await hub.node("bay1").set_output(relay_on=True, current_a=8.0, lease_s=5.0)
        assert node.counters.commands_applied == before + 1
        assert node.counters.duplicates >= 1
        assert hub.node("bay1").stats().bad_frames >= 1


# --------------------------------------------------------------------------- through a station


def station_cfg(tmp: Path, b: Mosquitto, kinds: tuple[str, ...], **mqtt: Any) -> StationConfig:
    return parse_config(
        {
            "station": {"id": STATION, "data_dir": str(tmp)},
            "timers": {"tick_s": 0.05, "lease_s": 3.0},
            "buses": [{"id": "mqtt", "transport": "mqtt", "host_timeout_s": 10.0}],
            "bays": [
                {
                    "id": f"bay{i + 1}",
                    "connector": i + 1,
                    "kind": k,
                    "bus": "mqtt",
                    "address": i + 1,
                }
                for i, k in enumerate(kinds)
            ],
            "mqtt": mqtt_section(b, **mqtt),
        }
    )


class StationRig(BayWatcher):
    def __init__(self, station: Station, hub: MqttNodeHub, sim: MqttSimNodes) -> None:
        super().__init__(station, timeout=10.0)
        self.hub, self.sim = hub, sim


@contextlib.asynccontextmanager
async def station_over_mqtt(
    tmp: Path, b: Mosquitto, kinds: tuple[str, ...] = ("evse", "evse"), **mqtt: Any
) -> AsyncIterator[StationRig]:
    cfg = station_cfg(tmp, b, kinds, **mqtt)
    hub = build_mqtt(cfg.buses[0], list(cfg.bays), cfg)
    journal = await Journal.open(tmp / "journal.sqlite3")
    station = Station(cfg, journal, hubs={"mqtt": hub})
    station.authorizer.add(free_vend_step())
    await station.restore()
    sim_specs = [SimNodeSpec(b_.id, b_.address, b_.kind) for b_ in cfg.bays]
    task = asyncio.create_task(station.run())
    try:
        async with MqttSimNodes(b.host, b.port, STATION, sim_specs, passwords=PASSWORDS) as sim:
            yield StationRig(station, hub, sim)
    finally:
        station.request_stop("test")
        await asyncio.wait_for(task, 10)
        await journal.close()


async def test_last_will_faults_the_bay(tmp_path: Path, mosq: Mosquitto) -> None:
    # offline_after_s is long: only the last will can fault the bay within the test's limit.
    async with station_over_mqtt(tmp_path, mosq, offline_after_s=60.0, heartbeat_s=1.0) as rig:
        await rig.status("bay1", "Available")
        await rig.status("bay2", "Available")
        rig.sim.kill("bay1")
        snap = await rig.status("bay1", "Faulted", timeout=5.0)
        assert snap["node_online"] is False
        assert rig.station.snapshots.bay(rig.station.bays["bay2"])["status"] == "Available"
        rig.sim.revive("bay1")  # it comes back: hello, reconfigured, available again
        await rig.status("bay1", "Available", timeout=10.0)


async def test_broker_restart_mid_session_loses_nothing(tmp_path: Path, mosq: Mosquitto) -> None:
    async with station_over_mqtt(tmp_path, mosq, offline_after_s=10.0) as rig:
        await rig.status("bay1", "Available")
        node = rig.sim.nodes["bay1"]
        node.plug_in(rig.sim.clock(), max_a=16.0)
        out = await rig.station.commands.present_token("bay1", "TOKEN-1")
        assert out.ok, out
        session_id = out.session_id
        await rig.status("bay1", "Charging")
        await rig.until("bay1", lambda s: s["session"]["energy_wh"] >= 1)
        energy_before = rig.station.bays["bay1"].state.session.energy_wh  # type: ignore[union-attr]
        connects = rig.hub.broker_stats["connects"]

        await asyncio.to_thread(mosq.restart)

        # The controller and the node reconnect by themselves; the session goes on.
        await rig.until(
            "bay1",
            lambda s: (
                rig.hub.broker_stats["connects"] > connects
                and s["session"] is not None
                and s["session"]["energy_wh"] > energy_before
                and s["status"] == "Charging"
            ),
            timeout=20.0,
        )
        assert rig.sim.links["bay1"].connects >= 2
        assert node.physics.relay_closed
        out = await rig.station.commands.stop_session(session_id or "", StopReason.LOCAL)
        assert out.ok and out.data["reason"] == "Local"
        await rig.sim.wait_until(lambda: not node.physics.relay_closed)
        # Nothing lost: every frame of every node arrived (sequence numbers without a gap),
        # and the journal holds the one session, closed once, with energy from both halves.
        for bay in ("bay1", "bay2"):
            stats = rig.hub.node(bay).stats()
            assert stats.extra.get("seq_gaps", 0) == 0, (bay, stats)
            assert stats.bad_frames == 0
        row = await rig.station.journal.session(session_id or "")
        assert row is not None
        assert row["stop_reason"] == "Local"
        assert row["energy_wh"] > energy_before
        assert rig.station.nodes.dropped == 0


# --------------------------------------------------------------------------- configuration


def test_mqtt_config_is_validated(tmp_path: Path) -> None:
    assert check_mqtt({"password": "x"}) == []
    problems = check_mqtt({"port": 0, "passwrd": "x"})
    assert any(p.startswith("mqtt.port:") for p in problems)
    assert any("passwrd" in p for p in problems)
    assert check_mqtt({"password": "x", "password_file": str(tmp_path / "s")})
    assert check_mqtt({"password_file": str(tmp_path / "missing")}) == [
        f"mqtt.password_file: {tmp_path / 'missing'} is not a readable file"
    ]
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    assert MqttConfig.model_validate({"password_file": str(secret)}).secret() == "s3cret"
    assert check_mqtt(None) and check_mqtt(None, need_section=False) == []
    cfg = parse_config(
        {
            "buses": [{"id": "m", "transport": "mqtt"}],
            "bays": [{"id": "b1", "connector": 1, "bus": "m"}],
            "mqtt": {"password": "x"},
        }
    )
    with pytest.raises(PermanentError):
        build_mqtt(cfg.buses[0], list(cfg.bays))
    hub = build_mqtt(cfg.buses[0], list(cfg.bays), cfg)
    assert hub.topics.up("b1") == "edge/edge-station-1/node/b1/up"
    assert hub.node("b1").node_id == "b1"


async def test_the_bus_telemetry_period_configures_the_nodes(mosq: Mosquitto) -> None:
    # Over MQTT a node reports on its own clock: it gets the bus's period as it is (a
    # serial bus's half-poll lead does not apply).
    station = parse_config(
        {
            "station": {"id": STATION},
            "buses": [{"id": "m", "transport": "mqtt", "telemetry_period_s": 2.5}],
            "bays": [{"id": "bay1", "connector": 1, "bus": "m", "address": 1}],
            "mqtt": mqtt_section(mosq),
        }
    )
    hub = build_mqtt(station.buses[0], station.bays, station)
    sim = MqttSimNodes(mosq.host, mosq.port, STATION, specs(1), passwords=PASSWORDS)
    task = asyncio.create_task(hub.run(Recorder()))
    try:
        async with sim:
            node = sim.nodes["bay1"]
            await sim.wait_until(lambda: node.configured)
            assert node.telemetry_period_s == 2.5
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
