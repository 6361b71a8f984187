"""Scale: every bay charging at 1 Hz telemetry with load management on, over serial and MQTT.

Each bus is configured with ``telemetry_period_s = 1`` and (serial) ``poll_period_s = 1``,
so each node sends about one frame a second on either transport (``frames_per_s`` ≈ bays).

The controller (a real Station with its Journal on disk, the load manager fed
by a real Modbus TCP grid meter simulator, the local UI served by uvicorn as in
production) runs in this process; the kiosk asking for its state once a second is
its own process (``tests/bench/kiosk_poll.py``), as a browser is; the nodes run in their own processes, one
per bus of at most 128 nodes (``tests/bench/scale_nodes.py``), over pseudo-
terminals or a real mosquitto. Measured over a window with every bay charging:

- CPU per bay per second: this process's CPU time (``getrusage(RUSAGE_SELF)``, the same as
  utime + stime in /proc/<pid>/stat: every thread, the journal's SQLite threads included;
  the node processes, the kiosk's client and the broker are children and not counted) /
  bays / seconds (ms). The process also runs the grid meter simulator: the py-spy
  profile gives its share;
- loop lag p99 (a 50 ms sleeper's overshoot);
- kiosk state p99 (``GET /api/v1/kiosk/state`` once a second);
- bytes written to disk per bay per day: ``write_bytes`` of /proc/self/io (every thread of
  this process, the journal's writer thread included; the kernel counts a page when a write
  dirties it) over a disk window of a whole number of the journal's write intervals (60 s:
  at least one, so exactly that many minute writes fall in it), which ends with
  ``PRAGMA wal_checkpoint(PASSIVE)``: the WAL frames and their copy into the database file
  both count (start-up's frames are copied before the window). One minute's forced copy
  counts a page rewritten each minute twice: ``bench_journal_day.py`` runs simulated hours.
  A shorter window saw no minute write and read 0 B. A station small enough that its journal
  writes every few minutes (4 bays: 10 min) gets no disk figure here, only in that bench.
- after a grid step (non-EV load up so every bay must drop to 10 A): how long
  until every node has acknowledged its lower setpoint.

``BENCH_SCALE_PROFILE=pyspy`` samples the measured window with py-spy from outside (no
cost in this process; only samples of work, not of a thread waiting in a system call) and ``BENCH_SCALE_PROFILE=1`` runs
cProfile (its own cost inflates the figures); either writes the top 15 functions by
inclusive and by own time to ``bench-results/scale_<transport>_<bays>_profile.txt``. ``make bench`` runs 4 and 64 bays; 256 bays
(two buses) is marked ``long`` and runs with ``BENCH_SCALE_256=1``. ``BENCH_SCALE_S`` sets the window (default 30 s).

    ./dev.sh bench tests/bench/bench_scale.py
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import math
import os
import pstats
import resource
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller.core.auth import free_vend_step
from controller.core.config import StationConfig, parse_config
from controller.core.journal import Journal
from controller.core.loadloop import load_manager_config
from controller.core.station import Station
from controller.ports import NodeHub
from drivers.esp32.assemble import build_serial
from drivers.esp32.mqtt_hub import build_mqtt
from drivers.modbus.extension import EXTENSION as METERS
from simulators.meter.server import MeterSimulator
from tests.bench.report import RESULTS_DIR, median, metric, percentile, write_report
from tests.bench.scale_nodes import names
from tests.support.mosquitto import Mosquitto, require_mosquitto
from tests.support.procs import free_port

REPO = Path(__file__).resolve().parents[2]
WINDOW_S = float(os.environ.get("BENCH_SCALE_S", "30"))
DISK_WINDOW_MAX_S = 120.0  # longer journal intervals: bytes from bench_journal_day.py
PER_BUS = 128
STEP_TO_A = 10.0
STATION = "scale"
TOP_N = int(os.environ.get("BENCH_TOP_N", "15"))
PYSPY_RATE_HZ = 500


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _sys_s() -> float:
    """The kernel's share of :func:`_cpu_s` (system calls: the pseudo-terminals, sockets, epoll)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def _write_bytes() -> int:
    for line in Path("/proc/self/io").read_text(encoding="ascii").splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def _thread_writes() -> dict[str, int]:
    """``write_bytes`` of the loop's thread (``main``) and of the others (SQLite's among them)."""
    out: dict[str, int] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = "main" if task.name == str(os.getpid()) else "other threads"
            for line in (task / "io").read_text(encoding="ascii").splitlines():
                if line.startswith("write_bytes:"):
                    out[name] = out.get(name, 0) + int(line.split()[1])
        except OSError:
            continue  # the thread ended meanwhile
    return out


