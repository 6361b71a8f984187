"""``edge-station simulate`` options, each through the real processes.

``--csms-url`` with ``--transport mqtt``: another central system (its own
process) gets the station's boot and transactions while the nodes talk through
a private mosquitto. ``--config``: a real station.toml whose hardware (a serial
bus, an RTU grid meter, an active-high emergency-stop pin, a camera, a
production CSMS) is simulated and nothing else; ``--no-csms``. Bad options are
refused with a sentence and exit code 2.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.mosquitto import require_mosquitto
from tests.support.procs import EDGE_STATION, Proc, free_port
from tests.support.sim_rig import start_simulation

pytestmark = pytest.mark.timeout(300)


def simulate_rc(*args: str) -> tuple[int, str]:
    done = subprocess.run(
        [EDGE_STATION, "simulate", *args], capture_output=True, text=True, timeout=120
    )
    return done.returncode, (done.stdout + done.stderr).strip()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--auth", "tokens"], "--auth tokens needs --tokens A,B"),
        (["--tokens", "A"], "--tokens only counts with --auth tokens."),
        (["--csms-url", "http://x/ocpp"], "--csms-url must start with ws:// or wss://"),
        (["--bays", "0"], "--bays must be between 1 and 32, not 0."),
        (["--pv-kw", "-1"], "--pv-kw must be between 0 and 1000 kW"),
        (["--config", "/nonexistent/station.toml"], "no such file"),
    ],
)
def test_bad_options_are_refused_in_a_sentence(args: list[str], said: str) -> None:
    rc, out = simulate_rc(*args)
    assert rc == 2 and said in out and "Traceback" not in out


def test_an_invalid_config_is_refused_with_its_problems(tmp_path: Path) -> None:
    cfg = tmp_path / "station.toml"
    cfg.write_text('[[bays]]\nid = "b1"\nconnector = 0\nbus = "x"\n', encoding="utf-8")
    rc, out = simulate_rc("--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert rc == 2 and "invalid configuration" in out and "connector" in out


def test_external_csms_and_mqtt_nodes(tmp_path: Path) -> None:
    require_mosquitto()
    csms_port = free_port()
    csms = Proc([sys.executable, "-m", "simulators.csms", "--port", str(csms_port)])
    try:
        st = start_simulation(
            tmp_path / "data",
            [
                "--bays", "2",
                "--kind", "evse",
                "--no-demo-drivers",
                "--transport", "mqtt",
                "--csms-url", f"ws://127.0.0.1:{csms_port}/ocpp",
            ],
        )  # fmt: skip
        try:
            station_id = f"sim-{st.port}"
            _wait_raw(csms, f"{station_id} -> BootNotification", 30)
            # The nodes are MQTT clients of the private broker, read by the MQTT driver.
            st.proc.log.wait_for(lambda ln: ln.get("event") == "simulate.broker", 5)
            st.until(lambda: st.proc.log.count("mqtt.configured") >= 2, 10, "nodes via MQTT")
            assert st.proc.log.count("esp32.configured") == 0, "nodes on the serial driver"
            st.ok("plug", "bay1")
            st.ok("camera", "EXT-1", "--bay", "bay1")
            st.until(lambda: st.bay("bay1").get("status") == "Charging", 30, "bay1 charging")
            _wait_raw(csms, f"{station_id} -> StartTransaction", 30)
            # A node going offline over MQTT: its connection drops, the broker tells.
            st.ok("node", "offline", "bay2")
            st.until(lambda: st.bay("bay2").get("node_online") is False, 30, "bay2 offline")
            st.ok("node", "online", "bay2")
            st.until(lambda: st.bay("bay2").get("node_online") is True, 30, "bay2 online")
            r = st.sim("usb", "unplug")
            assert r.rc == 1 and "MQTT" in r.out
        finally:
            assert st.stop() == 0, "\n".join(st.proc.log.raw[-30:])
    finally:
        csms.terminate()


def _wait_raw(proc: Proc, needle: str, timeout: float) -> None:
    with proc.log._cond:
        ok = proc.log._cond.wait_for(lambda: any(needle in r for r in proc.log.raw), timeout)
    assert ok, f"{needle!r} not seen; last lines:\n" + "\n".join(proc.log.raw[-20:])


SITE_CONFIG = """
[station]
id = "site-7"
name = "Corner garage"
data_dir = "/var/lib/edge-station"

[http]
host = "0.0.0.0"
port = 80

[auth]
free_vend = true

[[buses]]
id = "rs485"
transport = "serial"
port = "/dev/ttyUSB-nowhere"

[[bays]]
id = "garage-left"
connector = 1
bus = "rs485"
address = 3
node_serial = "ESP-0042"

[[bays]]
id = "bikes"
connector = 2
kind = "locker"
bus = "rs485"
address = 7
max_current_a = 4
min_current_a = 0.5
phases = 1
phase = "L2"

[site]
main_limit_a = 25
main_guaranteed_headroom_a = 6

[[meters]]
name = "house"
role = "grid"
map = "sdm630"
poll_interval_s = 0.5
bus = { transport = "rtu", device = "/dev/ttyUSB-meter", baudrate = 9600 }

[gpio]
emergency_stop = { pin = 17, active_high = true, pull = "down" }

[camera]
device = "/dev/video-nowhere"

[ocpp]
url = "wss://csms.example.invalid/ocpp"
charge_point_id = "site-7"
security_profile = 2
password = "not-for-a-simulation"
"""


def test_config_file_simulates_only_the_hardware_it_names(tmp_path: Path) -> None:
    cfg = tmp_path / "station.toml"
    cfg.write_text(SITE_CONFIG, encoding="utf-8")
    st = start_simulation(tmp_path / "data", ["--config", str(cfg), "--no-csms"])
    try:
        s = st.state()
        assert s["station"]["id"] == "site-7" and s["station"]["name"] == "Corner garage"
        assert [b["id"] for b in s["bays"]] == ["garage-left", "bikes"]
        status = st.ok("status")
        # Nodes named by the config's bays, a simulator for its one meter, its e-stop pin.
        assert "garage-left" in status and "bikes" in status
        assert "meter house: none" in status and "meter grid" not in status
        health = st.health()
        services = {x["name"] for x in health["services"]}
        assert "meter:house" in services and "ocpp" not in services, services
        # The node answered with the serial the config expects: no identity conflict.
        assert st.bay("garage-left")["fault"] is None
        assert "Emergency stop pressed" in st.ok("estop", "press")  # drives pin 17 high
        st.until(lambda: st.health().get("emergency_stop_pressed") is True, 15, "e-stop")
    finally:
        assert st.stop() == 0
