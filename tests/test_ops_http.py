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

from controller.core.bay import StopReason
from controller.core.journal import Commit, Journal
from controller.core.station import Station
from controller.ops.health import health
from controller.ops.looplag import LoopLagMonitor
from controller.ops.metrics import Exposition, collector_for, escape_label, format_value
from controller.ports import Freshness, MeterReading
from tests.test_api_rig import Rig, api_client, make_cfg, running_station

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"')

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_strict(text: str) -> tuple[Samples, dict[str, str]]:
    """Parse the text format 0.0.4 line by line, failing on anything out of place."""
    assert text.endswith("\n")
    samples: Samples = {}
    types: dict[str, str] = {}
    helps: set[str] = set()
    current = ""
    for line in text.splitlines():
        assert line, "no blank lines"
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert NAME.fullmatch(name) and name not in helps, line
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helps and name not in types, line
            assert kind in ("counter", "gauge"), line
            types[name] = kind
            current = name
            continue
        assert not line.startswith("#"), line
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)", line)
        assert m, f"bad sample line {line!r}"
        name, body, value = m.group(1), m.group(3), m.group(4)
        assert name == current, f"{name} outside its family ({current})"
        if types[name] == "counter":
            assert name.endswith("_total"), name
        labels: list[tuple[str, str]] = []
        if body:
            pos = 0
            while pos < len(body):
                lm = LABEL.match(body, pos)
                assert lm, f"bad labels in {line!r}"
                raw = lm.group(2)
                labels.append(
                    (lm.group(1), re.sub(r"\\(.)", lambda x: "\n" if x[1] == "n" else x[1], raw))
                )
                pos = lm.end()
                if pos < len(body):
                    assert body[pos] == ",", line
                    pos += 1
        key = (name, frozenset(labels))
        assert key not in samples, f"duplicate sample {line!r}"
        v = float(value)
        assert not math.isnan(v), line
        samples[key] = v
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
        mon = LoopLagMonitor(window=10)
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


def test_exposition_escaping_and_values() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert [format_value(v) for v in (True, False, 3, 0.5, float("inf"), float("-inf"))] == [
        "1",
        "0",
        "3",
        "0.5",
        "+Inf",
        "-Inf",
    ]
    assert format_value(float("nan")) == "NaN"
    e = Exposition()
    e.family("x_total", "counter", "A help text with \\ and\nnewline.")
    e.sample(1, {"v": 'a"b\\c\nd'})
    text = e.text()
    assert text == (
        "# HELP x_total A help text with \\\\ and\\nnewline.\n"
        "# TYPE x_total counter\n"
        'x_total{v="a\\"b\\\\c\\nd"} 1\n'
    )
    s, _ = parse_strict(text)
    assert val(s, "x_total", v='a"b\\c\nd') == 1
    with pytest.raises(ValueError):
        e.family("x_total", "counter", "twice")
    with pytest.raises(ValueError):
        e.family("bad-name", "gauge", "")
    with pytest.raises(ValueError):
        e.sample(1, {"bad-label": "x"})