def _thread_cpu() -> dict[str, float]:
    """CPU seconds by thread name (``comm``): the loop's thread is ``main``; SQLite's writer,
    the default executor's workers and any other thread show under their own names."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = "main" if task.name == str(os.getpid()) else (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the thread ended meanwhile
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _buses(bays: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    left, i = bays, 0
    while left > 0:
        i += 1
        out.append((f"b{i}", min(PER_BUS, left)))
        left -= PER_BUS
    return out


def _config(tmp: Path, transport: str, bays: int, meter_port: int, broker: Any) -> StationConfig:
    buses = _buses(bays)
    main_a = bays * 16.0 + 20.0
    raw: dict[str, Any] = {
        "station": {"id": STATION, "data_dir": str(tmp)},
        "timers": {"lease_s": 5.0, "connection_timeout_s": 600},
        "buses": [
            {
                "id": b,
                "transport": transport,
                "port": str(tmp / "sim" / f"tty{b}") if transport == "serial" else "",
                "host_timeout_s": 10.0,
                # The condition: every bay at 1 Hz telemetry, and a serial bus polls
                # each node once a second (a poll is what lets a node speak), so about one
                # frame per bay per second on either transport.
                "telemetry_period_s": 1.0,
                "poll_period_s": 1.0,
            }
            for b, _ in buses
        ],
        "bays": [
            {
                "id": name,
                "connector": 0,
                "bus": b,
                "address": a,
                "max_current_a": 16,
            }
            for b, n in buses
            for a, name in enumerate(names(b, n), 1)
        ],
        "site": {
            "main_limit_a": main_a,
            "min_on_time_s": 30,
            "min_off_time_s": 30,
            "increase_delay_s": 1,
            "ramp_step_a": 16,
        },
        "meters": [
            {
                "name": "grid",
                "map": "sdm630",
                "role": "grid",
                "poll_interval_s": 0.5,
                "bus": {"transport": "tcp", "host": "127.0.0.1", "port": meter_port},
            }
        ],
    }
    for i, bay in enumerate(raw["bays"], 1):
        bay["connector"] = i
    if broker is not None:
        raw["mqtt"] = {
            "host": broker.host,
            "port": broker.port,
            "password": "controller-pw",
            "offline_after_s": 10.0,
            "heartbeat_s": 2.0,
            "ack_timeout_s": 2.0,
        }
    return parse_config(raw)


@contextlib.asynccontextmanager
async def _nodes(
    tmp: Path, transport: str, bays: int, broker: Any
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    procs: list[asyncio.subprocess.Process] = []
    try:
        for bus, n in _buses(bays):
            args = [sys.executable, "-m", "tests.bench.scale_nodes", transport, "--bus", bus]
            args += ["--count", str(n), "--dir", str(tmp / "sim"), "--station", STATION]
            if broker is not None:
                args += ["--host", broker.host, "--port", str(broker.port)]
            proc = await asyncio.create_subprocess_exec(
                *args, cwd=REPO, stdout=asyncio.subprocess.PIPE
            )
            procs.append(proc)
            assert proc.stdout is not None
            async with asyncio.timeout(120):
                while (line := await proc.stdout.readline()).strip() != b"READY":
                    assert line, "the node process ended before it was ready"
        yield procs
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:  # a node process that does not stop must not hang the run
                    proc.kill()
                    await proc.wait()


def _hubs(cfg: StationConfig) -> dict[str, NodeHub]:
    hubs: dict[str, NodeHub] = {}
    for bus in cfg.buses:
        bays = [b for b in cfg.bays if b.bus == bus.id]
        hubs[bus.id] = (
            build_serial(bus, bays, cfg)
            if bus.transport == "serial"
            else build_mqtt(bus, bays, cfg)
        )
    return hubs


async def _until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def run_scale(tmp: Path, transport: str, bays: int, *, profile: bool) -> dict[str, Any]:
    """One measured run; returns the figures (and the profile's top entries)."""
    asyncio.get_running_loop().set_debug(False)  # production runs without debug mode
    broker_cm: Any = contextlib.nullcontext(None)
    if transport == "mqtt":
        require_mosquitto()
        users = {"controller": "controller-pw"}
        for bus, n in _buses(bays):
            users.update({name: f"pw-{name}" for name in names(bus, n)})
        broker_cm = Mosquitto(tmp / "mosquitto", users)
    with broker_cm as broker:
        station: Station | None = None

        def ev_amps() -> tuple[float, float, float]:
            tot = [0.0, 0.0, 0.0]
            if station is not None:
                for rt in station.bays.values():
                    if rt.telemetry is not None:
                        for i, c in enumerate(rt.telemetry.current_a[:3]):
                            tot[i] += c
            return (tot[0], tot[1], tot[2])

        async with (
            MeterSimulator("sdm630", port=0, role="grid", speed=0, extra_load=ev_amps) as meter,
            _nodes(tmp, transport, bays, broker),
        ):
            meter.set_currents((5.0, 5.0, 5.0))
            cfg = _config(tmp, transport, bays, meter.port, broker)
            journal = await Journal.open(tmp / "data" / "journal.sqlite3")
            station = Station(cfg, journal, hubs=_hubs(cfg))
            station.authorizer.add(free_vend_step())
            await station.restore()
            lcfg = load_manager_config(cfg)
            assert lcfg is not None
            station.attach_load(lcfg)
            METERS.attach(station)
            from local_ui.server import create_app, serve_app

            app = create_app(station)
            run = asyncio.create_task(station.run())
            # The kiosk's server as in production (uvicorn behind the connection gate); its
            # client is another process (tests/bench/kiosk_poll.py), as a browser is.
            http_port = free_port()
            http = asyncio.create_task(serve_app(app, "127.0.0.1", http_port))
            try:
                await app.state.ui.ensure_ready()
                await _until(
                    lambda: all(rt.state.node_online for rt in station.bays.values()),
                    120,
                    "every node online",
                )
                for rt in station.bays.values():
                    out = await station.commands.present_token(rt.cfg.id, f"T-{rt.cfg.id}")
                    assert out.ok, out
                await _until(
                    lambda: all(
                        rt.state.phase.value == "charging" and (rt.last_output or (0, 0))[1] >= 15
                        for rt in station.bays.values()
                    ),
                    120,
                    "every bay charging at 16 A",
                )
                # Settle into the steady state: past every bay's minimum on time (while it runs,
                # each load step makes every bay's input anew: a bay's first seconds, not the
                # station's day) and the first checkpoints.
                assert cfg.site is not None
                await asyncio.sleep(cfg.site.min_on_time_s + 1.0)
                return await _measure(station, http_port, meter, bays, transport, profile=profile)
            finally:
                http.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await http
                station.request_stop("bench")
                await asyncio.wait_for(run, 30)
                await journal.close()


async def _measure(
    station: Station,
    http_port: int,
    meter: MeterSimulator,
    bays: int,
    transport: str,
    *,
    profile: bool,
) -> dict[str, Any]:
    lag: list[float] = []
    kiosk: list[float] = []
    stop = asyncio.Event()
    measuring = False

    async def sample_lag() -> None:
        while not stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(0.05)
            lag.append((time.monotonic() - t - 0.05) * 1000)

    async def read_kiosk(out: asyncio.StreamReader) -> None:
        while line := await out.readline():
            status, ms = line.split()
            assert status == b"200", f"the kiosk state answered {line!r}"
            if measuring:
                kiosk.append(float(ms))
        raise AssertionError("the kiosk poller ended")

    await station.journal.checkpoint_wal()  # the start-up's frames: see "Disk" below
    poller = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.kiosk_poll",
        "127.0.0.1",
        str(http_port),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    assert poller.stdout is not None
    # The first answer (FastAPI builds its schemas then) is not part of the steady state.
    async with asyncio.timeout(60):
        assert (await poller.stdout.readline()).startswith(b"200 ")
    reader = asyncio.create_task(read_kiosk(poller.stdout))
    # cProfile's own timer (wall, perf_counter): a CPU-time timer is a system call per event
    # and makes the profiled run ten times slower than the one it describes.
    prof = cProfile.Profile() if profile and PROFILER == "cprofile" else None
    spy = await _start_pyspy(WINDOW_S) if profile and PROFILER == "pyspy" else None
    rx0 = sum(rt.node.stats().frames_rx for rt in station.bays.values() if rt.node)
    # Disk: the window holds a whole number of the journal's write intervals (so exactly that
    # many minute writes) and ends with the WAL copied into the database file. It starts with
    # the start-up's frames already copied (else their copy counts in the window), taken
    # before the kiosk's warm-up so the station has settled again when the window opens.
    # A small station's journal writes every few minutes (controller.core.samples): a window
    # of them is bench_journal_day.py's (simulated hours), not this real-time one's.
    interval = station.samples.interval_s
    measure_disk = interval <= DISK_WINDOW_MAX_S
    disk_s = max(1, math.ceil(WINDOW_S / interval - 1e-9)) * interval if measure_disk else 0.0
    b0, t0_io, cpu0 = _write_bytes(), _thread_writes(), _thread_cpu()
    w0, c0, k0 = time.monotonic(), _cpu_s(), _sys_s()
    if prof is not None:
        prof.enable()
    measuring = True
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sample_lag())
            await asyncio.sleep(WINDOW_S)
            stop.set()
    finally:
        measuring = False
        if reader.done():
            reader.result()  # the poller's failure, if it failed
        reader.cancel()
        poller.kill()
        await poller.wait()
    if prof is not None:
        prof.disable()
    wall = time.monotonic() - w0
    cpu, kernel = _cpu_s() - c0, _sys_s() - k0
    cpu_by_thread = {
        k: round(v - cpu0.get(k, 0.0), 2) for k, v in _thread_cpu().items() if v - cpu0.get(k, 0.0)
    }
    rx = sum(rt.node.stats().frames_rx for rt in station.bays.values() if rt.node) - rx0
    charging = sum(1 for rt in station.bays.values() if rt.state.phase.value == "charging")
    await asyncio.sleep(max(0.0, w0 + disk_s - time.monotonic()))
    wal_pages = await station.journal.checkpoint_wal()
    disk_wall = time.monotonic() - w0
    written = _write_bytes() - b0
    by_thread = _thread_writes()
    by_thread = {k: v - t0_io.get(k, 0) for k, v in by_thread.items() if v - t0_io.get(k, 0)}

    # The grid step: every bay must come down to STEP_TO_A.
    main_a = bays * 16.0 + 20.0
    non_ev = main_a - bays * STEP_TO_A
    t0 = time.monotonic()
    acked: dict[str, float] = {}
    meter.set_currents((non_ev, non_ev, non_ev))
    deadline = t0 + 30
    while len(acked) < bays and time.monotonic() < deadline:
        for rt in station.bays.values():
            out = rt.last_output
            if rt.cfg.id not in acked and out is not None and out[1] <= STEP_TO_A + 0.5:
                acked[rt.cfg.id] = time.monotonic() - t0
        await asyncio.sleep(0.01)
    step = sorted(acked.values())
    result: dict[str, Any] = {
        "transport": transport,
        "bays": bays,
        "window_s": round(wall, 1),
        "charging": charging,
        "frames_per_s": round(rx / wall, 1),
        "cpu_ms_per_bay_s": cpu * 1000 / bays / wall,
        "cpu_pct_core": cpu / wall * 100,
        "cpu_kernel_share": round(kernel / cpu, 3) if cpu else 0.0,
        "cpu_s_by_thread": cpu_by_thread,
        "loop_lag_p99_ms": percentile(lag, 99),
        "kiosk_p50_ms": median(kiosk),
        "kiosk_p99_ms": percentile(kiosk, 99),
        "bytes_per_bay_day": written / bays / disk_wall * 86400 if measure_disk else None,
        "journal_interval_s": interval,
        "disk_window_s": round(disk_wall, 1),
        "disk_written_b": written,
        "disk_by_thread_b": by_thread,
        "wal_pages_at_end": wal_pages,
        "step_acked": len(acked),
        "step_all_acked_s": step[-1] if len(step) == bays else float("inf"),
        "step_median_s": median(step) if step else float("inf"),
        "dropped_updates": station.nodes.dropped,
        "step_outputs_a": sorted(
            {(rt.last_output or (False, -1.0))[1] for rt in station.bays.values()}
        ),
    }
    if prof is not None:
        result["profile"] = _top(prof)
        # The whole profile, for pstats (callers, callees): python -m pstats <file>
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        prof.dump_stats(RESULTS_DIR / f"scale_{transport}_{bays}.pstats")
    if spy is not None:
        result["profile"] = await _pyspy_top(*spy)
    return result


