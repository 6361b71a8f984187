"""Time to accept sessions again after a full disk gets space back, with no action from anyone.

Real processes: the node simulator and ``edge-station run`` with its journal
on a 16 MB tmpfs in a private mount namespace (``tests/support/tmpfs.py``),
``[journal]`` at its default retry and check intervals. Each cycle fills the
disk, makes the station notice (a start it cannot record), leaves it full for
a random 0–6 s (space comes back at any moment of the retry period), frees
the space, and measures until the kiosk API says it accepts sessions again
(polled every 50 ms, like a kiosk would) and until ``/healthz`` answers 200.
Run: ``./dev.sh bench tests/bench/bench_disk_full.py``.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from controller.core.config import JournalSection
from simulators.esp32_node.control import request as sim_request
from tests.bench.report import median, metric, percentile, write_report
from tests.support.procs import free_port, start_node_sim, write_station_config
from tests.support.tmpfs import tmpfs
from tests.test_disk_full import BAYS, JOURNAL_SECTION, Station

pytestmark = pytest.mark.bench
CYCLES = 15


def test_bench_unblock_after_space_returns(tmp_path: Path) -> None:
    sim_dir = tmp_path / "sim"
    sim = start_node_sim(sim_dir, BAYS)
    try:
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
            proc = st.start()
            try:
                code, _ = st.start_session("bay1", "CARD-1")  # one session charges throughout
                assert code == 200
                rng = random.Random(11)
                accept_s: list[float] = []
                healthy_s: list[float] = []
                for n in range(CYCLES):
                    fs.fill()
                    code, body = st.start_session("bay2", f"CARD-{n}")
                    assert code == 409, body
                    assert st.health()[0] == 503
                    time.sleep(rng.uniform(0.0, 6.0))  # full for a while: retries fail
                    assert st.health()[0] == 503
                    fs.free()
                    t0 = time.monotonic()
                    accept_s.append(st.wait_accepting(30.0))
                    while st.health()[0] != 200:
                        time.sleep(0.05)  # polled over HTTP like a supervisor would
                    healthy_s.append(time.monotonic() - t0)
                assert st.relay_on("bay1")  # charging never stopped
                assert proc.log.count("station.core_failed") == 0
            finally:
                proc.kill()
    finally:
        sim.kill()
    retry_s = JournalSection().retry_s
    write_report(
        "disk_full_unblock",
        {
            "accepting_median_s": metric(median(accept_s), "s", target=30.0),
            "accepting_p99_s": metric(percentile(accept_s, 99), "s", target=30.0),
            "accepting_max_s": metric(max(accept_s), "s", target=30.0),
            "healthz_200_median_s": metric(median(healthy_s), "s"),
            "accepting_median_over_retry_interval": metric(median(accept_s) / retry_s, "x"),
        },
        notes={
            "cycles": CYCLES,
            "retry_s": retry_s,
            "check_s": JournalSection().check_s,
            "disk": "16 MB tmpfs in a private mount namespace",
            "full_for_s": "uniform 0-6 s per cycle (seed 11)",
            "samples_s": [round(v, 3) for v in accept_s],
        },
    )
