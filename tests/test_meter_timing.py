"""Meter timing in check-config: a grid meter whose currents may age near the timeout is warned about."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.core.config import parse_config
from drivers.modbus import timing
from drivers.modbus.extension import EXTENSION
from drivers.modbus.maps import Quantity, load_map
from drivers.modbus.planner import plan_poll
from tests.test_config import GOOD, check_config_cli, write

SITE = "\n[site]\nmain_limit_a = 32\ngrid_meter_timeout_s = 3\n"
EM24 = """
[[meters]]
name = "{name}"
map = "em24"
role = "{role}"
poll_interval_s = {interval}
bus = {{ transport = "rtu", device = "/dev/ttyUSB0" }}
{extra}
"""
EVERYTHING = "every_poll = [" + ", ".join(f'"{q.value}"' for q in Quantity) + "]"


def em24(name: str = "grid", role: str = "grid", interval: float = 1.0, extra: str = "") -> str:
    return EM24.format(name=name, role=role, interval=interval, extra=extra)


def warnings(text: str) -> list[str]:
    import tomllib

    return EXTENSION.warnings(parse_config(tomllib.loads(text)))


def test_em24_figures() -> None:
    """The numbers behind the warning, at the documented 500 ms an answer and 9600 baud."""
    m = load_map("em24")
    link = timing.Link(9600, 3.5 * 11 / 9600)
    everything = plan_poll(m.resolved(), every_poll=None, max_registers=11)
    currents = plan_poll(
        m.resolved(),
        every_poll=(Quantity.CURRENT_L1, Quantity.CURRENT_L2, Quantity.CURRENT_L3),
        max_registers=11,
    )
    before = timing.poll_s(everything, 0.5, link)
    after = timing.poll_s(currents, 0.5, link)
    assert before == pytest.approx(3.2, abs=0.05)  # 6 requests: more than the 3 s timeout
    assert after == pytest.approx(1.09, abs=0.02)  # 2 requests
    assert timing.worst_age_s(1.0, before, 0.0) > 6.0
    worst = timing.worst_age_s(
        1.0, timing.fast_s(currents, 0.5, link), timing.slow_s(currents, 0.5, link)
    )
    assert worst == pytest.approx(2.09, abs=0.02) and worst < timing.WARN_FRACTION * 3.0


@pytest.mark.parametrize(
    ("meters", "warned"),
    [
        (em24(), False),
        (em24(extra=EVERYTHING), True),  # the old way: every register on every poll
        (em24(interval=2.0), True),
        (
            em24() + em24("pv", "pv", extra="unit_id = 2"),
            True,
        ),  # the PV meter's requests queue on the same line
        # With a PV meter its total power (the surplus) is read every poll too: 3 requests.
        (em24() + em24("pv", "pv", extra="unit_id = 2").replace("ttyUSB0", "ttyUSB1"), True),
        (
            em24(extra='every_poll = ["current_l1", "current_l2", "current_l3"]')
            + em24("pv", "pv", extra="unit_id = 2").replace("ttyUSB0", "ttyUSB1"),
            False,
        ),
    ],
)
def test_warning_when_the_grid_meter_may_age_near_the_timeout(meters: str, warned: bool) -> None:
    got = warnings(GOOD + SITE + meters)
    assert bool(got) is warned, got
    if warned:
        assert "'grid'" in got[0] and "grid_meter_timeout_s = 3 s" in got[0]
        assert "0.5 s as documented" in got[0]


def test_no_site_no_timeout_no_warning() -> None:
    assert warnings(GOOD + em24(extra=EVERYTHING)) == []


def test_check_config_prints_the_warning_and_still_accepts(tmp_path: Path) -> None:
    out = check_config_cli(write(tmp_path, GOOD + SITE + em24(extra=EVERYTHING)))
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout
    assert "warning: meters: grid meter 'grid' (em24)" in out.stderr
    assert "6 requests a poll" in out.stderr
    quiet = check_config_cli(write(tmp_path, GOOD + SITE + em24()))
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr
