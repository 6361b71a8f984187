"""Core and optional services: an optional one that fails is restarted, the core keeps running.

The camera case runs the real station core (serial driver, journal, output
loops) against the node simulator in its own process, and the real camera
pipeline (extension, reader, decoder) on a simulated camera whose reader fails
as it did when the file descriptors ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import drivers.camera.extension as camera_ext
from controller import registry
from controller.assemble import open_station
from controller.core.auth import free_vend_step
from controller.core.config import StationConfig, load_config
from controller.core.journal import Journal
from controller.core.station import Station
from controller.ops.health import health
from controller.ops.metrics import collector_for, read_samples
from controller.ports import PilotState
from drivers.camera.reader import QrCameraReader, Sink
from simulators.camera.camera import SimulatedCamera
from simulators.esp32_node.control import request as sim_request
from tests.support.fake_nodes import FakeHub
from tests.support.procs import start_node_sim, write_station_config
from tests.support.watch import BayWatcher
from tests.test_station import make_cfg

# --------------------------------------------------------------------------- fake hub


class Flaky:
    """A service that fails ``failures`` times, then runs until cancelled."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or OSError(errno.EMFILE, "Too many open files")
        self.runs = 0
        self.running = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise self.error
        self.running.set()
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def station_with(
    tmp: Path, *services: tuple[str, Any, dict[str, Any]], backoff_s: float = 0.05
) -> AsyncIterator[tuple[Station, FakeHub, asyncio.Task[None]]]:
    journal = await Journal.open(tmp / "journal.sqlite3")
    hub = FakeHub()
    st = Station(make_cfg(tmp, ("evse",)), journal, hubs={"bus1": hub})
    st.authorizer.add(free_vend_step())
    st.supervisor.backoff_min_s = backoff_s
    st.supervisor.stable_s = 0.5
    for name, run, kw in services:
        st.add_service(name, run, **kw)
    await st.restore()
    task = asyncio.create_task(st.run())
    try:
        await asyncio.wait_for(hub.running.wait(), 5)
        yield st, hub, task
    finally:
        if not task.done():
            st.request_stop("test")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        await journal.close()


def _events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_failing_optional_service_is_restarted_logged_once_core_keeps_running(
    tmp_path: Path,
) -> None:
    svc = Flaky(failures=3)
    with capture_logs() as logs:
        async with station_with(tmp_path, ("camera", svc.run, {})) as (st, hub, task):
            hub.telemetry("b1", energy_wh=100, pilot=PilotState.C)
            await BayWatcher(st).status("b1", "Available")
            out = await st.commands.present_token("b1", "CARD-1")
            assert out.ok
            node = hub.nodes["b1"]
            await node.wait_output(lambda o: o[0])
            await asyncio.wait_for(svc.running.wait(), 5)
            assert svc.runs == 4 and not task.done()
            # The core kept going: leases are still renewed with the relay on.
            node.outputs.clear()
            await node.wait_output(lambda o: o[0])
            assert st.bays["b1"].state.session is not None
            await asyncio.sleep(st.supervisor.stable_s + 0.2)  # until it counts as recovered
            state = st.supervisor.states["camera"]
            assert state.restarts == 3 and state.state == "running" and not state.core
    failed = _events(logs, "service.failed")
    assert len(failed) == 1 and failed[0]["service"] == "camera"
    assert "Too many open files" in failed[0]["error"]
    assert len(_events(logs, "service.recovered")) == 1
    assert not _events(logs, "station.core_failed")


class Swallower:
    """A service whose library swallows the cancel at the stop, then fails (a lost broker)."""

    def __init__(self) -> None:
        self.runs = 0
        self.running = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        self.running.set()
        if self.runs > 1:
            await asyncio.Event().wait()  # a restart: this one cancels as it should
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # as asyncio.wait_for does on 3.11 when its future completes with the cancel
        raise ConnectionError("the broker went away")


