"""Slow clients and big bodies against the real ``edge-station run`` process.

A bounded slowloris (1,500 idle and half-sent requests for 10 s from 50
loopback hosts) while two sessions charge through the node simulator: the
kiosk keeps answering within a second, the nodes' setpoint leases keep being
renewed (no node falls to its safe share), the station stays up. A 200 MB
chunked upload without login is cut at the body limit and the controller's
memory stays flat.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.attacks import (
    ATTACK_S,
    RssPeak,
    chunked_upload,
    poll_kiosk,
    poll_kiosk_under_slowloris,
)
from tests.support.charging import SYSTEMD_DEFAULT_NOFILE, charging_station, unit_limit_nofile


def test_slowloris_leaves_kiosk_and_leases_alone(tmp_path: Path) -> None:
    nofile = unit_limit_nofile() or SYSTEMD_DEFAULT_NOFILE
    with charging_station(tmp_path, bays=2, nofile=nofile) as st:
        url = f"{st.base}/api/v1/kiosk/state"
        calm, calm_failed = poll_kiosk(url, time.monotonic() + 3.0)
        assert calm and not calm_failed
        # What the nodes said before the attack (a node that booted before the controller
        # reports the host silent once, at start-up): only what comes after counts here.
        before = {bay: len(n["events"]) for bay, n in st.nodes().items()}

        lat, failed, stats = poll_kiosk_under_slowloris(st.port, url)

        assert st.ctl.popen.poll() is None, st.ctl.log.raw[-30:]
        assert stats["max_open"] >= 200, stats  # the attack really held connections
        assert failed == 0, f"{failed} kiosk reads failed during the attack; {stats}"
        assert len(lat) >= ATTACK_S * 3, len(lat)
        assert max(lat) < 1.0, f"slowest kiosk read {max(lat):.3f} s; {stats}"
        # The station refused what it could not hold, and said so.
        assert stats["closed_by_server"] > 0, stats
        assert st.ctl.log.count("ui.connections_refused") >= 1
        assert not any("Too many open files" in r for r in st.ctl.log.raw)

        nodes = st.nodes()
        for bay in ("bay1", "bay2"):
            n = nodes[bay]
            during = n["events"][before[bay] :]
            assert "lease_expired" not in during and "host_silent" not in during, n
            assert n["relay_on"] and n["setpoint_a"] > n["safe_current_a"], n
            assert n["lease_remaining_s"] > 0, n
        assert set(st.statuses().values()) == {"Charging"}


def test_unit_file_limit_covers_the_connection_caps() -> None:
    from local_ui.connections import DEFAULT_LIMITS

    nofile = unit_limit_nofile()
    assert nofile is not None, "systemd/edge-station.service sets no LimitNOFILE="
    # Serial ports, MQTT, Modbus, OCPP, SQLite (journal + WAL + shm, two connections),
    # the camera, logging, pipes and the interpreter's own files: well under 200.
    assert nofile >= DEFAULT_LIMITS.fd_budget() + 200, (nofile, DEFAULT_LIMITS.fd_budget())


@pytest.mark.parametrize("path", ["/api/v1/auth/login", "/api/v1/kiosk/bays/bay1/token"])
def test_chunked_body_is_cut_at_the_limit_and_memory_stays_flat(tmp_path: Path, path: str) -> None:
    with charging_station(tmp_path, bays=1, nofile=SYSTEMD_DEFAULT_NOFILE, charge=False) as st:
        st.kiosk_state()
        with RssPeak(st.ctl.pid) as rss:
            sent, reply = chunked_upload(st.port, path, 200 * 2**20)
        before, peak = rss.before, rss.peak
        assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
        body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        assert body["error"] == "too_large"
        assert body["message"].endswith(".") and "64 KiB" in body["message"], body
        assert sent < 64 * 2**20, f"the server read {sent / 2**20:.0f} MiB before hanging up"
        grew = (peak - before) / 2**20
        assert grew < 24, f"RSS grew by {grew:.1f} MiB during a 200 MB chunked upload"
        assert st.ctl.popen.poll() is None
        line = st.ctl.log.wait_for(lambda ln: ln.get("event") == "ui.body_too_large", 5)
        assert line["path"] == path and line["bytes_seen"] > 64 * 1024
        st.kiosk_state()  # still answering
