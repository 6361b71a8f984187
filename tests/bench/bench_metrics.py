"""Benchmark: one ``/metrics`` scrape of a station with 64 bays, prometheus_client against hand-written.

The station runs for real (journal, 64 self-driving nodes at 1 Hz telemetry, 32
sessions charging, a grid meter, the loop-lag monitor). Each round renders the
scrape once with the collector the station uses (``prometheus_client``: metric
families and ``generate_latest``) and once with the hand-written exposition it
replaced, kept below only for this comparison; the order alternates between
rounds. Both read the same cached journal figures (the cache is kept for the
whole run: the journal query is the same for both and not what is compared).
Reported: median and p99 of each, and their ratios. The project keeps the
library unless it costs more than 3x the hand-written text and more than 5 ms a
scrape at 64 bays.
Run: ``./dev.sh bench tests/bench/bench_metrics.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import re
import time
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import psutil
import pytest

from controller.core.auth import Authorizer, local_list_step
from controller.core.bay import Status, ocpp_status
from controller.core.journal import Journal
from controller.core.safety import CAUSES
from controller.core.station import Station
from controller.ops.health import health, upstream_online
from controller.ops.looplag import LoopLagMonitor, monitor_of
from controller.ops.metrics import MetricsCollector, collector_for, read_samples
from controller.ports import Freshness, MeterReading
from tests.bench.report import median, metric, percentile, write_report
from tests.support.fake_nodes import FakeHub, FakeNode
from tests.test_api_rig import make_cfg

pytestmark = pytest.mark.bench
BAYS = 64
CHARGING = 32
ROUNDS = 400
WARMUP = 30
MAX_RATIO = 3.0
MAX_MS = 5.0


@contextlib.asynccontextmanager
async def station_of_64(tmp: Path) -> AsyncIterator[Station]:
    bays = [
        {"id": f"bay{i}", "connector": i, "kind": "evse", "bus": "bus1", "address": i}
        for i in range(1, BAYS + 1)
    ]
    cfg = make_cfg(tmp, bays=bays)
    journal = await Journal.open(tmp / "journal.sqlite3", synchronous="NORMAL")
    hub = FakeHub([FakeNode(b.node_id, b.kind, b.phases) for b in cfg.bays], period_s=1.0)
    tokens = frozenset(f"T{i}" for i in range(1, BAYS + 1))
    st = Station(cfg, journal, hubs={"bus1": hub}, authorizer=Authorizer([local_list_step(tokens)]))
    await st.restore()
    task = asyncio.create_task(st.run())
    try:
        async with st.events.subscription(lossy=True) as q, asyncio.timeout(30):
            while not all(rt.state.node_online for rt in st.bays.values()):
                await q.get()
            for i in range(1, CHARGING + 1):
                assert (await st.commands.present_token(f"bay{i}", f"T{i}")).ok
                hub.plug(f"bay{i}")
            while sum(ocpp_status(rt.state) is Status.CHARGING for rt in st.bays.values()) < (
                CHARGING
            ):
                await q.get()
        yield st
    finally:
        st.request_stop("bench")
        await asyncio.wait_for(task, 30)
        await journal.close()


async def test_bench_metrics_scrape_64_bays(tmp_path: Path) -> None:
    async with station_of_64(tmp_path) as st:
        mon = LoopLagMonitor(window=60)
        st.loop_lag = mon  # type: ignore[attr-defined]
        mon.record(0.002, mon.now())
        st.meters.on_reading(
            MeterReading("grid", time.monotonic(), Freshness.FRESH, None, ""), role="grid"
        )
        col = collector_for(st)
        col.ttl_s = math.inf
        old = HandWritten(col)
        new_text = await col.render()
        old_text = await old.render()
        # The same figures under the same names and labels (the library adds two process_*).
        new_keys, old_keys = set(read_samples(new_text)), set(read_samples(old_text))
        assert old_keys <= new_keys, old_keys - new_keys
        assert {n for n, _ in new_keys - old_keys} == {
            "process_virtual_memory_bytes",
            "process_max_fds",
        }
        assert len(new_keys) > 12 * BAYS  # per bay: online, errors, 6 link counters, ...

        async def old_bytes() -> bytes:  # the route encoded the old text to send it
            return (await old.render()).encode()

        times: dict[str, list[float]] = {"new": [], "old": []}
        gc.collect()
        for i in range(WARMUP + ROUNDS):
            order = ("new", "old") if i % 2 == 0 else ("old", "new")
            for which in order:
                render = col.render if which == "new" else old_bytes
                t0 = time.perf_counter()
                await render()
                dt = time.perf_counter() - t0
                if i >= WARMUP:
                    times[which].append(dt * 1000)
            await asyncio.sleep(0)  # the station's own tasks run between rounds, as in life
        assert col.queries == 1  # every scrape used the one cached journal snapshot

    med = {k: median(v) for k, v in times.items()}
    p99 = {k: percentile(v, 99) for k, v in times.items()}
    ratio = med["new"] / med["old"]
    write_report(
        "metrics_scrape_64_bays",
        {
            "scrape_median_ms": metric(med["new"], "ms", target=MAX_MS),
            "scrape_p99_ms": metric(p99["new"], "ms"),
            "handwritten_median_ms": metric(med["old"], "ms"),
            "handwritten_p99_ms": metric(p99["old"], "ms"),
            "ratio_median": metric(ratio, "x", target=MAX_RATIO),
            "ratio_p99": metric(p99["new"] / p99["old"], "x"),
        },
        {
            "bays": BAYS,
            "charging": CHARGING,
            "rounds": ROUNDS,
            "samples": len(new_keys),
            "bytes": {"prometheus_client": len(new_text), "hand-written": len(old_text)},
        },
    )
    assert not (ratio > MAX_RATIO and med["new"] > MAX_MS), (ratio, med)


# --------------------------------------------------------------------------- the replaced code
# The hand-written text exposition /metrics used before prometheus_client, verbatim, kept only
# as this benchmark's baseline (process figures from psutil).

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(v: float | bool) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


class Exposition:
    """Builds the text format: each family's HELP and TYPE, then its samples, once."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._families: set[str] = set()
        self._current = ""

    def family(self, name: str, kind: str, help_text: str) -> None:
        if not _NAME.match(name) or name in self._families:
            raise ValueError(f"bad or repeated metric family {name!r}")
        if kind not in ("counter", "gauge", "untyped"):
            raise ValueError(kind)
        self._families.add(name)
        self._current = name
        self._lines += [f"# HELP {name} {escape_help(help_text)}", f"# TYPE {name} {kind}"]

    def sample(self, value: float | bool, labels: dict[str, str] | None = None) -> None:
        if not self._current:
            raise ValueError("a sample before its family")
        text = ""
        if labels:
            for k in labels:
                if not _LABEL.match(k) or k.startswith("__"):
                    raise ValueError(f"bad label name {k!r}")
            text = "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items()) + "}"
        self._lines.append(f"{self._current}{text} {format_value(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float | bool) -> None:
        self.family(name, kind, help_text)
        self.sample(value)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


class HandWritten:
    def __init__(self, col: MetricsCollector) -> None:
        self.col = col
        self.station = col.station
        self._proc = psutil.Process()

    async def render(self) -> str:
        st = self.station
        fig, live = await self.col.journal_figures()
        # Nothing below awaits: the rest is one consistent look at the station.
        e = Exposition()
        now_m = st.clock.monotonic()
        e.family("edge_station_info", "gauge", "Station identity and software version.")
        e.sample(
            1, {"station": st.cfg.station.id, "name": st.cfg.station.name, "version": _version()}
        )
        h = health(st)
        e.one("edge_station_healthy", "gauge", "1 when /healthz answers 200.", h.ok)
        e.one(
            "edge_station_uptime_seconds",
            "gauge",
            "Seconds since the station started.",
            round(now_m - st.started_at, 3),
        )
        e.one(
            "edge_station_journal_writable",
            "gauge",
            "1 while the journal accepts writes.",
            st.journal.writable,
        )
        e.one(
            "edge_station_journal_size_bytes",
            "gauge",
            "Size of the journal file and its write-ahead log.",
            _journal_size(st.journal.path),
        )

        e.family("edge_station_bays", "gauge", "Bays by OCPP status.")
        counts = dict.fromkeys(Status, 0)
        for rt in st.bays.values():
            counts[ocpp_status(rt.state)] += 1
        for status, n in counts.items():
            e.sample(n, {"status": status.value})

        e.one("edge_station_sessions_open", "gauge", "Sessions running now.", len(live))
        if fig is not None:
            e.one(
                "edge_station_sessions_closed_total",
                "counter",
                "Sessions closed since the journal was created.",
                fig.closed_sessions,
            )
            e.one(
                "edge_station_energy_delivered_wh_total",
                "counter",
                "Energy delivered (Wh): closed sessions plus running ones.",
                round(self.col.energy_wh(fig, live), 3),
            )
            e.family(
                "edge_station_outbox_messages",
                "gauge",
                "Messages for the central system not delivered, by state.",
            )
            e.sample(fig.outbox_pending, {"state": "pending"})
            e.sample(fig.outbox_failed, {"state": "failed"})
            e.one(
                "edge_station_journal_figures_age_seconds",
                "gauge",
                "Age of the cached journal figures.",
                round(time.monotonic() - fig.fetched_at, 3),
            )
        e.one(
            "edge_station_journal_query_errors_total",
            "counter",
            "Failed journal queries for /metrics.",
            self.col.query_errors,
        )

        self._storage(e)
        self._services(e)
        self._meters(e, now_m)
        self._nodes(e, now_m)
        self._loop(e)

        e.family("edge_station_safe_mode", "gauge", "1 while a safe-mode cause is active.")
        for cause in sorted(set(CAUSES) | set(st.safety.causes)):
            e.sample(cause in st.safety.causes, {"cause": cause})
        e.one(
            "edge_station_accepting_sessions",
            "gauge",
            "1 when new sessions may start.",
            not st.safety.blockers,
        )
        e.one(
            "edge_station_emergency_stop_pressed",
            "gauge",
            "1 while the e-stop input is pressed.",
            st.safety.stop_input_pressed,
        )
        cloud = upstream_online(st)
        if cloud is not None:
            e.one(
                "edge_station_ocpp_connected",
                "gauge",
                "1 while the central system is connected.",
                cloud,
            )
        e.one(
            "edge_station_node_updates_dropped_total",
            "counter",
            "Node updates dropped because the station's queue was full.",
            st.nodes.dropped,
        )
        self._process(e)
        return e.text()

    def _storage(self, e: Exposition) -> None:
        st = self.station
        g = st.guard
        if g.space is not None:
            e.one(
                "edge_station_journal_disk_free_bytes",
                "gauge",
                "Free space on the journal's file system.",
                g.space.free_bytes,
            )
            e.one(
                "edge_station_journal_disk_total_bytes",
                "gauge",
                "Size of the journal's file system.",
                g.space.total_bytes,
            )
        e.one(
            "edge_station_journal_disk_low",
            "gauge",
            "1 while free space is below the [journal] low_space_mb warning threshold.",
            g.low,
        )
        e.one(
            "edge_station_journal_disk_low_threshold_bytes",
            "gauge",
            "The low-space warning threshold.",
            int(g.cfg.low_space_mb * 1024 * 1024),
        )
        e.one(
            "edge_station_journal_unwritten_transitions",
            "gauge",
            "Transitions that happened (stops, faults) and wait for the journal to write them.",
            len(st.backlog),
        )
        e.one(
            "edge_station_journal_reserve_released",
            "gauge",
            "1 after the emergency reserve was spent on a full disk, until it is made again.",
            g.reserve_released,
        )
        e.one(
            "edge_station_meter_samples_skipped_total",
            "counter",
            "Meter samples not written because the journal could not write or space was short.",
            st.samples.skipped,
        )

    def _services(self, e: Exposition) -> None:
        states = sorted(self.station.supervisor.states.values(), key=lambda s: s.name)
        e.family(
            "edge_station_service_up",
            "gauge",
            "1 while the service runs (0 while an optional one waits to be restarted).",
        )
        for s in states:
            e.sample(s.state == "running", {"service": s.name, "core": str(s.core).lower()})
        e.family(
            "edge_station_service_restarts_total",
            "counter",
            "Restarts of an optional service after it failed.",
        )
        for s in states:
            if not s.core:
                e.sample(s.restarts, {"service": s.name})

    def _meters(self, e: Exposition, now_m: float) -> None:
        meters = sorted(self.station.meters.inputs.items())
        e.family(
            "edge_station_meter_reading_age_seconds",
            "gauge",
            "Age of the meter's latest reading: since its values were requested (or its poll failed).",
        )
        for name, m in meters:
            e.sample(round(max(0.0, now_m - m.reading.at), 3), {"meter": name, "role": m.role})
        e.family(
            "edge_station_meter_freshness",
            "gauge",
            "1 for the freshness the meter's latest reading has (fresh, stale, failed).",
        )
        for name, m in meters:
            for f in Freshness:
                e.sample(
                    m.reading.freshness is f, {"meter": name, "role": m.role, "freshness": f.value}
                )
        gate = self.station.meters.gate
        e.family(
            "edge_station_meter_implausible_readings_total",
            "counter",
            "Meter readings failed because a value was outside physical bounds.",
        )
        for name, m in meters:
            e.sample(gate.implausible_readings[name], {"meter": name, "role": m.role})
        e.family(
            "edge_station_meter_implausible_values_total",
            "counter",
            "Implausible meter values, by quantity.",
        )
        for (name, quantity), n in sorted(gate.implausible_values.items()):
            e.sample(n, {"meter": name, "quantity": quantity})

    def _nodes(self, e: Exposition, now_m: float) -> None:
        st = self.station
        bays = list(st.bays.values())
        e.family("edge_station_node_online", "gauge", "1 while the bay's node is online.")
        for rt in bays:
            e.sample(rt.state.node_online, {"bay": rt.cfg.id})
        e.family(
            "edge_station_node_output_errors",
            "gauge",
            "Consecutive failed output commands to the bay's node.",
        )
        for rt in bays:
            e.sample(rt.output_errors, {"bay": rt.cfg.id})
        stats = sorted(st.bays.link_stats().items())
        for attr, name, text in (
            ("frames_rx", "frames_received", "Good frames received from the node."),
            ("frames_tx", "frames_sent", "Frames sent to the node."),
            ("bad_frames", "bad_frames", "Garbled frames from the node (skipped)."),
            ("timeouts", "timeouts", "Commands to the node that timed out."),
            ("retries", "retries", "Commands to the node that were retried."),
            ("reconnects", "reconnects", "Times the link to the node was re-established."),
        ):
            e.family(f"edge_station_node_{name}_total", "counter", text)
            for bay_id, ls in stats:
                e.sample(int(getattr(ls, attr)), {"bay": bay_id})
        e.family(
            "edge_station_node_link_events_total",
            "counter",
            "Other link counters of the node adapter (sequence gaps, repeats, ...).",
        )
        for bay_id, ls in stats:
            for kind, n in sorted(ls.extra.items()):
                e.sample(int(n), {"bay": bay_id, "kind": kind})
        e.family(
            "edge_station_node_rejected_readings_total",
            "counter",
            "Energy counter readings of the node rejected as physically implausible (not booked).",
        )
        for rt in bays:
            for verdict in ("jump", "backwards"):
                n = st.nodes.rejected_readings.get((rt.cfg.id, verdict), 0)
                e.sample(n, {"bay": rt.cfg.id, "verdict": verdict})
        e.family(
            "edge_station_node_last_rx_age_seconds",
            "gauge",
            "Seconds since the last good frame from the node.",
        )
        for bay_id, ls in stats:
            if ls.last_rx_at is not None:
                e.sample(round(max(0.0, now_m - ls.last_rx_at), 3), {"bay": bay_id})

    def _loop(self, e: Exposition) -> None:
        mon = monitor_of(self.station)
        if mon is None:
            return
        s = mon.stats()
        for name, value, text in (
            ("edge_station_loop_lag_seconds", s.latest_s, "Latest event-loop lag."),
            (
                "edge_station_loop_lag_max_seconds",
                s.max_s,
                "Maximum event-loop lag over the window.",
            ),
            (
                "edge_station_loop_lag_p99_seconds",
                s.p99_s,
                "99th percentile of the lag over the window.",
            ),
        ):
            if value is not None:
                e.one(name, "gauge", text, round(value, 6))
        e.one(
            "edge_station_loop_lag_window_seconds",
            "gauge",
            "Length of the lag window.",
            round(s.period_s * mon.window, 3),
        )

    def _process(self, e: Exposition) -> None:
        try:
            with self._proc.oneshot():
                cpu = self._proc.cpu_times()
                rss = self._proc.memory_info().rss
                started = self._proc.create_time()
                fds = self._proc.num_fds() if hasattr(self._proc, "num_fds") else None
        except psutil.Error:
            return
        e.one(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time.",
            round(cpu.user + cpu.system, 3),
        )
        e.one("process_resident_memory_bytes", "gauge", "Resident memory.", rss)
        e.one(
            "process_start_time_seconds", "gauge", "Start time since the epoch.", round(started, 3)
        )
        if fds is not None:
            e.one("process_open_fds", "gauge", "Open file descriptors.", fds)


def _version() -> str:
    try:
        return version("edge-station")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _journal_size(path: Path) -> int:
    total = 0
    for p in (path, path.with_name(path.name + "-wal")):
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total