@pytest.mark.timeout(30)  # the bug this guards against is a stop that never ends
async def test_a_service_that_swallows_the_cancel_does_not_hold_the_stop(
    tmp_path: Path,
) -> None:
    svc = Swallower()
    async with station_with(tmp_path, ("mqtt-state", svc.run, {})) as (st, _hub, task):
        await asyncio.wait_for(svc.running.wait(), 5)
        st.request_stop("test")
        await asyncio.wait_for(task, 5)  # not restarted past the stop: the station ended
    assert svc.runs == 1 and st.supervisor.states["mqtt-state"].state == "ended"


async def test_failing_core_part_stops_the_station(tmp_path: Path) -> None:
    svc = Flaky(failures=1, error=RuntimeError("load manager bug"))
    with capture_logs() as logs:
        async with station_with(tmp_path, ("load", svc.run, {"core": True})) as (_, _, task):
            with pytest.raises(ExceptionGroup):
                await asyncio.wait_for(task, 5)
    failed = _events(logs, "station.core_failed")
    assert len(failed) == 1 and failed[0]["service"] == "service:load"


async def test_service_that_guards_safety_refuses_sessions_while_down(tmp_path: Path) -> None:
    svc = Flaky(failures=2)
    msg = "The emergency-stop button is not being watched, so no session can start."
    async with station_with(
        tmp_path, ("gpio-emergency-stop", svc.run, {"refuse_while_down": msg})
    ) as (st, hub, _):
        hub.telemetry("b1", energy_wh=100, pilot=PilotState.B)
        await BayWatcher(st).status("b1", "Available")
        await asyncio.wait_for(svc.running.wait(), 5)
        refused = await st.commands.present_token("b1", "CARD-1")
        assert not refused.ok and refused.message == msg
        updates = st.events.subscribe(lossy=True)
        async with asyncio.timeout(5):
            while st.safety.blockers:
                await updates.get()
        assert (await st.commands.present_token("b1", "CARD-1")).ok


# --------------------------------------------------------------------------- the camera


class FlakyReader(QrCameraReader):
    """The real reader, made to fail as when the process ran out of file descriptors: the
    running one raises once ``explode`` is set, and the next start fails again at once."""

    failures = 2
    runs = 0
    explode: asyncio.Event
    working: asyncio.Event

    async def run(self, sink: Sink) -> None:
        FlakyReader.runs += 1
        if FlakyReader.runs == 1:
            await FlakyReader.explode.wait()
        if FlakyReader.runs <= FlakyReader.failures:
            raise OSError(errno.EMFILE, "Too many open files")
        FlakyReader.working.set()
        await super().run(sink)