def _top(prof: cProfile.Profile, n: int = TOP_N) -> list[str]:
    """The top entries by cumulative time (the project's own functions), then by own time."""
    out: list[str] = []
    for key, restrict in (
        ("cumulative", (r"controller|drivers|local_ui|simulators|pymodbus|asyncio.events",)),
        ("tottime", ()),
    ):
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats(key).print_stats(*restrict, n)
        lines = [ln.rstrip() for ln in buf.getvalue().splitlines() if ln.strip()]
        out += [f"-- cProfile, by {key}", *lines[-n - 1 :]]
    return out + _own_time_by_part(prof)


def _own_time_by_part(prof: cProfile.Profile) -> list[str]:
    """Own time summed by where the code lives: the project's packages (two levels), each
    installed library, the standard library's asyncio and the rest, C built-ins; waiting
    in epoll is left out, so the shares are of the work."""
    stats: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    parts: dict[str, float] = {}
    for (path, _line, func), row in stats.items():
        own = float(row[2])
        if func == "<method 'poll' of 'select.epoll' objects>":
            continue
        p = Path(path)
        if path == "~":
            part = "C built-ins"
        elif "site-packages" in p.parts:
            part = p.parts[p.parts.index("site-packages") + 1]
        elif REPO in p.parents:
            part = "/".join(p.relative_to(REPO).parts[:2])
        elif "asyncio" in p.parts:
            part = "asyncio"
        else:
            part = "stdlib (other)"
        parts[part] = parts.get(part, 0.0) + own
    total = sum(parts.values()) or 1.0
    out = [f"-- cProfile, own time by part (of {total:.2f} s of work)"]
    for part, t in sorted(parts.items(), key=lambda kv: -kv[1])[:25]:
        out.append(f"  {t / total * 100:5.1f} %  {part}")
    return out


