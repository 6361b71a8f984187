"""Kiosk latency under a slowloris, and the controller's memory during a 200 MB chunked upload.

The controller runs as ``edge-station run`` with the unit's ``LimitNOFILE``
and two sessions charging through the node simulator (another process). The
kiosk state is read every 100 ms on a fresh connection: first for
``BENCH_CALM_S`` (10 s) with nobody else around, then while 1,500 idle and
half-sent connections from 50 loopback hosts hammer the server for 10 s.
Then a 200 MB chunked body is sent without login; the controller's RSS is
sampled every 20 ms.
Run: ``./dev.sh bench tests/bench/bench_http_attacks.py``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.bench.report import median, metric, percentile, write_report
from tests.support.attacks import (
    ATTACK_SOCKETS,
    RssPeak,
    chunked_upload,
    poll_kiosk,
    poll_kiosk_under_slowloris,
)
from tests.support.charging import SYSTEMD_DEFAULT_NOFILE, charging_station, unit_limit_nofile

pytestmark = pytest.mark.bench


def test_bench_http_attacks(tmp_path: Path) -> None:
    calm_s = float(os.environ.get("BENCH_CALM_S", "10"))
    nofile = unit_limit_nofile() or SYSTEMD_DEFAULT_NOFILE
    with charging_station(tmp_path, bays=2, nofile=nofile) as st:
        url = f"{st.base}/api/v1/kiosk/state"
        calm, calm_failed = poll_kiosk(url, time.monotonic() + calm_s)
        attacked, failed, stats = poll_kiosk_under_slowloris(st.port, url)
        nodes = st.nodes()
        lease_lost = sum(
            ("lease_expired" in n["events"]) + ("host_silent" in n["events"])
            for n in nodes.values()
        )
        with RssPeak(st.ctl.pid) as rss:
            sent, reply = chunked_upload(st.port, "/api/v1/auth/login", 200 * 2**20)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        alive = st.ctl.popen.poll() is None

    ms = [x * 1000 for x in calm]
    ams = [x * 1000 for x in attacked]
    write_report(
        "http_attacks",
        {
            "kiosk_calm_p50_ms": metric(median(ms), "ms"),
            "kiosk_calm_p99_ms": metric(percentile(ms, 99), "ms"),
            "kiosk_slowloris_p50_ms": metric(median(ams), "ms"),
            "kiosk_slowloris_p99_ms": metric(percentile(ams, 99), "ms", target=1000),
            "kiosk_slowloris_max_ms": metric(max(ams), "ms", target=1000),
            "kiosk_p50_ratio": metric(median(ams) / median(ms), "x"),
            "kiosk_p99_ratio": metric(percentile(ams, 99) / percentile(ms, 99), "x"),
            "kiosk_failed_reads": metric(calm_failed + failed, "", target=0),
            "lease_expiries": metric(lease_lost, "", target=0),
            "upload_rss_before_mib": metric(rss.before / 2**20, "MiB"),
            "upload_rss_peak_mib": metric(rss.peak / 2**20, "MiB"),
            "upload_rss_growth_mib": metric((rss.peak - rss.before) / 2**20, "MiB", target=24),
            "upload_bytes_sent_mib": metric(sent / 2**20, "MiB"),
        },
        notes={
            "limit_nofile": nofile,
            "attack_sockets": ATTACK_SOCKETS,
            "attacker": stats,
            "kiosk_reads": {"calm": len(calm), "slowloris": len(attacked)},
            "controller_alive": alive,
        },
    )
    assert alive and failed == 0 and lease_lost == 0
