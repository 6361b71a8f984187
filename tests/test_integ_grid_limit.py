"""The grid operator's control contact (§14a EnWG) on a GPIO pin, with gpiozero's MockFactory."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from controller.ops.metrics import MetricsCollector
from drivers.gpio.config import InputPin
from drivers.gpio.gridlimit import run_grid_limit_input
from tests.support.integ import audit_rows, running_station, until

PIN = 22
GPIO = {
    "pin_factory": "default",
    "grid_limit": {"pin": PIN, "active_high": False, "pull": "up", "debounce_s": 0.02},
}


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    previous = Device.pin_factory
    factory = MockFactory()
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = previous


async def test_the_contact_caps_the_site_at_4_2_kw_shown_audited_and_counted(
    tmp_path: Path, pins: MockFactory
) -> None:
    contact = pins.pin(PIN)  # pulled up: open
    async with running_station(tmp_path, n=2, gpio=GPIO) as (st, hub):
        b1, b2 = hub.nodes["b1"], hub.nodes["b2"]
        await b1.wait_output(lambda o: o[1] == 15.0, timeout=10)  # (32 - 2) / 2
        await b2.wait_output(lambda o: o[1] == 15.0, timeout=10)
        assert st.snapshots.station()["external"]["messages"] == []
        contact.drive_low()  # the control box closes its contact
        t0 = time.monotonic()
        # 4.2 kW over three phases at 230 V: 6.0 A per phase for all chargers together.
        await until(st, lambda: b1.setpoint_a + b2.setpoint_a <= 6.0)
        assert time.monotonic() - t0 < 1.5
        snap = st.snapshots.station()["external"]
        assert snap["grid_operator"] is True
        assert snap["messages"] == ["Limited by grid operator: the site may draw at most 4.2 kW."]
        text = (await MetricsCollector(st).render()).decode()
        assert "edge_station_grid_operator_limited 1.0" in text
        assert 'edge_station_external_limit_changes_total{kind="grid_operator_on"} 1.0' in text
        contact.drive_high()  # released
        await until(st, lambda: not st.snapshots.station()["external"]["grid_operator"])
        await b1.wait_output(lambda o: o[1] > 6.0, timeout=10)
        rows = await audit_rows(st, "external")
        assert st.load is not None and st.load.external is not None
        assert st.load.external.counts["grid_operator_on"] == 1
    on = [json.loads(r["detail"]) for r in rows if r["kind"] == "grid_operator_on"]
    assert on == [{"scope": "site", "source": "gpio", "old_a": None, "new_a": 6.0, "detail": ""}]
    assert [r["kind"] for r in rows].count("grid_operator_off") == 1


async def test_a_contact_closed_at_start_caps_from_the_first_step(
    tmp_path: Path, pins: MockFactory
) -> None:
    pins.pin(PIN).drive_low()
    async with running_station(tmp_path, n=1, gpio=GPIO) as (_st, hub):
        await hub.nodes["b1"].wait_output(lambda o: o[0])
        assert all(o[1] <= 6.0 for o in hub.nodes["b1"].outputs)


class _Gate:
    def __init__(self) -> None:
        self.seen: list[bool] = []
        self.reported = asyncio.Event()

    def grid_operator(self, source: str, active: bool) -> None:
        self.seen.append(active)
        self.reported.set()


async def test_an_unwatched_contact_counts_as_closed(pins: MockFactory) -> None:
    gate = _Gate()
    cfg = InputPin(pin=PIN, active_high=False, pull="up", debounce_s=0.02)
    task = asyncio.create_task(run_grid_limit_input(gate, cfg))  # type: ignore[arg-type]
    await asyncio.wait_for(gate.reported.wait(), 5)
    assert gate.seen == [False]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.seen == [False, True]
