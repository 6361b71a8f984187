"""/healthz and /metrics against a real Station and Journal (no login)."""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.core.bay import StopReason
from controller.core.journal import Commit, Journal
from controller.core.station import Station
from controller.ops.health import health
from controller.ops.looplag import LoopLagMonitor
from controller.ops.metrics import Samples, collector_for
from controller.ports import Freshness, MeterReading
from tests.test_api_rig import Rig, api_client, make_cfg, running_station


def parse_strict(text: str) -> tuple[Samples, dict[str, str]]:
    """Parse with prometheus_client's parser, then check what that lax parser lets pass.

    A sample outside its family comes back as an untyped family of its own, a family
    written twice as two families of one name; neither may happen, nor a repeated
    sample, a missing help text or a NaN.
    """
    assert text.endswith("\n") and "\n\n" not in text
    samples: Samples = {}
    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        assert fam.type in ("counter", "gauge"), fam
        assert fam.name not in types, f"family {fam.name} written twice"
        assert fam.documentation, fam.name
        types[fam.name] = fam.type
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            assert not math.isnan(s.value), key
            samples[key] = s.value
    return samples, types


def val(s: Samples, name: str, **labels: str) -> float:
    return s[(name, frozenset(labels.items()))]


async def scrape(client: httpx.AsyncClient) -> Samples:
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse_strict(r.text)[0]


@dataclass
class FakeUpstream:
    online: bool


async def _charging(rig: Rig) -> str:
    out = await rig.station.commands.present_token("bay1", "1234")
    assert out.ok and out.session_id
    rig.hub.plug("bay1")

    def energy() -> int:
        sess = rig.station.bays["bay1"].state.session
        return sess.energy_wh if sess else 0

    await rig.until(lambda: rig.status("bay1") == "Charging" and energy() > 0)
    return out.session_id


