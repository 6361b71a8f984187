"""``edge-station sim-nodes`` over MQTT keeps a session through a controller restart.

Three processes, as on a site whose nodes talk MQTT: mosquitto (with the
shipped ACL), ``edge-station sim-nodes --transport mqtt`` and ``edge-station
run``. A car is plugged in with ``edge-station sim`` (against sim-nodes' folder),
a session starts at the kiosk; the controller is SIGKILLed and stays down until
the node's own failsafe opened the relay; after the restart the same session
charges again, and the journal records one session and one interruption.
(The serial variant is ``tests/test_restart.py``, also on sim-nodes.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.mosquitto import broker
from tests.support.procs import (
    EDGE_STATION,
    free_port,
    kiosk_call,
    start_controller,
    start_node_sim,
)
from tests.support.sim_rig import SimStation

pytestmark = pytest.mark.timeout(300)
STATION = "mqtt-site"


def sim(directory: Path, *args: str) -> str:
    done = subprocess.run(
        [EDGE_STATION, "sim", "--dir", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def node_state(directory: Path) -> dict[str, Any]:
    from simulators.esp32_node.control import request

    state: dict[str, Any] = request(directory, "state", "bay1")
    return state


def test_mqtt_sim_nodes_keep_the_session_through_a_controller_restart(tmp_path: Path) -> None:
    with broker(tmp_path / "mqtt", {"controller": "pw-ctl", "bay1": "pw-bay1"}) as b:
        nodes_dir = tmp_path / "nodes"
        nodes = start_node_sim(
            nodes_dir,
            1,
            extra=["--transport", "mqtt", "--broker", f"127.0.0.1:{b.port}", "--station", STATION],
        )
        port = free_port()
        cfg = tmp_path / "station.toml"
        cfg.write_text(
            f"""
[station]
id = "{STATION}"
data_dir = "{tmp_path / "data"}"

[http]
host = "127.0.0.1"
port = {port}

[auth]
free_vend = true

[timers]
lease_s = 5
connection_timeout_s = 600

[mqtt]
host = "127.0.0.1"
port = {b.port}
username = "controller"
password = "pw-ctl"

[[buses]]
id = "air"
transport = "mqtt"
host_timeout_s = 5

[[bays]]
id = "bay1"
connector = 1
bus = "air"
max_current_a = 16
""",
            encoding="utf-8",
        )
        ctl = start_controller(cfg)
        st = SimStation(tmp_path / "data", port, ctl)
        try:
            ctl.log.wait_for(lambda ln: ln.get("event") == "station.ready", 60)
            st.until(lambda: st.bay("bay1").get("node_online"), 30, "bay1 online over MQTT")
            assert "an EV is plugged in" in sim(nodes_dir, "plug", "bay1")
            st.until(lambda: st.bay("bay1").get("pilot") == "B", 15, "the car seen")
            code, body = kiosk_call(
                "POST", f"{st.base}/api/v1/kiosk/bays/bay1/token", {"token": "CARD-9"}
            )
            assert code == 200 and body["code"] == "started", body
            sid = body["session_id"]
            st.until(lambda: max(node_state(nodes_dir)["current_a"]) > 1, 30, "drawing")

            ctl.kill()
            # The nodes live on: without their host they fall to the safe share (0 A) by
            # themselves, and `sim status` still answers.
            st.until(lambda: not node_state(nodes_dir)["relay_on"], 30, "the node's failsafe")
            assert "host silent" in sim(nodes_dir, "status")
            applied = node_state(nodes_dir)["outputs_applied"]

            ctl = st.proc = start_controller(cfg)
            ctl.log.wait_for(lambda ln: ln.get("event") == "station.ready", 60)
            st.until(
                lambda: (
                    (s := node_state(nodes_dir))["outputs_applied"] > applied
                    and s["relay_on"]
                    and max(s["current_a"]) > 1
                ),
                60,
                "charging again on the restarted controller's setpoint",
            )
            assert (st.bay("bay1").get("session") or {}).get("id") == sid
            assert "unplugged" in sim(nodes_dir, "unplug", "bay1")
            st.until(lambda: st.bay("bay1").get("session") is None, 30, "session ended")
            sessions = st.journal("SELECT id, state, stop_reason FROM sessions")
            assert sessions == [{"id": sid, "state": "closed", "stop_reason": "EVDisconnected"}]
            gaps = [
                e["data"]
                for e in st.journal("SELECT kind, data FROM events")
                if e["kind"] == "interruption"
            ]
            assert len(gaps) == 1 and gaps[0]["cause"] == "controller_restart", gaps
            assert gaps[0]["outcome"] == "resumed"
        finally:
            ctl.terminate()
            assert nodes.terminate() == 0