async def _start_pyspy(seconds: float) -> tuple[asyncio.subprocess.Process, Path] | None:
    """py-spy samples this process from outside (not paused: ``--nonblocking``), so its cost
    is neither in the CPU figure nor in the loop lag."""
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        print("[bench] py-spy is not installed: no profile")
        return None
    out = _spy_output_path()
    proc = await asyncio.create_subprocess_exec(
        str(exe),
        "record",
        "--pid",
        str(os.getpid()),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(PYSPY_RATE_HZ),
        "--nonblocking",
        # Without --idle, py-spy leaves out a thread waiting in a system call (the loop in
        # epoll): what is left is work. (--gil lost most samples of the loop's thread here.)
        "--format",
        "raw",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return proc, out


def _spy_output_path() -> Path:
    """A child's writes count in this process's /proc/self/io once it is reaped (inside the
    disk window): py-spy writes its samples to memory (tmpfs), which counts no disk bytes."""
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() else RESULTS_DIR
    where.mkdir(parents=True, exist_ok=True)
    return where / f"pyspy_{os.getpid()}.txt"


async def _pyspy_top(proc: asyncio.subprocess.Process, out: Path) -> list[str]:
    async with asyncio.timeout(60):
        await proc.wait()
    return pyspy_summary(_take_lines(out))


def _take_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    path.unlink()
    return lines


def pyspy_summary(raw: list[str], n: int = TOP_N) -> list[str]:
    """py-spy's collapsed stacks (``frame;frame;... count``, only samples of work) as the
    top ``n`` functions by inclusive share and by own share of those samples."""
    total = 0
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    # What runs in this process but is not the controller: the grid meter simulator (its
    # code and pymodbus's server side) and the kiosk poll's HTTP client.
    by_part = {"simulators/": 0, "pymodbus/server/": 0, "pymodbus/datastore/": 0, "httpx/": 0}
    for line in raw:
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        raw_frames = stack.split(";")
        leaf = _frame_name(raw_frames[-1])
        own[leaf] = own.get(leaf, 0) + count
        # Inclusive: the work, not the harness every sample runs under (pytest, the loop).
        for f in {_frame_name(f) for f in raw_frames if not any(h in f for h in _HARNESS)}:
            incl[f] = incl.get(f, 0) + count
        for part in by_part:
            if part in stack:
                by_part[part] += count
    if not total:
        return ["-- py-spy: no samples of work"]
    out = [f"-- py-spy: {total} samples of work ({PYSPY_RATE_HZ} Hz, the controller's process)"]
    out += [f"   share of samples in {k} {v / total * 100:.1f} %" for k, v in by_part.items()]
    not_ours = sum(by_part.values()) / total * 100
    out.append(f"   (at most {not_ours:.1f} % of the samples are not the controller's)")
    for title, table in (("inclusive", incl), ("own", own)):
        out.append(f"-- py-spy, top {n} by {title} share")
        for name, c in sorted(table.items(), key=lambda kv: -kv[1])[:n]:
            out.append(f"  {c / total * 100:5.1f} %  {name}")
    return out


_HARNESS = ("pytest/", "pluggy/", "pytest_asyncio/", "runpy", "asyncio/")


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (to/file.py)``: one entry per function."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    short = "/".join(Path(path).parts[-2:])
    return f"{func} ({short})"


def _report(r: dict[str, Any]) -> None:
    name = f"scale_{r['transport']}_{r['bays']}"
    write_report(
        name,
        {
            "cpu_ms_per_bay_s": metric(r["cpu_ms_per_bay_s"], "ms", target=0.35),
            "cpu_pct_core": metric(r["cpu_pct_core"], "%"),
            # Serial polls as often as the loop manages (up to 5 Hz a node): per frame received
            # compares runs in which the shared machine let it poll more or less often.
            "cpu_us_per_frame_rx": metric(r["cpu_pct_core"] * 1e4 / r["frames_per_s"], "us"),
            "loop_lag_p99_ms": metric(r["loop_lag_p99_ms"], "ms", target=50.0),
            "kiosk_state_p99_ms": metric(r["kiosk_p99_ms"], "ms", target=250.0),
            "step_all_acked_s": metric(r["step_all_acked_s"], "s", target=2.0),
        }
        | (
            {"bytes_per_bay_day": metric(r["bytes_per_bay_day"], "B", target=1_000_000)}
            if r["bytes_per_bay_day"] is not None
            else {}
        ),
        notes={
            k: v
            for k, v in r.items()
            if not isinstance(v, float)
            or k
            in (
                "window_s",
                "frames_per_s",
                "disk_window_s",
                "cpu_kernel_share",
                "journal_interval_s",
            )
        }
        | {
            "cpu_count": os.cpu_count(),
            "cpu_of": "this process: controller (its HTTP server too) and the grid meter simulator;"
            " the kiosk's client is its own process",
        },
    )
    if "profile" in r:
        text = "\n".join(r["profile"])
        print(text)
        (RESULTS_DIR / f"{name}_profile.txt").write_text(text + "\n", encoding="utf-8")


def _check(r: dict[str, Any]) -> None:
    assert r["charging"] == r["bays"], r
    assert r["step_acked"] == r["bays"], r
    assert r["dropped_updates"] == 0, r


_PROFILE_ENV = os.environ.get("BENCH_SCALE_PROFILE", "")
PROFILE = _PROFILE_ENV in ("1", "cprofile", "pyspy")
PROFILER = "pyspy" if _PROFILE_ENV == "pyspy" else "cprofile"


@pytest.mark.bench
@pytest.mark.parametrize("transport", ["serial", "mqtt"])
@pytest.mark.parametrize("bays", [4, 64])
async def test_bench_scale(tmp_path: Path, transport: str, bays: int) -> None:
    r = await run_scale(tmp_path, transport, bays, profile=PROFILE)
    _report(r)
    if not PROFILE or PROFILER == "pyspy":  # cProfile may slow the loop past the nodes' timeouts
        _check(r)


@pytest.mark.bench
@pytest.mark.long
@pytest.mark.timeout(900)  # 256 nodes come up and go down slowly over MQTT
@pytest.mark.skipif(
    os.environ.get("BENCH_SCALE_256") != "1", reason="long: set BENCH_SCALE_256=1 (make test-long)"
)
@pytest.mark.parametrize("transport", ["serial", "mqtt"])
async def test_bench_scale_256(tmp_path: Path, transport: str) -> None:
    r = await run_scale(tmp_path, transport, 256, profile=PROFILE)
    _report(r)
    if not PROFILE or PROFILER == "pyspy":  # cProfile may slow the loop past the nodes' timeouts
        _check(r)


# --------------------------------------------------------------------------- the core's frame path


class _SteppedClock:
    """The system clock, with wall and monotonic time moved on by the bench (a second a round)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def wall(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def run_frame_path(tmp: Path, bays: int, rounds: int) -> dict[str, Any]:
    """CPU per telemetry frame of the core alone: intake → bay machine → state → journal.

    A passive fake hub (no transport): every bay charging, then ``rounds`` simulated seconds
    with one frame per bay each (energy +3 Wh, 16 A), taken by the station's node intake; the
    journal's minute write (or, in releases before it, the 1 Hz sample flush) runs once per
    simulated minute. CPU is this process's (all threads, the journal's writer included).
    """
    from controller.ports import NodeTelemetry, PilotState
    from tests.support.passive import passive_station, report

    asyncio.get_running_loop().set_debug(False)
    cfg = parse_config(
        {
            "station": {"id": STATION, "data_dir": str(tmp)},
            "timers": {"lease_s": 5.0, "connection_timeout_s": 600},
            "buses": [{"id": "b1"}],
            "bays": [
                {"id": f"bay{i}", "connector": i, "bus": "b1", "address": i}
                for i in range(1, bays + 1)
            ],
        }
    )
    clock = _SteppedClock()
    energy = {b.id: 1000 for b in cfg.bays}

    def frame(bay_id: str, amps: float, pilot: PilotState) -> NodeTelemetry:
        return report(bay_id, clock.monotonic(), amps, pilot, energy_wh=energy[bay_id])

    async with passive_station(cfg, tmp / "journal.sqlite3", clock=clock) as (station, _):
        for bay_id in station.bays:
            await station.nodes.take(frame(bay_id, 0.0, PilotState.B))
        for bay_id in station.bays:
            assert (await station.commands.present_token(bay_id, f"T-{bay_id}")).ok
            await station.nodes.take(frame(bay_id, 16.0, PilotState.C))
        assert all(rt.state.phase.value == "charging" for rt in station.bays.values())
        c0, w0 = time.process_time(), time.monotonic()
        for r in range(1, rounds + 1):
            clock.offset += 1.0
            for bay_id in station.bays:
                energy[bay_id] += 3
                await station.nodes.take(frame(bay_id, 16.0, PilotState.C))
            if r % 60 == 0:
                await station.samples.flush()
        cpu = time.process_time() - c0
        wall = time.monotonic() - w0
        energy_ok = all(
            rt.state.session is not None and rt.state.session.energy_wh == 3 * rounds
            for rt in station.bays.values()
        )
    frames = bays * rounds
    return {
        "bays": bays,
        "frames": frames,
        "cpu_us_per_frame": cpu / frames * 1e6,
        "wall_us_per_frame": wall / frames * 1e6,
        "energy_ok": energy_ok,
    }


@pytest.mark.bench
async def test_bench_frame_path(tmp_path: Path) -> None:
    r = await run_frame_path(tmp_path, 64, int(os.environ.get("BENCH_FRAME_ROUNDS", "180")))
    write_report(
        "scale_frame_path",
        {
            "cpu_us_per_frame": metric(r["cpu_us_per_frame"], "us"),
            "wall_us_per_frame": metric(r["wall_us_per_frame"], "us"),
        },
        notes={"bays": r["bays"], "frames": r["frames"], "path": "intake, bay machine, journal"},
    )
    assert r["energy_ok"], r
