"""Disk full under a running station: ``edge-station run`` with its journal on a small tmpfs.

Real processes: the node simulator and the controller (inside a private mount
namespace that holds the tmpfs, see :mod:`tests.support.tmpfs`). The test
fills the disk while sessions charge, stops and starts sessions, frees the
space, kills and restarts the controller, and checks the journal afterwards:

- every start or stop the kiosk acknowledged (HTTP 200) is in the journal;
- a stop that could not be recorded was refused in a sentence, the relay went
  off at once, and the stop was written later with its own time and meter value;
- the station accepts sessions again within 30 s of space returning, by itself;
- no open session without its bay holding it, nothing closed twice, one
  StartTransaction and at most one StopTransaction per session.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from simulators.esp32_node.control import request as sim_request
from tests.support.procs import (
    EDGE_STATION,
    Proc,
    free_port,
    kiosk_call,
    start_node_sim,
    write_station_config,
)
from tests.support.tmpfs import Tmpfs, tmpfs

BAYS = 3
UNBLOCK_LIMIT_S = 30.0
JOURNAL_FILES = ("journal.sqlite3", "journal.sqlite3-wal")
# Scaled to the small disk; check_s and retry_s keep their defaults (what a site runs).
JOURNAL_SECTION = """
[journal]
low_space_mb = 6
samples_min_free_mb = 1
emergency_reserve_mb = 1
"""


class Station:
    """The controller inside the namespace, and what the kiosk acknowledged."""

    def __init__(self, fs: Tmpfs, cfg: Path, base: str, sim_dir: Path) -> None:
        self.fs, self.cfg, self.base, self.sim_dir = fs, cfg, base, sim_dir
        self.proc: Proc | None = None
        self.started: dict[str, str] = {}  # acknowledged starts: session id -> bay
        self.keys: dict[str, str] = {}
        self.stopped: set[str] = set()  # acknowledged stops

    def start(self) -> Proc:
        self.proc = Proc([*self.fs.enter(), EDGE_STATION, "run", "--config", str(self.cfg)])
        self.proc.log.wait_for(lambda ln: ln.get("event") == "station.ready", 30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            bays = self.state().get("bays", [])
            if bays and all(b["node_online"] for b in bays):
                return self.proc
            time.sleep(0.1)  # another process: nothing to await
        raise TimeoutError("bays not online:\n" + "\n".join(self.proc.log.raw[-30:]))

    def state(self) -> dict[str, Any]:
        return kiosk_call("GET", f"{self.base}/api/v1/kiosk/state")[1]

    def health(self) -> tuple[int, dict[str, Any]]:
        return kiosk_call("GET", f"{self.base}/healthz")

    def start_session(self, bay: str, token: str) -> tuple[int, dict[str, Any]]:
        code, body = kiosk_call(
            "POST", f"{self.base}/api/v1/kiosk/bays/{bay}/token", {"token": token}
        )
        if code == 200 and body.get("code") == "started":
            self.started[body["session_id"]] = bay
            self.keys[body["session_id"]] = body["key"]
        return code, body

    def stop_session(self, sid: str) -> tuple[int, dict[str, Any]]:
        code, body = kiosk_call(
            "POST",
            f"{self.base}/api/v1/kiosk/bays/{self.started[sid]}/stop",
            {"session_id": sid, "key": self.keys[sid]},
        )
        if code == 200 and body.get("code") == "stopped":
            self.stopped.add(sid)
        return code, body

    def relay_on(self, bay: str) -> bool:
        return bool(sim_request(self.sim_dir, "state", bay)["relay_on"])

    def wait_relay(self, bay: str, on: bool, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.relay_on(bay) != on:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{bay}: relay never {'on' if on else 'off'}")
            time.sleep(0.05)  # the simulator's state, another process

    def energy(self, bay: str) -> int:
        return int(sim_request(self.sim_dir, "state", bay)["energy_wh"])

    def wait_accepting(self, timeout: float) -> float:
        """Seconds until the kiosk says the station accepts sessions again."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.state().get("station", {}).get("accepting_sessions"):
                return time.monotonic() - t0
            time.sleep(0.05)  # polled over HTTP like a kiosk would
        raise TimeoutError(f"still refusing sessions {timeout} s after space returned")


def journal_rows(fs: Tmpfs, dest: Path) -> dict[str, Any]:
    fs.copy_out(dest, *JOURNAL_FILES)
    con = sqlite3.connect(dest / "journal.sqlite3")
    con.row_factory = sqlite3.Row
    try:
        return {
            "sessions": {r["id"]: dict(r) for r in con.execute("SELECT * FROM sessions")},
            "states": {
                r["bay_id"]: json.loads(r["data"]) for r in con.execute("SELECT * FROM bay_state")
            },
            "closes": dict(
                con.execute(
                    "SELECT session_id, count(*) FROM events WHERE kind='session_closed'"
                    " GROUP BY session_id"
                ).fetchall()
            ),
            "outbox": [
                (r["session_id"], r["action"])
                for r in con.execute("SELECT session_id, action FROM outbox")
            ],
        }
    finally:
        con.close()


