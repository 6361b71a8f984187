"""Prometheus metrics: the text of ``GET /metrics`` (exposition format 0.0.4, written here).

Figures that need the journal (closed sessions, delivered energy, outbox
depth) come from small queries whose result is cached for ``ttl_s`` seconds,
refreshed early when a session opens or closes so that counters never step back.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sqlite3
import time
import weakref
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import psutil
import structlog

from controller.core.bay import Status, ocpp_status
from controller.core.safety import CAUSES
from controller.core.station import Station
from controller.ops.health import JOURNAL_TTL_S, health, upstream_online
from controller.ops.looplag import monitor_of
from controller.ports import Freshness

log = structlog.get_logger(__name__)

# --------------------------------------------------------------------------- exposition

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


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True, slots=True)
class JournalFigures:
    """One snapshot of the journal (a single statement, so one read transaction)."""

    closed_sessions: int
    closed_energy_wh: float
    outbox_pending: int
    outbox_failed: int
    open_sessions: dict[str, str]  # session id -> bay id
    # Sessions the journal has closed while the bay still showed them running (the
    # station commits first, then updates the bay): id -> final energy.
    just_closed: dict[str, float]
    fetched_at: float


_FIGURES_SQL = """
SELECT
  (SELECT count(*) FROM sessions WHERE state = 'closed') AS closed_n,
  (SELECT coalesce(sum(energy_wh), 0) FROM sessions WHERE state = 'closed') AS closed_wh,
  (SELECT count(*) FROM outbox WHERE state = 'pending') AS pending,
  (SELECT count(*) FROM outbox WHERE state = 'failed') AS failed,
  (SELECT json_group_object(id, bay_id) FROM sessions WHERE state = 'open') AS open,
  (SELECT json_group_object(id, energy_wh) FROM sessions
     WHERE state = 'closed' AND id IN (SELECT value FROM json_each(?))) AS just_closed
"""


class MetricsCollector:
    """Renders ``/metrics`` for one station; journal figures are cached (``ttl_s``).

    The energy counter is closed sessions (journal) plus running ones (live);
    each session is counted once, so the counter never steps back: the cache is
    refreshed as soon as the running sessions differ from what it saw.
    """

    def __init__(self, station: Station, *, ttl_s: float = JOURNAL_TTL_S) -> None:
        self.station = station
        self.ttl_s = ttl_s
        self.queries = 0
        self.query_errors = 0
        self._figures: JournalFigures | None = None
        self._lock = asyncio.Lock()
        self._proc = psutil.Process()

    def _live_open(self) -> dict[str, float]:
        return {
            rt.state.session.session_id: float(rt.state.session.energy_wh)
            for rt in self.station.bays.values()
            if rt.state.session is not None
        }

    def _matches(self, fig: JournalFigures, live: dict[str, float]) -> bool:
        """The running sessions are the ones the figures saw (or saw just closed)."""
        known = fig.open_sessions.keys() | fig.just_closed.keys()
        seen_open = {s for s, bay in fig.open_sessions.items() if bay in self.station.bays}
        return live.keys() <= known and seen_open <= live.keys()

    async def journal_figures(self) -> tuple[JournalFigures | None, dict[str, float]]:
        async with self._lock:
            live = self._live_open()
            fig = self._figures
            if (
                fig is not None
                and time.monotonic() - fig.fetched_at < self.ttl_s
                and self._matches(fig, live)
            ):
                return fig, live
            for _ in range(3):  # a session may open or close while the query runs
                try:
                    fig = self._figures = await self._query(list(live))
                except (sqlite3.Error, ValueError) as err:  # ValueError: connection closed
                    self.query_errors += 1
                    if self.query_errors == 1:
                        log.warning("metrics.journal_query_failed", error=str(err))
                    break
                live = self._live_open()
                if self._matches(fig, live):
                    break
            return self._figures, live

    async def _query(self, live_ids: list[str]) -> JournalFigures:
        self.queries += 1
        rows = await self.station.journal.query(_FIGURES_SQL, (json.dumps(live_ids),))
        r = rows[0]
        return JournalFigures(
            closed_sessions=int(r["closed_n"]),
            closed_energy_wh=float(r["closed_wh"]),
            outbox_pending=int(r["pending"]),
            outbox_failed=int(r["failed"]),
            open_sessions={str(k): str(v) for k, v in json.loads(r["open"] or "{}").items()},
            just_closed={str(k): float(v) for k, v in json.loads(r["just_closed"] or "{}").items()},
            fetched_at=time.monotonic(),
        )

    def energy_wh(self, fig: JournalFigures, live: dict[str, float]) -> float:
        twice = sum(fig.just_closed.get(sid, 0.0) for sid in live)
        return fig.closed_energy_wh - twice + sum(live.values())

    async def render(self) -> str:
        st = self.station
        fig, live = await self.journal_figures()
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
                round(self.energy_wh(fig, live), 3),
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
            self.query_errors,
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


_collectors: weakref.WeakKeyDictionary[Station, MetricsCollector] = weakref.WeakKeyDictionary()


def collector_for(station: Station) -> MetricsCollector:
    """The station's collector (one per station, so its cache is shared by all scrapes)."""
    c = _collectors.get(station)
    if c is None:
        c = _collectors[station] = MetricsCollector(station)
    return c


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


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of a text exposition (what ``status`` and the tests read back)."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    sample = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = sample.match(line)
        if m is None:
            raise ValueError(f"not a sample line: {line!r}")
        labels: list[tuple[str, str]] = []
        if m.group(2):
            pos = 0
            body = m.group(2)
            while pos < len(body):
                lm = label.match(body, pos)
                if lm is None:
                    raise ValueError(f"bad labels: {line!r}")
                labels.append((lm.group(1), _unescape(lm.group(2))))
                pos = lm.end()
        out[(m.group(1), frozenset(labels))] = float(m.group(3))
    return out


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)
