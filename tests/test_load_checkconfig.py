"""``edge-station check-config`` on load-management mistakes, as an installer runs it.

Each refusal names what to fix (the bay, the field, the meter) and why; the
corrected file passes.
"""

from __future__ import annotations

from pathlib import Path

from tests.test_config import check_config_cli, write

BASE = """
[station]
id = "site-7"

[[buses]]
id = "rs485"
port = "/dev/edge-bays0"

[[bays]]
id = "garage-left"
connector = 1
bus = "rs485"
address = 1
max_current_a = 16
phases = 1
{phase}

[site]
main_limit_a = 40
{site}

[[meters]]
name = "grid"
map = "{meter}"
role = "grid"
poll_interval_s = 0.5
bus = {{ transport = "tcp", host = "127.0.0.1", port = 1502 }}
"""


def config(
    tmp: Path, *, phase: str = 'phase = "L1"', site: str = "", meter: str = "sdm630"
) -> Path:
    return write(tmp, BASE.format(phase=phase, site=site, meter=meter))


def test_the_base_config_is_valid(tmp_path: Path) -> None:
    ok = check_config_cli(config(tmp_path))
    assert ok.returncode == 0, ok.stderr


def test_a_single_phase_bay_without_phase_is_named(tmp_path: Path) -> None:
    bad = check_config_cli(config(tmp_path, phase=""))
    assert bad.returncode == 2, bad.stdout
    assert "bays[0]" in bad.stderr and "'garage-left' is single-phase" in bad.stderr
    assert 'phase = "L1", "L2" or "L3"' in bad.stderr
    auto = check_config_cli(config(tmp_path, phase='phase = "auto"'))
    assert auto.returncode == 2 and "bays[0].phase" in auto.stderr, auto.stderr


def test_timers_below_their_safe_minimum_are_refused_with_the_reason(tmp_path: Path) -> None:
    bad = check_config_cli(config(tmp_path, site="min_on_time_s = 0\nmin_off_time_s = 0"))
    assert bad.returncode == 2, bad.stdout
    assert "site.min_on_time_s: 0 s is below the safe minimum of 30 s" in bad.stderr
    assert "site.min_off_time_s: 0 s" in bad.stderr  # every short timer at once
    assert "flap" in bad.stderr and "Traceback" not in bad.stderr
    fast = check_config_cli(config(tmp_path, site="increase_delay_s = 0"))
    assert "site.increase_delay_s: 0 s is below the safe minimum of 1 s" in fast.stderr
    ok = check_config_cli(config(tmp_path, site="min_on_time_s = 30\nmin_off_time_s = 30"))
    assert ok.returncode == 0, ok.stderr


def test_a_single_phase_grid_meter_needs_a_single_phase_site(tmp_path: Path) -> None:
    bad = check_config_cli(config(tmp_path, meter="sdm120"))
    assert bad.returncode == 2, bad.stdout
    assert "meters[0].map: grid meter 'grid' (sdm120) reads no current on L2, L3" in bad.stderr
    assert "[site] phases = 1" in bad.stderr
    ok = check_config_cli(config(tmp_path, meter="sdm120", site="phases = 1"))
    assert ok.returncode == 0, ok.stderr


def test_a_single_phase_site_refuses_bays_on_other_phases(tmp_path: Path) -> None:
    bad = check_config_cli(
        config(tmp_path, phase='phase = "L2"', meter="sdm120", site="phases = 1")
    )
    assert bad.returncode == 2, bad.stdout
    assert "bay 'garage-left' is wired to L2, but the site is single-phase" in bad.stderr
