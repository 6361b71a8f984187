"""A charging station in real processes for HTTP attack tests: node simulator + ``edge-station run``.

The controller runs with a given ``RLIMIT_NOFILE`` (as systemd's
``LimitNOFILE=`` would set it), so running out of file descriptors shows up
here as it would on the Pi.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.esp32_node.control import request as sim_request
from tests.support.procs import (
    EDGE_STATION,
    REPO,
    Proc,
    free_port,
    kiosk_call,
    start_node_sim,
    write_station_config,
)

UNIT = REPO / "systemd" / "edge-station.service"
SYSTEMD_DEFAULT_NOFILE = 1024  # systemd's soft limit for a service that sets none


def unit_limit_nofile() -> int | None:
    """The ``LimitNOFILE=`` soft value of the station's unit, or None when it sets none."""
    m = re.search(r"^LimitNOFILE=(\d+)", UNIT.read_text(), re.M)
    return int(m.group(1)) if m else None


@dataclass
class ChargingStation:
    base: str
    port: int
    ctl: Proc
    sim: Proc
    sim_dir: Path

    def nodes(self) -> dict[str, dict[str, Any]]:
        state: dict[str, dict[str, Any]] = sim_request(self.sim_dir, "state")
        return state

    def kiosk_state(self) -> dict[str, Any]:
        code, body = kiosk_call("GET", f"{self.base}/api/v1/kiosk/state")
        assert code == 200, (code, body)
        return body

    def statuses(self) -> dict[str, str]:
        return {b["id"]: b["status"] for b in self.kiosk_state()["bays"]}


def start_limited_controller(config: Path, nofile: int) -> Proc:
    """``edge-station run`` with RLIMIT_NOFILE set to ``nofile`` (soft and hard)."""
    boot = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile})); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return Proc([sys.executable, "-c", boot, EDGE_STATION, "run", "--config", str(config)])


@contextlib.contextmanager
def charging_station(
    tmp: Path, *, bays: int, nofile: int, charge: bool = True
) -> Iterator[ChargingStation]:
    """Nodes and controller up, and (with ``charge``) a session charging on every bay."""
    sim_dir = tmp / "sim"
    sim = start_node_sim(sim_dir, bays)
    port = free_port()
    cfg = write_station_config(
        tmp / "station.toml",
        port_path=str(sim_dir / "ttyBAYS"),
        nodes=bays,
        http_port=port,
        data_dir=tmp / "data",
    )
    ctl = start_limited_controller(cfg, nofile)
    st = ChargingStation(f"http://127.0.0.1:{port}", port, ctl, sim, sim_dir)
    try:
        ctl.log.wait_for(lambda ln: ln.get("event") == "station.ready", 60)
        _until(lambda: all(b["node_online"] for b in st.kiosk_state()["bays"]), "nodes online")
        if charge:
            for i in range(1, bays + 1):
                sim_request(sim_dir, "plug_in", f"bay{i}", max_a=16.0, phases=3)
                code, body = kiosk_call(
                    "POST", f"{st.base}/api/v1/kiosk/bays/bay{i}/token", {"token": f"CARD-{i}"}
                )
                assert code == 200 and body.get("code") == "started", body
            _until(lambda: set(st.statuses().values()) == {"Charging"}, "every bay charging", 30)
        yield st
    finally:
        ctl.terminate()
        sim.terminate()


def _until(pred: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except (AssertionError, KeyError, OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout} s")
        time.sleep(0.2)


def timed_get(url: str, timeout: float = 5.0) -> float | None:
    """Seconds one GET on a fresh connection took, or None when it failed."""
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            if resp.status != 200:
                return None
    except OSError:
        return None
    return time.perf_counter() - t0
