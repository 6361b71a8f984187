"""The load manager in the station's loop: meter readings → setpoints → node leases, audited."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from controller.core.auth import free_vend_step
from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.loadloop import load_manager_config
from controller.core.station import Station
from controller.ports import Freshness, MeterReading, MeterSample, PilotState
from tests.support.fake_nodes import FakeHub

LIMIT = 32.0


def grid(currents: tuple[float, float, float], fresh: Freshness = Freshness.FRESH) -> MeterReading:
    sample = (
        MeterSample(at=time.monotonic(), current_a=currents) if fresh is Freshness.FRESH else None
    )
    return MeterReading("grid", time.monotonic(), fresh, sample, "" if sample else "timeout")


@contextlib.asynccontextmanager
async def polled_grid_meter(st: Station, amps: float) -> AsyncIterator[None]:
    """A grid meter polled every 0.25 s, reading a constant building load."""

    async def poll() -> None:
        while True:
            st.meters.on_reading(grid((amps, amps, amps)), role="grid")
            await asyncio.sleep(0.25)

    task = asyncio.create_task(poll())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def station_with_load(tmp: Path, n: int = 2) -> AsyncIterator[tuple[Station, FakeHub]]:
    cfg = parse_config(
        {
            "station": {"id": "lm", "data_dir": str(tmp)},
            "timers": {"tick_s": 0.1, "lease_s": 3.0},
            "buses": [{"id": "bus"}],
            "bays": [
                {"id": f"b{i}", "connector": i, "bus": "bus", "address": i, "max_current_a": 16}
                for i in range(1, n + 1)
            ],
            "site": {
                "main_limit_a": LIMIT,
                "min_on_time_s": 30,
                "min_off_time_s": 30,
                "increase_delay_s": 1,
                "ramp_step_a": 16,
                "eco_current_a": 8,
            },
        }
    )
    journal = await Journal.open(tmp / "j.sqlite3")
    hub = FakeHub()
    st = Station(cfg, journal, hubs={"bus": hub})
    st.authorizer.add(free_vend_step())
    await st.restore()
    lcfg = load_manager_config(cfg)
    assert lcfg is not None
    st.attach_load(lcfg)
    task = asyncio.create_task(st.run())
    try:
        await asyncio.wait_for(hub.running.wait(), 5)
        yield st, hub
    finally:
        st.request_stop("test")
        await asyncio.wait_for(task, 5)
        await journal.close()


async def test_fair_share_then_spike_reduces_at_once_and_is_audited(tmp_path: Path) -> None:
    async with station_with_load(tmp_path) as (st, hub):
        for b in ("b1", "b2"):
            hub.telemetry(b, pilot=PilotState.B)
        st.meters.on_reading(grid((4.0, 4.0, 4.0)), role="grid")
        for b in ("b1", "b2"):
            await _until(st, lambda b=b: st.bays[b].state.node_online)
            assert (await st.commands.present_token(b, f"T{b}")).ok
        n1, n2 = hub.nodes["b1"], hub.nodes["b2"]
        await n1.wait_output(lambda o: o[0] and o[1] > 0)
        await n2.wait_output(lambda o: o[0] and o[1] > 0)
        # Both bays draw what they were given; the building draws 4 A. Increases wait for
        # increase_delay_s of wall-clock time, so keep the readings coming until they settle.
        async with asyncio.timeout(15):
            while True:
                a1, a2 = n1.outputs[-1][1], n2.outputs[-1][1]
                hub.telemetry("b1", current_a=a1, relay_on=True, pilot=PilotState.C)
                hub.telemetry("b2", current_a=a2, relay_on=True, pilot=PilotState.C)
                await _until(
                    st,
                    lambda a1=a1, a2=a2: _measured(st, "b1") == a1 and _measured(st, "b2") == a2,
                )
                st.meters.on_reading(grid((4 + a1 + a2,) * 3), role="grid")  # type: ignore[arg-type]
                await st.load.step()  # type: ignore[union-attr]
                if a1 == a2 == 14.0:
                    break
                with contextlib.suppress(TimeoutError):
                    await n1.wait_output(lambda o, a1=a1: o[1] != a1, timeout=0.25)
        assert a1 == a2 == 14.0  # fair: (32 - 4) / 2
        # A heat pump starts: the building now draws 20 A more.
        st.meters.on_reading(grid((24 + a1 + a2,) * 3), role="grid")  # type: ignore[arg-type]
        out1 = await n1.wait_output(lambda o: o[1] < a1)
        out2 = await n2.wait_output(lambda o: o[1] < a2)
        assert 24 + out1[1] + out2[1] <= LIMIT or not (out1[0] and out2[0])
        await st.settle()
        audit = await st.journal.audit_log(kind="throttle")
        assert any(a["detail"] and '"new_a"' in a["detail"] for a in audit)


async def test_failed_grid_meter_enters_safe_mode_and_never_increases(tmp_path: Path) -> None:
    async with station_with_load(tmp_path) as (st, hub):
        hub.telemetry("b1", pilot=PilotState.B)
        st.meters.on_reading(grid((2.0, 2.0, 2.0)), role="grid")
        await _until(st, lambda: st.bays["b1"].state.node_online)
        assert (await st.commands.present_token("b1", "A")).ok
        await hub.nodes["b1"].wait_output(lambda o: o[1] > 0)
        st.meters.on_reading(grid((0, 0, 0), Freshness.FAILED), role="grid")
        # No guaranteed headroom: the fallback budget is 0 A, so the bay is paused.
        await hub.nodes["b1"].wait_output(lambda o: o[1] == 0 and not o[0])
        assert "grid_meter" in {c["cause"] for c in st.snapshots.station()["safe_mode"]}
        assert st.snapshots.station()["accepting_sessions"]  # a silent meter pauses, not refuses


async def test_mode_switch_applies_within_3_s(tmp_path: Path) -> None:
    async with station_with_load(tmp_path) as (st, hub), contextlib.AsyncExitStack() as stack:
        hub.telemetry("b1", pilot=PilotState.B)
        await stack.enter_async_context(polled_grid_meter(st, 1.0))
        await _until(st, lambda: st.bays["b1"].state.node_online)
        out = await st.commands.present_token("b1", "A")
        await hub.nodes["b1"].wait_output(lambda o: o[1] == 16)
        t0 = time.monotonic()
        assert (await st.commands.set_mode(out.session_id or "", "eco")).ok
        await hub.nodes["b1"].wait_output(lambda o: 0 < o[1] <= 8, timeout=3.0)
        assert time.monotonic() - t0 < 3.0
        row = await st.journal.session(out.session_id or "")
        assert row is not None and row["mode"] == "eco"


def _measured(st: Station, bay: str) -> float | None:
    tel = st.bays[bay].telemetry
    return tel.current_a[0] if tel else None


async def _until(st: Station, pred: object, timeout: float = 5.0) -> None:
    assert callable(pred)
    async with st.events.subscription(lossy=True) as q, asyncio.timeout(timeout):
        while not pred():
            await q.get()


async def test_charging_profile_cap_applies_and_never_exceeds_site(tmp_path: Path) -> None:
    async with station_with_load(tmp_path) as (st, hub), contextlib.AsyncExitStack() as stack:
        assert st.load is not None
        caps: dict[int, float | None] = {}
        st.load.caps = lambda now: caps
        hub.telemetry("b1", pilot=PilotState.B)
        await stack.enter_async_context(polled_grid_meter(st, 1.0))
        await _until(st, lambda: st.bays["b1"].state.node_online)
        assert (await st.commands.present_token("b1", "A")).ok
        await hub.nodes["b1"].wait_output(lambda o: o[1] == 16)
        caps[1] = 8.0  # a TxProfile from the central system
        st.caps_changed()
        await hub.nodes["b1"].wait_output(lambda o: 0 < o[1] <= 8)
        caps[1] = 63.0  # a profile above the site's own limits changes nothing upward
        caps[0] = 100.0
        st.caps_changed()
        out = await hub.nodes["b1"].wait_output(lambda o: o[1] > 8, timeout=10)
        assert out[1] <= 16


async def test_a_newcomer_waits_for_the_nodes_to_confirm_the_cut(tmp_path: Path) -> None:
    """Break before make through the station: what the nodes acknowledged reaches the controller."""
    async with station_with_load(tmp_path, n=3) as (st, hub):
        draw = {"b1": 0.0, "b2": 0.0, "b3": 0.0}

        async def site() -> None:
            # The vehicles draw what the test says; the grid meter sees them (no building load).
            while True:
                for b, a in draw.items():
                    pilot = PilotState.C if a > 0 else PilotState.B
                    hub.telemetry(b, current_a=a, relay_on=a > 0, pilot=pilot)
                st.meters.on_reading(grid((sum(draw.values()),) * 3), role="grid")
                await asyncio.sleep(0.25)

        feeder = asyncio.create_task(site())
        try:
            n1, n2, n3 = (hub.nodes[b] for b in ("b1", "b2", "b3"))
            await _until(st, lambda: all(rt.state.node_online for rt in st.bays.values()))
            for b in ("b1", "b2"):
                assert (await st.commands.present_token(b, f"T{b}")).ok
            await n1.wait_output(lambda o: o[1] == 16, timeout=10)
            await n2.wait_output(lambda o: o[1] == 16, timeout=10)
            draw["b1"] = draw["b2"] = 16.0
            # b1's node stops answering just as b3 arrives: its cut is never confirmed.
            n1.fail_commands = True
            assert (await st.commands.present_token("b3", "Tb3")).ok
            await n2.wait_output(lambda o: o[1] < 16)
            cut_at = time.monotonic()
            # Both vehicles follow at once (b1's, say, on its own): only the confirmation is missing.
            draw["b1"] = draw["b2"] = 10.6
            await n3.wait_output(lambda o: o[0] and o[1] >= 6, timeout=10)
            waited = time.monotonic() - cut_at
            site_cfg = st.cfg.site
            assert site_cfg is not None
            # An unconfirmed decrease counts at its old value until the EV response time.
            assert waited >= site_cfg.ev_response_s - 0.5, waited
            assert st.bays["b1"].last_output == (True, 16.0)  # still what b1 last confirmed
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder


async def test_a_newcomer_starts_as_soon_as_the_cut_is_confirmed_and_followed(
    tmp_path: Path,
) -> None:
    async with station_with_load(tmp_path, n=3) as (st, hub):
        draw = {"b1": 0.0, "b2": 0.0, "b3": 0.0}

        async def site() -> None:
            while True:
                for b, a in draw.items():
                    pilot = PilotState.C if a > 0 else PilotState.B
                    hub.telemetry(b, current_a=a, relay_on=a > 0, pilot=pilot)
                st.meters.on_reading(grid((sum(draw.values()),) * 3), role="grid")
                await asyncio.sleep(0.25)

        feeder = asyncio.create_task(site())
        try:
            n1, n2, n3 = (hub.nodes[b] for b in ("b1", "b2", "b3"))
            await _until(st, lambda: all(rt.state.node_online for rt in st.bays.values()))
            for b in ("b1", "b2"):
                assert (await st.commands.present_token(b, f"T{b}")).ok
            await n1.wait_output(lambda o: o[1] == 16, timeout=10)
            await n2.wait_output(lambda o: o[1] == 16, timeout=10)
            draw["b1"] = draw["b2"] = 16.0
            assert (await st.commands.present_token("b3", "Tb3")).ok
            a1 = await n1.wait_output(lambda o: o[1] < 16)
            await n2.wait_output(lambda o: o[1] < 16)
            cut_at = time.monotonic()
            # Confirmed at once (the fake nodes answer immediately), but the vehicles still
            # draw 16 A: b3 stays off.
            with contextlib.suppress(TimeoutError):
                await n3.wait_output(lambda o: o[0], timeout=1.0)
            assert not any(o[0] for o in n3.outputs), n3.outputs
            # They follow: b3 starts well before the EV response time has run out.
            draw["b1"] = draw["b2"] = a1[1]
            await n3.wait_output(lambda o: o[0] and o[1] >= 6, timeout=10)
            site_cfg = st.cfg.site
            assert site_cfg is not None
            assert time.monotonic() - cut_at < site_cfg.ev_response_s - 1.0
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
