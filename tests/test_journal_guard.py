"""The journal's disk at run time: the low-space warning, the emergency reserve, meter samples,
and what /healthz and /metrics say about them (a real Station and Journal, fake nodes)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.core.bay import StopReason
from controller.core.journalguard import MB, RESERVE_FILE
from controller.ops.health import health
from controller.ops.metrics import collector_for, read_samples
from controller.ports import PilotState
from tests.test_station import Rig, _charging, _read_only, _unblocked, running


def _fake_space(rig: Rig, monkeypatch: pytest.MonkeyPatch, free_mb: float) -> dict[str, float]:
    """What statvfs of the data folder says from now on (the test changes ``free``)."""
    space = {"free": free_mb * MB}

    async def disk_space() -> tuple[int, int]:
        return int(space["free"]), 16_000 * MB

    monkeypatch.setattr(rig.journal, "disk_space", disk_space)
    return space


def _sample(text: bytes, name: str, **labels: str) -> float:
    return read_samples(text)[(name, frozenset(labels.items()))]


async def test_low_space_is_a_warning_in_health_and_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path) as rig:
        st = rig.station
        rig.hub.telemetry("b1", pilot=PilotState.B)
        rig.hub.telemetry("b2", door_closed=True)
        await rig.status("b1", "Available")
        await rig.status("b2", "Available")
        space = _fake_space(rig, monkeypatch, 150)  # default warning: below 200 MB
        await st.guard.check_space()
        h = health(st)
        assert h.ok  # a warning, not a failure: sessions are still recorded
        warning = next(w for w in h.warnings if w.code == "disk_low")
        assert warning.message.startswith("The station's storage is almost full (150 MB free)")
        assert h.body["storage"]["low_space"] is True
        text = await collector_for(st).render()
        assert _sample(text, "edge_station_journal_disk_low") == 1
        assert _sample(text, "edge_station_journal_disk_free_bytes") == 150 * MB
        assert (
            await st.commands.present_token("b1", "CARD-1")
        ).ok  # low, not full: still accepting
        space["free"] = 500 * MB
        await st.guard.check_space()
        assert not any(w.code == "disk_low" for w in health(st).warnings)
        assert _sample(await collector_for(st).render(), "edge_station_journal_disk_low") == 0


async def test_journal_blocked_is_unhealthy_until_it_writes_again(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        st = rig.station
        sid = await _charging(rig, "b1", "CARD-1", 1010)
        await _read_only(rig, True)
        assert not (await st.commands.stop_session(sid, StopReason.LOCAL)).ok
        h = health(st)
        assert not h.ok and "journal" in [r.code for r in h.reasons]
        assert h.body["storage"]["unwritten"] >= 1  # the stop (and what followed it)
        text = await collector_for(st).render()
        waiting = _sample(text, "edge_station_journal_unwritten_transitions")
        assert waiting == len(st.backlog) >= 1
        assert st.healthy()  # the watchdog must not restart the station for a full disk
        await _read_only(rig, False)
        await _unblocked(rig)
        h = health(st)
        assert h.ok and h.body["storage"]["unwritten"] == 0


async def test_reserve_is_real_space_spent_on_a_stop_and_made_again(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        st = rig.station
        reserve = tmp_path / RESERVE_FILE
        sid = await _charging(rig, "b1", "CARD-1", 1010)
        updates = st.events.subscribe(lossy=True)
        async with asyncio.timeout(5):
            while not reserve.exists():  # made by the guard's first check
                await updates.get()
        size = int(st.cfg.journal.emergency_reserve_mb * MB)
        assert reserve.stat().st_size == size
        assert os.stat(reserve).st_blocks * 512 >= size  # allocated, not a sparse file
        # The journal cannot write: the reserve is released for the stop (here it does not
        # help, the file system is read-only), and made again once writes work.
        await _read_only(rig, True)
        assert not (await st.commands.stop_session(sid, StopReason.LOCAL)).ok
        assert not reserve.exists() and st.guard.reserve_released
        text = await collector_for(st).render()
        assert _sample(text, "edge_station_journal_reserve_released") == 1
        await _read_only(rig, False)
        await _unblocked(rig)
        assert reserve.exists() and not st.guard.reserve_released
        row = await rig.journal.session(sid)
        assert row is not None and row["state"] == "closed"


async def test_meter_samples_stop_below_the_minimum_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path) as rig:
        st = rig.station
        await _charging(rig, "b1", "CARD-1", 1010)
        _fake_space(rig, monkeypatch, 10)  # below the default 50 MB for samples
        await st.guard.check_space()
        assert st.guard.samples_paused
        before = (await rig.journal.query("SELECT count(*) AS n FROM meter_minutes"))[0]["n"]
        for wh in range(1011, 1016):
            rig.hub.telemetry("b1", current_a=16, energy_wh=wh, relay_on=True)
            await rig.energy("b1", wh - 1000)
        await st.samples.flush()  # what the minute's write would do now
        after = (await rig.journal.query("SELECT count(*) AS n FROM meter_minutes"))[0]["n"]
        assert after == before
        text = await collector_for(st).render()
        assert _sample(text, "edge_station_meter_samples_skipped_total") >= 1
        # The session's energy checkpoint still goes in: it needs the space more than charts.
        row = await rig.journal.session(st.bays["b1"].state.session.session_id)  # type: ignore[union-attr]
        assert row is not None and row["meter_wh"] == 1015


def test_check_config_names_a_bad_journal_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "station.toml"
    cfg.write_text("[journal]\nretry_s = 0\n", encoding="utf-8")
    assert main(["check-config", str(cfg)]) == 2
    assert "journal.retry_s: Input should be greater than 0" in capsys.readouterr().err
    cfg.write_text("[journal]\nlow_space_mb = 10\nsamples_min_free_mb = 20\n", encoding="utf-8")
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "journal: samples_min_free_mb (20.0) is above low_space_mb (10.0)" in err


async def test_blocked_station_retries_at_its_interval_not_in_a_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path) as rig:
        st = rig.station
        rig.hub.telemetry("b1", pilot=PilotState.B)
        await rig.status("b1", "Available")
        monkeypatch.setattr(st.guard.cfg, "retry_s", 0.2)
        probes = 0
        real_probe = st.journal.probe

        async def counting_probe(at: float) -> None:
            nonlocal probes
            probes += 1
            await real_probe(at)

        monkeypatch.setattr(st.journal, "probe", counting_probe)
        await _read_only(rig, True)
        assert not (await st.commands.present_token("b1", "CARD-1")).ok
        t0 = asyncio.get_running_loop().time()
        await asyncio.sleep(1.0)  # a window to count retries in: one every 0.2 s
        elapsed = asyncio.get_running_loop().time() - t0
        assert 1 <= probes <= elapsed / 0.2 + 2, f"{probes} probes in {elapsed:.2f} s"
        await _read_only(rig, False)
        await _unblocked(rig)


async def test_unblocks_without_the_reserve_file_only_when_its_space_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path) as rig:
        st = rig.station
        rig.hub.telemetry("b1", pilot=PilotState.B)
        await rig.status("b1", "Available")
        monkeypatch.setattr(st.guard.cfg, "retry_s", 0.1)
        # The reserve the station made at start on the real disk is in place (no make of it
        # still under way, which would bring the file back after it is removed below).
        await asyncio.wait_for(st.guard.reserve_looked.wait(), 5)
        assert st.guard.reserve_in_place and (tmp_path / RESERVE_FILE).exists()
        space = _fake_space(rig, monkeypatch, 40)  # too little to make the reserve (2 + 50 MB)
        await st.guard.check_space()
        (tmp_path / RESERVE_FILE).unlink()
        # Writes fail, then work again with 40 MB free: enough, even without the file.
        await _read_only(rig, True)
        assert not (await st.commands.present_token("b1", "CARD-1")).ok
        await _read_only(rig, False)
        await _unblocked(rig)
        # With less free than the reserve would take, writes working is not enough.
        space["free"] = 1 * MB
        await _read_only(rig, True)
        assert not (await st.commands.present_token("b1", "CARD-1")).ok
        await _read_only(rig, False)
        await asyncio.sleep(0.5)  # several retries: each writes, none may unblock
        assert "journal" in st.safety.blockers and st.journal.writable
        space["free"] = 40 * MB
        await _unblocked(rig)
        assert (await st.commands.present_token("b1", "CARD-1")).ok
