"""``edge-station sim ...`` against a running ``edge-station simulate``: every fault command.

One simulation for the module (two EV bays, two lockers, a PV meter, a token
list, the journal on a small disk of its own); each command is run as its own
process and its effect is awaited where the station shows it: the kiosk state,
``/healthz`` and the journal. Tests run in file order and share the station;
each leaves its bays as it found them.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import kiosk_call
from tests.support.sim_rig import SimStation, start_simulation

pytestmark = pytest.mark.timeout(600)

SMALL_DISK_MB = 24


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimStation]:
    data = tmp_path_factory.mktemp("simfaults") / "data"
    s = start_simulation(
        data,
        [
            "--bays", "4",
            "--no-demo-drivers",
            "--pv-kw", "6",
            "--auth", "tokens",
            "--tokens", "CARD-1,CARD-2,RIDER-1,RIDER-2",
            "--small-disk", str(SMALL_DISK_MB),
        ],
    )  # fmt: skip
    try:
        yield s
    finally:
        assert s.stop() == 0, "\n".join(s.proc.log.raw[-30:])


def journal(st: SimStation, sql: str, copy_to: Path) -> list[dict[str, Any]]:
    """The journal lives on the simulation's private tmpfs: copy it out through its root."""
    inner = Path(f"/proc/{st.proc.pid}/root") / (st.data / "journal").relative_to("/")
    copy_to.mkdir(parents=True, exist_ok=True)
    for name in ("journal.sqlite3", "journal.sqlite3-wal"):
        if (inner / name).exists():
            shutil.copyfile(inner / name, copy_to / name)
    con = sqlite3.connect(copy_to / "journal.sqlite3")
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql)]
    finally:
        con.close()


def safe_mode(st: SimStation) -> set[str]:
    return {c["cause"] for c in st.health().get("safe_mode", [])}


def test_errors_are_sentences_with_exit_codes(st: SimStation, tmp_path: Path) -> None:
    r = st.sim("plug", "bay9")
    assert r.rc == 1 and "There is no bay 'bay9'" in r.out and "bay1, bay2, bay3, bay4" in r.out
    r = st.sim("door", "force", "bay1")
    assert r.rc == 1 and "bay1 is an EV charger: it has no door." == r.out
    r = st.sim("pv", "lots")
    assert r.rc == 1 and "is not a power" in r.out
    r = st.sim("meter", "slow")
    assert r.rc == 1 and "needs a delay" in r.out
    r = st.sim("meter", "melted")
    assert r.rc == 2 and "invalid choice" in r.out
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    r = st.sim("--dir", str(nothing), "status")  # a second --dir: the last one counts
    assert r.rc == 1 and r.out.startswith("No simulation is running in")
    assert "Traceback" not in r.out


def test_status_names_nodes_meters_and_inputs(st: SimStation) -> None:
    out = st.ok("status")
    for bay in ("bay1", "bay2", "bay3", "bay4"):
        assert bay in out
    assert "meter grid: none" in out and "meter pv: none" in out
    assert "emergency stop: released" in out
    assert "journal disk:" in out


def test_plug_and_camera_start_only_listed_tokens(st: SimStation, tmp_path: Path) -> None:
    assert st.ok("plug", "bay1", "--phases", "3", "--max-a", "16") == (
        "bay1: an EV is plugged in (3 phase(s), up to 16 A)."
    )
    st.until(lambda: st.bay("bay1").get("pilot") == "B", 15, "bay1 sees the car")
    out = st.ok("camera", "STRANGER-9", "--bay", "bay1")
    assert out == "The camera shows the code 'STRANGER-9' in front of bay1."
    # Codes go to the station in the order the camera saw them: the stranger's first.
    st.ok("camera", "CARD-1", "--bay", "bay1")
    st.until(lambda: st.bay("bay1").get("status") == "Charging", 30, "bay1 charging")
    rows = journal(st, "SELECT token FROM sessions WHERE bay_id='bay1'", tmp_path)
    # Free vend would have given the stranger the bay (and refused CARD-1 as "in use").
    assert rows == [{"token": "CARD-1"}]