def check_consistent(j: dict[str, Any], st: Station) -> None:
    sessions, states, closes = j["sessions"], j["states"], j["closes"]
    lost = sorted(set(st.started) - set(sessions))
    assert not lost, f"acknowledged starts missing: {lost}"
    unstopped = sorted(s for s in st.stopped if sessions[s]["state"] != "closed")
    assert not unstopped, f"acknowledged stops not recorded: {unstopped}"
    for sid, s in sessions.items():
        assert j["outbox"].count((sid, "StartTransaction")) == 1, sid
        stops = j["outbox"].count((sid, "StopTransaction"))
        if s["state"] == "closed":
            assert closes.get(sid) == 1 and stops == 1, f"{sid}: closed {closes.get(sid)} times"
            assert s["energy_wh"] == s["meter_stop_wh"] - s["meter_start_wh"] >= 0
        else:
            assert sid not in closes and stops == 0, sid
            held = (states.get(s["bay_id"], {}).get("session") or {}).get("session_id")
            assert held == sid, f"{sid} open but its bay holds {held}"
    for bay, state in states.items():
        sess = state.get("session")
        if sess:
            assert sessions[sess["session_id"]]["state"] == "open", f"{bay} holds a closed one"


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    sim_dir = tmp_path / "sim"
    sim = start_node_sim(sim_dir, BAYS)
    with tmpfs(tmp_path / "disk", "16m") as fs:
        port = free_port()
        cfg = write_station_config(
            tmp_path / "station.toml",
            port_path=str(sim_dir / "ttyBAYS"),
            nodes=BAYS,
            http_port=port,
            data_dir=fs.mountpoint,
            extra=JOURNAL_SECTION,
        )
        for i in range(1, BAYS + 1):
            sim_request(sim_dir, "plug_in", f"bay{i}", max_a=16.0, phases=3)
        st = Station(fs, cfg, f"http://127.0.0.1:{port}", sim_dir)
        try:
            yield st
        finally:
            if st.proc is not None:
                st.proc.kill()
            sim.kill()


def test_disk_full_loses_no_acknowledged_session_and_recovers_by_itself(
    rig: Station, tmp_path: Path
) -> None:
    st, fs = rig, rig.fs
    proc = st.start()
    for bay in ("bay1", "bay2"):
        code, body = st.start_session(bay, f"CARD-{bay}")
        assert code == 200 and body["code"] == "started", body
        st.wait_relay(bay, True)
    time.sleep(1.5)  # let them charge: the nodes' counters move

    # 1. The disk fills up. The owner is warned (the low-space threshold was crossed).
    fs.fill()
    proc.log.wait_for(lambda ln: ln.get("event") == "journal.disk_low", 20)
    storage = st.state()["station"]["storage"]
    assert storage["low_space"] and "almost full" in storage["warning"]

    # 2. A stop on a full disk: recorded in the emergency reserve, so acknowledged.
    sid1 = next(s for s, b in st.started.items() if b == "bay1")
    code, body = st.stop_session(sid1)
    assert code == 200 and body["code"] == "stopped", body
    st.wait_relay("bay1", False)
    proc.log.wait_for(lambda ln: ln.get("event") == "journal.reserve_released", 5)

    # 3. The reserve's space is gone too: a stop cannot be recorded. Refused in a
    #    sentence, but the relay goes off at once; a new session is refused.
    fs.fill("filler2")
    sid2 = next(s for s, b in st.started.items() if b == "bay2")
    t_stop = time.time()
    code, body = st.stop_session(sid2)
    t_stopped = time.time()
    assert code == 409 and body["error"] == "not_recorded", body
    assert "could not record" in body["message"] and "stopped" in body["message"]
    st.wait_relay("bay2", False)
    energy_at_stop = st.energy("bay2")
    code, body = st.start_session("bay3", "CARD-bay3")
    assert code == 409 and body["error"] in ("blocked_journal", "not_recorded"), body
    assert "{" not in body["message"]
    code, health = st.health()
    assert code == 503 and "journal" in [r["code"] for r in health["reasons"]]
    time.sleep(3)  # blocked for a while: retries fail, nothing is lost or repeated

    # 4. Space returns: accepting sessions again by itself, within 30 s.
    fs.free("filler2")
    fs.free()
    unblock_s = st.wait_accepting(UNBLOCK_LIMIT_S)
    print(f"\n[disk-full] accepting sessions {unblock_s:.2f} s after space returned")
    # Healthy again too; the health check also weighs loop lag, which a loaded machine can
    # push up for a moment, so it gets a few seconds (and says why when it does not recover).
    deadline = time.monotonic() + 30
    while (healthz := st.health())[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)  # another process's state: polled
    assert healthz[0] == 200, healthz[1].get("reasons")
    code, body = st.start_session("bay3", "CARD-bay3")
    assert code == 200 and body["code"] == "started", body
    j = journal_rows(fs, tmp_path / "copy1")
    s2 = j["sessions"][sid2]
    assert s2["state"] == "closed" and s2["stop_reason"] == "Local"
    assert t_stop <= s2["stopped_at"] <= t_stopped  # its own time, not when it was written
    assert s2["meter_stop_wh"] <= energy_at_stop  # the meter when it stopped
    check_consistent(j, st)

    # 5. Full again, and the reserve taken by something else: a stop that cannot be
    #    recorded, then a crash before space returns. After the restart the journal is
    #    consistent (that stop was never acknowledged).
    fs.fill()
    fs.outside("journal.reserve").unlink()
    fs.fill("filler2")
    sid3 = next(s for s, b in st.started.items() if b == "bay3")
    code, body = st.stop_session(sid3)
    assert code == 409 and body["error"] == "not_recorded", body
    st.wait_relay("bay3", False)
    proc.kill()
    fs.free("filler2")
    fs.free()
    st.start()
    assert st.wait_accepting(UNBLOCK_LIMIT_S) >= 0
    assert st.proc is not None and st.proc.terminate() == 0
    final = journal_rows(fs, tmp_path / "copy2")
    check_consistent(final, st)
    assert set(st.started) == {sid1, sid2, sid3} and st.stopped == {sid1}
