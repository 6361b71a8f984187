"""Node frames are checked, not trusted, over MQTT: a real mosquitto with the shipped ACL, the
station's MQTT hub, simulated nodes publishing with their own accounts."""

from __future__ import annotations

from pathlib import Path

from controller.core.bay import StopReason
from simulators.esp32_node.bus import SimNodeSpec
from simulators.esp32_node.mqtt_front import MqttSimNodes
from tests.support.mosquitto import Mosquitto
from tests.test_mqtt_hub import PASSWORDS, STATION, StationRig, mosq, station_over_mqtt

__all__ = ["mosq"]  # the broker fixture, shared with the MQTT hub's tests


async def charging(rig: StationRig) -> str:
    await rig.status("bay1", "Available")
    node = rig.sim.nodes["bay1"]
    node.plug_in(rig.sim.clock(), max_a=16.0)
    out = await rig.station.commands.present_token("bay1", "TOKEN-1")
    assert out.ok and out.session_id, out
    await rig.until("bay1", lambda s: s["status"] == "Charging" and s["session"]["energy_wh"] > 0)
    return out.session_id


async def test_a_forged_energy_frame_over_mqtt_is_rejected_and_metering_goes_on(
    tmp_path: Path, mosq: Mosquitto
) -> None:
    async with station_over_mqtt(tmp_path, mosq) as rig:
        sid = await charging(rig)
        node, link = rig.sim.nodes["bay1"], rig.sim.links["bay1"]
        booked = rig.station.bays["bay1"].state.session.energy_wh  # type: ignore[union-attr]
        node.forge_telemetry(energy_wh=int(node.physics.energy_wh) + 5_000_000)
        link.wake.set()
        await rig.sim.wait_until(lambda: not node.queue and not link.pending)
        await rig.until("bay1", lambda s: s["session"]["energy_wh"] >= booked + 3)
        out = await rig.station.commands.stop_session(sid, StopReason.LOCAL)
        assert out.ok and 0 < out.data["energy_wh"] < 1000, out
        assert rig.station.nodes.rejected_readings.get(("bay1", "jump")) == 1


async def test_a_cloned_node_on_the_same_account_faults_the_bay_not_the_session(
    tmp_path: Path, mosq: Mosquitto
) -> None:
    async with station_over_mqtt(tmp_path, mosq) as rig:
        sid = await charging(rig)
        clone = SimNodeSpec("bay1", 1, serial="CLONE-0001", firmware="clone/6.6.6")
        # Same credentials and topics (a copied firmware image), no car: "pilot A".
        async with MqttSimNodes(
            mosq.host, mosq.port, STATION, [clone], passwords=PASSWORDS, client_suffix="-clone"
        ) as clones:
            await clones.wait_connected()
            snap = await rig.until("bay1", lambda s: s["fault"] is not None or not s["session"])
            assert snap["fault"] == "address_conflict"
            await clones.wait_until(lambda: clones.links["bay1"].published >= 10, 15)
        st = rig.station.bays["bay1"].state
        assert st.session is not None and st.session.session_id == sid
        rows = await rig.station.journal.sessions()
        assert [(r["state"], r["stop_reason"]) for r in rows] == [("open", None)]