async def test_camera_failure_keeps_sessions_charging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim_dir = tmp_path / "sim"
    sim = start_node_sim(sim_dir, 2)
    try:
        for bay in ("bay1", "bay2"):
            sim_request(sim_dir, "plug_in", bay, max_a=16.0, phases=3)
        cfg = load_config(
            write_station_config(
                tmp_path / "station.toml",
                port_path=str(sim_dir / "ttyBAYS"),
                nodes=2,
                http_port=0,
                data_dir=tmp_path / "data",
            )
        )
        st = await open_station(cfg, http=False)
        # The [camera] extension on a simulated camera, registered as the real one is.
        monkeypatch.setattr(camera_ext, "QrCameraReader", FlakyReader)
        monkeypatch.setattr(FlakyReader, "runs", 0)
        monkeypatch.setattr(FlakyReader, "working", asyncio.Event(), raising=False)
        monkeypatch.setattr(FlakyReader, "explode", asyncio.Event(), raising=False)
        cam = SimulatedCamera(fps=10)
        st.cfg.camera = {"name": "cam", "bay": "bay2", "decode_hz": 5, "dedup_s": 2}
        camera_ext.CameraExtension().attach(st, source=cam)
        with capture_logs() as logs:
            watch = BayWatcher(st, timeout=20)
            task = asyncio.create_task(st.run())
            try:
                for bay in ("bay1", "bay2"):
                    await watch.until(bay, lambda b: b["node_online"])
                out = await st.commands.present_token("bay1", "CARD-1")
                assert out.ok, out
                # What the node reports (over the serial link): its relay closed, energy flows.
                first = await watch.until("bay1", lambda b: b["relay_on"] and b["power_w"] > 0)
                assert first["session"] is not None
                before = first["session"]["energy_wh"]
                FlakyReader.explode.set()  # the camera service fails while bay1 charges
                await asyncio.wait_for(FlakyReader.working.wait(), 20)
                assert not task.done()
                # The restarted camera works: a code shown at bay2 starts a session there.
                cam.show("CARD-2", seconds=5.0)
                await watch.until("bay2", lambda b: b["session"] is not None)
                # Meanwhile bay1 never stopped: same session, relay on, its energy grew.
                later = await watch.until(
                    "bay1", lambda b: b["session"] and b["session"]["energy_wh"] > before
                )
                assert later["relay_on"] and later["status"] == "Charging"
                assert sim_request(sim_dir, "state", "bay1")["relay_on"]
                sess = st.bays["bay1"].state.session
                assert sess is not None and sess.session_id == out.session_id
            finally:
                st.request_stop("test")
                await asyncio.wait_for(task, 10)
                await st.journal.close()
    finally:
        sim.kill()
    failed = _events(logs, "service.failed")
    assert [e["service"] for e in failed] == ["camera:cam"]  # twice failed, logged once
    assert FlakyReader.runs == FlakyReader.failures + 1
    assert st.supervisor.states["camera:cam"].restarts == FlakyReader.failures


async def test_restarting_service_is_a_warning_in_health_and_metrics(tmp_path: Path) -> None:
    svc = Flaky(failures=1)
    # Down for a minute after its failure: it stays down while we look (set before it runs).
    async with station_with(tmp_path, ("ocpp", svc.run, {}), backoff_s=60.0) as (st, hub, _):
        hub.telemetry("b1", energy_wh=100, pilot=PilotState.B)
        await BayWatcher(st).status("b1", "Available")
        for _ in range(100):  # it failed at once; give the supervisor its turn if not yet
            if st.supervisor.failing():
                break
            await asyncio.sleep(0.05)
        h = health(st)
        assert h.ok  # optional: charging goes on
        assert [w.message for w in h.warnings if w.code == "service_restarting"] == [
            "The ocpp service failed and is restarting."
        ]
        text = await collector_for(st).render()
        samples = read_samples(text)
        assert (
            samples[("edge_station_service_restarts_total", frozenset({("service", "ocpp")}))] == 1
        )
        up = ("edge_station_service_up", frozenset({("service", "ocpp"), ("core", "false")}))
        assert samples[up] == 0
        ticker = ("edge_station_service_up", frozenset({("service", "ticker"), ("core", "true")}))
        assert samples[ticker] == 1


class Broken:
    """An extension that cannot be set up (its device cannot be opened: no descriptors left)."""

    name = "broken"

    def check(self, cfg: StationConfig) -> list[str]:
        return []

    def attach(self, station: Station) -> None:
        raise OSError(errno.EMFILE, "Too many open files")


async def test_extension_that_cannot_be_set_up_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "extensions", lambda: [Broken()])
    with capture_logs() as logs:
        st = await open_station(make_cfg(tmp_path, ("evse",)), hubs={"bus1": FakeHub()}, http=False)
    try:
        failed = _events(logs, "extension.attach_failed")
        assert len(failed) == 1 and failed[0]["extension"] == "broken"
        assert "Too many open files" in failed[0]["error"]
        assert [s.name for s in st.services if s.core] == []  # no [site]: no load manager
    finally:
        await st.journal.close()