def test_grid_step_lowers_the_charging_car_at_once(st: SimStation, tmp_path: Path) -> None:
    st.until(lambda: st.bay("bay1").get("setpoint_a", 0) >= 10, 60, "bay1 ramped up")
    # 40 A main, 2 A reserve: with the building at 30 A (and no sun), 8 A are left for bay1.
    st.ok("pv", "0")
    assert "30 / 30 / 30 A" in st.ok("grid", "30")
    st.until(lambda: 0 < st.bay("bay1").get("setpoint_a", 99) <= 8, 10, "bay1 at most 8 A")
    rows = journal(st, "SELECT detail FROM audit WHERE kind='throttle'", tmp_path)
    lowered = [json.loads(r["detail"]) for r in rows]
    assert any(d["bay_id"] == "bay1" and d["new_a"] <= 8 < d["old_a"] for d in lowered), lowered
    assert "daily curve" in st.ok("grid", "curve")
    st.ok("pv", "curve")
    st.ok("unplug", "bay1")
    st.until(lambda: st.bay("bay1").get("session") is None, 20, "bay1's session ended")


@pytest.mark.parametrize(
    ("fault", "extra"),
    [("silent", []), ("exception", ["--code", "2"]), ("garbage", []), ("slow", ["--delay", "6"])],
)
def test_meter_fault_puts_the_station_in_safe_mode_until_cleared(
    st: SimStation, fault: str, extra: list[str]
) -> None:
    said = st.ok("meter", fault, *extra)
    assert said.startswith("Meter grid ")
    st.until(lambda: "grid_meter" in safe_mode(st), 30, f"safe mode after a {fault} meter")
    assert st.ok("meter", "none") == "Meter grid answers normally again."
    st.until(lambda: "grid_meter" not in safe_mode(st), 30, "safe mode left")


def test_node_offline_online_and_reboot(st: SimStation) -> None:
    assert st.ok("node", "offline", "bay1").startswith("bay1: the node is offline")
    st.until(lambda: st.bay("bay1").get("node_online") is False, 20, "bay1 offline")
    st.ok("node", "online", "bay1")
    st.until(lambda: st.bay("bay1").get("node_online") is True, 20, "bay1 online again")
    before = st.proc.log.count("esp32.configured")
    assert "rebooted" in st.ok("node", "reboot", "bay1")
    # A rebooted node has lost its configuration: the station configures it again.
    st.until(lambda: st.proc.log.count("esp32.configured") > before, 20, "bay1 configured again")


def test_lock_jam_faults_the_locker_and_a_forced_door_stops_its_session(
    st: SimStation, tmp_path: Path
) -> None:
    assert st.ok("lock", "jam", "bay3") == "bay3: the lock is jammed."
    st.ok("camera", "RIDER-1", "--bay", "bay3")
    # The node reports its jammed bolt: the bay is out of order and the rider's session ends.
    # (Its FAULT event or the failed unlocks, whichever the station sees first.)
    faults = ("lock_jammed", "lock_fault")
    st.until(
        lambda: (b := st.bay("bay3")).get("fault") in faults and b["session"] is None,
        45,
        "bay3 faulted, its session ended",
    )
    assert st.bay("bay3")["status"] == "Faulted"
    assert st.ok("lock", "free", "bay3") == "bay3: the lock moves again."
    st.until(lambda: st.bay("bay3").get("fault") is None, 20, "bay3's fault cleared")
    rows = journal(st, "SELECT stop_reason FROM sessions WHERE bay_id='bay3'", tmp_path)
    assert rows == [{"stop_reason": "Fault"}]

    st.ok("camera", "RIDER-2", "--bay", "bay4")
    st.until(lambda: st.bay("bay4").get("locked") is False, 30, "bay4 unlocked for the rider")
    st.ok("door", "open", "bay4")
    st.ok("plug", "bay4", "--charger-a", "1.5")
    st.ok("door", "close", "bay4")
    st.until(lambda: st.bay("bay4").get("locked") is True, 30, "bay4 locked again")
    assert st.ok("door", "force", "bay4") == "bay4: the locked door was forced open."
    st.until(lambda: st.bay("bay4").get("session") is None, 20, "bay4's session stopped")
    rows = journal(st, "SELECT stop_reason FROM sessions WHERE bay_id='bay4'", tmp_path)
    assert rows == [{"stop_reason": "DoorForced"}]