async def test_metrics_against_a_running_station(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        st = rig.station
        mon = LoopLagMonitor(window=10, clock=lambda: 1000.0)  # frozen: not running here
        st.loop_lag = mon  # type: ignore[attr-defined]
        mon.record(0.004, mon.now())
        mon.record(0.012, mon.now())
        link = rig.hub.nodes["bay1"].link
        link.bad_frames, link.timeouts, link.retries, link.reconnects = 3, 2, 5, 1
        link.extra["seq_gaps"] = 4
        weird = 'grid "main" \\ L1\nL2'
        st.meters.on_reading(
            MeterReading(weird, time.monotonic() - 2.5, Freshness.STALE, None, "timeout"),
            role="grid",
        )
        client = await api_client(st)  # no login anywhere below

        s = await scrape(client)
        assert val(s, "edge_station_bays", status="Available") == 2
        assert all(
            v == 0
            for (n, labels), v in s.items()
            if n == "edge_station_bays" and dict(labels)["status"] != "Available"
        )
        assert val(s, "edge_station_sessions_open") == 0
        assert val(s, "edge_station_sessions_closed_total") == 0
        assert val(s, "edge_station_energy_delivered_wh_total") == 0
        assert val(s, "edge_station_node_bad_frames_total", bay="bay1") == 3
        assert val(s, "edge_station_node_timeouts_total", bay="bay1") == 2
        assert val(s, "edge_station_node_retries_total", bay="bay1") == 5
        assert val(s, "edge_station_node_reconnects_total", bay="bay1") == 1
        assert val(s, "edge_station_node_bad_frames_total", bay="locker1") == 0
        assert val(s, "edge_station_node_link_events_total", bay="bay1", kind="seq_gaps") == 4
        assert val(s, "edge_station_node_frames_received_total", bay="bay1") > 0
        assert val(s, "edge_station_node_online", bay="locker1") == 1
        age = val(s, "edge_station_meter_reading_age_seconds", meter=weird, role="grid")
        assert 2.5 <= age < 30
        assert (
            val(s, "edge_station_meter_freshness", meter=weird, role="grid", freshness="stale") == 1
        )
        assert (
            val(s, "edge_station_meter_freshness", meter=weird, role="grid", freshness="fresh") == 0
        )
        assert val(s, "edge_station_loop_lag_seconds") == pytest.approx(0.012)
        assert val(s, "edge_station_loop_lag_max_seconds") == pytest.approx(0.012)
        assert val(s, "edge_station_safe_mode", cause="emergency_stop") == 0
        assert val(s, "edge_station_safe_mode", cause="grid_meter") == 0
        assert val(s, "edge_station_healthy") == 1
        assert val(s, "edge_station_uptime_seconds") > 0
        assert val(s, "edge_station_journal_writable") == 1
        assert val(s, "edge_station_journal_size_bytes") > 0
        assert val(s, "process_resident_memory_bytes") > 0
        assert not any(n == "edge_station_ocpp_connected" for n, _ in s)  # no upstream configured

        sid = await _charging(rig)
        s = await scrape(client)
        assert val(s, "edge_station_bays", status="Charging") == 1
        assert val(s, "edge_station_bays", status="Available") == 1
        assert val(s, "edge_station_sessions_open") == 1
        energies = [val(s, "edge_station_energy_delivered_wh_total")]
        assert (
            val(s, "edge_station_outbox_messages", state="pending")
            == await rig.journal.outbox_depth()
        )
        assert val(s, "edge_station_outbox_messages", state="pending") >= 1  # StartTransaction

        # The energy counter never steps back across the close of the session, even when a
        # scrape lands after the journal has closed it and before the bay shows it (and the
        # cache is refreshed right then).
        col = collector_for(st)
        col.ttl_s = 0.0
        real_commit = st.journal.commit

        async def commit_then_scrape(c: Commit) -> None:
            await real_commit(c)
            if any(u.get("state") == "closed" for u in c.session_update):
                assert st.bays["bay1"].state.session is not None  # not yet applied to the bay
                energies.append(val(await scrape(client), "edge_station_energy_delivered_wh_total"))

        st.journal.commit = commit_then_scrape  # type: ignore[method-assign]
        assert (await st.commands.stop_session(sid, StopReason.LOCAL)).ok
        st.journal.commit = real_commit  # type: ignore[method-assign]
        assert len(energies) == 2
        s = await scrape(client)
        energies.append(val(s, "edge_station_energy_delivered_wh_total"))
        assert energies == sorted(energies), energies
        row = await rig.journal.session(sid)
        assert row is not None and row["energy_wh"] > 0
        assert val(s, "edge_station_energy_delivered_wh_total") == row["energy_wh"]
        assert val(s, "edge_station_sessions_closed_total") == 1
        assert val(s, "edge_station_sessions_open") == 0

        st.upstream = FakeUpstream(online=True)  # type: ignore[assignment]
        await st.safety.emergency_stop(True)
        s = await scrape(client)
        assert val(s, "edge_station_ocpp_connected") == 1
        assert val(s, "edge_station_safe_mode", cause="emergency_stop") == 1
        assert val(s, "edge_station_emergency_stop_pressed") == 1
        assert val(s, "edge_station_accepting_sessions") == 0
        assert val(s, "edge_station_healthy") == 0
        assert val(s, "edge_station_bays", status="Faulted") == 2


async def test_journal_figures_are_cached(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        col = collector_for(rig.station)
        for _ in range(5):
            await col.render()
        assert col.queries == 1  # nothing changed: one query for five scrapes
        await _charging(rig)
        await col.render()
        assert col.queries == 2  # a session opened: refreshed at once
        await col.render()
        assert col.queries == 2
        col.ttl_s = 0.0
        await col.render()
        assert col.queries == 3


async def test_healthz_ok_and_each_reason(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        st = rig.station
        client = await api_client(st)
        r = await client.get("/healthz")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ok" and body["reasons"] == [] and body["loop_lag"] is None
        assert body["nodes"] == {"online": 2, "total": 2} and body["station"] == "ui-test"

        mon = LoopLagMonitor(window=3)
        st.loop_lag = mon  # type: ignore[attr-defined]
        mon.record(0.9, mon.now())
        r = await client.get("/healthz")
        assert r.status_code == 503 and [x["code"] for x in r.json()["reasons"]] == ["loop_lag"]
        for _ in range(3):
            mon.record(0.001, mon.now())
        assert (await client.get("/healthz")).status_code == 200

        st.journal.writable = False  # as the journal marks itself after a failed write
        r = await client.get("/healthz")
        assert r.status_code == 503 and r.json()["reasons"][0]["code"] == "journal"
        assert r.json()["journal"] == {"writable": False}
        st.journal.writable = True

        await st.safety.emergency_stop(True)
        r = await client.get("/healthz")
        assert r.status_code == 503
        assert "emergency_stop" in [x["code"] for x in r.json()["reasons"]]
        await st.safety.emergency_stop(False)
        assert (await client.get("/healthz")).status_code == 503  # latched until cleared
        assert (await st.safety.clear_emergency_stop(actor="owner")).ok

        st.meters.on_reading(
            MeterReading("grid", time.monotonic(), Freshness.FAILED, None, "no answer"), role="grid"
        )
        r = await client.get("/healthz")
        assert r.status_code == 200  # a failed meter degrades; the station stays safe
        assert [w["code"] for w in r.json()["warnings"]] == ["meter"]


async def test_healthz_not_started_and_all_nodes_offline(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    journal = await Journal.open(tmp_path / "journal.sqlite3", synchronous="NORMAL")
    station = Station(cfg, journal, hubs={})  # no node will ever answer
    try:
        await station.restore()
        assert [p.code for p in health(station).reasons] == ["not_started", "all_nodes_offline"]
        started = asyncio.Event()
        run = asyncio.create_task(station.run(on_ready=started.set))
        await started.wait()
        client = await api_client(station)
        r = await client.get("/healthz")
        assert r.status_code == 503
        assert [x["code"] for x in r.json()["reasons"]] == ["all_nodes_offline"]
        station.request_stop("test")
        await asyncio.wait_for(run, 5)
    finally:
        await journal.close()


async def test_metrics_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_STATION_METRICS_TOKEN", "s3cret")
    async with running_station(tmp_path) as rig:
        client = await api_client(rig.station)
        assert (await client.get("/metrics")).status_code == 401
        r = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        r = await client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and "edge_station_bays" in r.text
        assert (await client.get("/healthz")).status_code == 200  # always open
        assert "/metrics" not in (await client.get("/api/v1/openapi.json")).text


# What dashboards and alert rules know: each family's exposed name (its ``# TYPE`` line), its
# type and the label names of its samples. A change here breaks someone's dashboard.
EXPOSED: dict[str, tuple[str, set[tuple[str, ...]]]] = {
    "edge_station_info": ("gauge", {("name", "station", "version")}),
    "edge_station_healthy": ("gauge", {()}),
    "edge_station_uptime_seconds": ("gauge", {()}),
    "edge_station_journal_writable": ("gauge", {()}),
    "edge_station_journal_size_bytes": ("gauge", {()}),
    "edge_station_bays": ("gauge", {("status",)}),
    "edge_station_sessions_open": ("gauge", {()}),
    "edge_station_sessions_closed_total": ("counter", {()}),
    "edge_station_energy_delivered_wh_total": ("counter", {()}),
    "edge_station_outbox_messages": ("gauge", {("state",)}),
    "edge_station_journal_figures_age_seconds": ("gauge", {()}),
    "edge_station_journal_query_errors_total": ("counter", {()}),
    "edge_station_journal_disk_free_bytes": ("gauge", {()}),
    "edge_station_journal_disk_total_bytes": ("gauge", {()}),
    "edge_station_journal_disk_low": ("gauge", {()}),
    "edge_station_journal_disk_low_threshold_bytes": ("gauge", {()}),
    "edge_station_journal_unwritten_transitions": ("gauge", {()}),
    "edge_station_journal_reserve_released": ("gauge", {()}),
    "edge_station_meter_samples_skipped_total": ("counter", {()}),
    "edge_station_service_up": ("gauge", {("core", "service")}),
    "edge_station_service_restarts_total": ("counter", set()),  # no optional service here
    "edge_station_meter_reading_age_seconds": ("gauge", {("meter", "role")}),
    "edge_station_meter_freshness": ("gauge", {("freshness", "meter", "role")}),
    "edge_station_meter_implausible_readings_total": ("counter", {("meter", "role")}),
    "edge_station_meter_implausible_values_total": ("counter", {("meter", "quantity")}),
    "edge_station_node_online": ("gauge", {("bay",)}),
    "edge_station_node_output_errors": ("gauge", {("bay",)}),
    "edge_station_node_frames_received_total": ("counter", {("bay",)}),
    "edge_station_node_frames_sent_total": ("counter", {("bay",)}),
    "edge_station_node_bad_frames_total": ("counter", {("bay",)}),
    "edge_station_node_timeouts_total": ("counter", {("bay",)}),
    "edge_station_node_retries_total": ("counter", {("bay",)}),
    "edge_station_node_reconnects_total": ("counter", {("bay",)}),
    "edge_station_node_link_events_total": ("counter", {("bay", "kind")}),
    "edge_station_node_rejected_readings_total": ("counter", {("bay", "verdict")}),
    "edge_station_node_last_rx_age_seconds": ("gauge", {("bay",)}),
    "edge_station_loop_lag_seconds": ("gauge", {()}),
    "edge_station_loop_lag_max_seconds": ("gauge", {()}),
    "edge_station_loop_lag_p99_seconds": ("gauge", {()}),
    "edge_station_loop_lag_window_seconds": ("gauge", {()}),
    "edge_station_safe_mode": ("gauge", {("cause",)}),
    "edge_station_accepting_sessions": ("gauge", {()}),
    "edge_station_emergency_stop_pressed": ("gauge", {()}),
    "edge_station_ocpp_connected": ("gauge", {()}),
    "edge_station_node_updates_dropped_total": ("counter", {()}),
    "process_cpu_seconds_total": ("counter", {()}),
    "process_resident_memory_bytes": ("gauge", {()}),
    "process_start_time_seconds": ("gauge", {()}),
    "process_open_fds": ("gauge", {()}),
}


async def test_exposed_names_types_and_labels_stay_what_dashboards_know(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        st = rig.station
        mon = LoopLagMonitor(window=10)
        st.loop_lag = mon  # type: ignore[attr-defined]
        mon.record(0.004, mon.now())
        rig.hub.nodes["bay1"].link.extra["seq_gaps"] = 4
        st.meters.on_reading(
            MeterReading("grid", time.monotonic(), Freshness.FRESH, None, ""), role="grid"
        )
        st.meters.gate.implausible_values[("grid", "current_l1")] += 1
        st.upstream = FakeUpstream(online=True)  # type: ignore[assignment]
        r = await (await api_client(st)).get("/metrics")
        assert r.status_code == 200, r.text
        declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", r.text, re.MULTILINE))
        labels: dict[str, set[tuple[str, ...]]] = {}
        for fam in text_string_to_metric_families(r.text):
            exposed = fam.name + "_total" if fam.type == "counter" else fam.name
            labels[exposed] = {tuple(sorted(s.labels)) for s in fam.samples}
        got = {name: (declared[name], labels.get(name, set())) for name in declared}
        assert {n: got.get(n) for n in EXPOSED} == EXPOSED
        # The client library's process collector adds two standard figures; nothing else is new.
        assert set(got) - set(EXPOSED) <= {"process_virtual_memory_bytes", "process_max_fds"}