def test_disk_full_refuses_new_sessions_and_free_recovers(st: SimStation) -> None:
    st.ok("plug", "bay1")
    st.until(lambda: st.bay("bay1").get("pilot") == "B", 15, "bay1 sees the car")
    out = st.ok("disk", "full")
    assert out.startswith("The journal's disk is full (")
    code, body = kiosk_call("POST", f"{st.base}/api/v1/kiosk/bays/bay1/token", {"token": "CARD-1"})
    assert body.get("code") != "started", body
    st.until(lambda: st.health().get("accepting_sessions") is False, 30, "sessions refused")
    assert "free again" in st.ok("disk", "free")
    st.until(lambda: st.health().get("accepting_sessions") is True, 45, "sessions accepted again")
    code, body = kiosk_call("POST", f"{st.base}/api/v1/kiosk/bays/bay1/token", {"token": "CARD-1"})
    assert code == 200 and body["code"] == "started", body
    st.ok("unplug", "bay1")
    st.until(lambda: st.bay("bay1").get("session") is None, 20, "bay1's session ended")


def test_pv_step_feeds_a_solar_session(st: SimStation) -> None:
    assert st.state()["station"]["pv_available"] is True
    st.ok("grid", "0")
    assert st.ok("pv", "0") == "The PV now produces 0 kW."
    st.ok("plug", "bay2")
    st.until(lambda: st.bay("bay2").get("pilot") == "B", 15, "bay2 sees the car")
    code, body = kiosk_call(
        "POST", f"{st.base}/api/v1/kiosk/bays/bay2/token", {"token": "CARD-2", "mode": "solar"}
    )
    assert code == 200 and body["code"] == "started", body
    sid, key = body["session_id"], body["key"]
    code, m = kiosk_call(
        "POST",
        f"{st.base}/api/v1/kiosk/bays/bay2/mode",
        {"session_id": sid, "key": key, "mode": "solar"},
    )
    assert code == 200, m
    st.until(lambda: (st.bay("bay2").get("session") or {}).get("mode") == "solar", 10, "solar")
    # No sun: the solar session waits at 0 A.
    st.until(lambda: st.bay("bay2").get("setpoint_a") == 0.0, 60, "bay2 waiting for sun")
    assert "9 kW" in st.ok("pv", "9")
    st.until(lambda: st.bay("bay2").get("setpoint_a", 0) >= 6, 60, "bay2 charging from the sun")
    assert "follows the sun" in st.ok("pv", "curve")
    st.ok("grid", "curve")


# Last: a released emergency stop stays latched until an owner clears it.
def test_emergency_stop_press_and_release(st: SimStation, tmp_path: Path) -> None:
    assert st.bay("bay2")["session"] is not None, "needs the solar session of the test before"
    out = st.ok("estop", "press")
    assert out.startswith("Emergency stop pressed")
    st.until(lambda: st.health().get("emergency_stop_pressed") is True, 15, "e-stop seen")
    st.until(lambda: st.bay("bay2").get("session") is None, 15, "bay2's session stopped")
    assert "released" in st.ok("estop", "release")
    st.until(lambda: st.health().get("emergency_stop_pressed") is False, 15, "e-stop released")
    rows = journal(st, "SELECT bay_id, stop_reason FROM sessions WHERE bay_id='bay2'", tmp_path)
    assert rows == [{"bay_id": "bay2", "stop_reason": "EmergencyStop"}]
    st.ok("unplug", "bay2")
