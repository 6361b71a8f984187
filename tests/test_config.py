"""Config loading and ``edge-station check-config``: a bad config names the field and what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.core.config import ConfigError, config_warnings, load_config

GOOD = """
[station]
id = "site-7"
data_dir = "state"

[[buses]]
id = "rs485"
port = "/dev/edge-bays0"

[[bays]]
id = "bay1"
connector = 1
bus = "rs485"
address = 1
max_current_a = 32
"""


def write(tmp: Path, text: str) -> Path:
    p = tmp / "station.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.bays[0].node_id == "bay1"
    assert cfg.bays[0].min_current_a == 6.0
    assert cfg.station.data_dir == (tmp_path / "state").resolve()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("max_current_a = 32", "max_current_a = 4"),
            "bays[0]: max_current_a (4.0) is below min_current_a (6.0)",
        ),
        (GOOD.replace('bus = "rs485"', 'bus = "nope"'), "bays[0].bus: unknown bus 'nope'"),
        (GOOD.replace("connector = 1", "connector = 0"), "bays[0].connector: Input should be"),
        (GOOD + "\n[tariff]\nper_kwh = -1\n", "tariff.per_kwh: Input should be"),
        (GOOD + "\n[surprise]\nx = 1\n", "surprise: Extra inputs are not permitted"),
        (GOOD.replace("[station]", "[station"), "TOML syntax"),
        (GOOD + "\n[[bays]]" + GOOD.split("[[bays]]")[1], "bays: duplicate 'bay1'"),
    ],
)
def test_bad_config_names_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_binary_garbage_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "station.toml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)


def check_config_cli(path: Path) -> subprocess.CompletedProcess[str]:
    """``edge-station check-config PATH`` in a fresh process, as an installer runs it."""
    return subprocess.run(
        [sys.executable, "-m", "controller.cli.main", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_cli(tmp_path: Path) -> None:
    ok = check_config_cli(write(tmp_path, GOOD))
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    bad = check_config_cli(
        write(tmp_path, GOOD.replace("max_current_a = 32", 'max_current_a = "lots"'))
    )
    assert bad.returncode == 2
    assert "bays[0].max_current_a" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_check_config_proves_safe_shares(tmp_path: Path) -> None:
    """Safe shares that the guaranteed headroom cannot carry are refused, naming circuit and phase."""
    site = "\n[site]\nmain_limit_a = 63\nmain_guaranteed_headroom_a = 10\n"
    two_bays = GOOD.replace("max_current_a = 32", "max_current_a = 32\nsafe_current_a = 6") + (
        '\n[[bays]]\nid = "bay2"\nconnector = 2\nbus = "rs485"\naddress = 2\nsafe_current_a = 6\n'
    )
    bad = check_config_cli(write(tmp_path, two_bays + site))
    assert bad.returncode == 2, bad.stdout
    assert "safe shares" in bad.stderr and "L1" in bad.stderr and "12" in bad.stderr
    ok_site = site.replace("headroom_a = 10", "headroom_a = 12")
    ok = check_config_cli(write(tmp_path, two_bays + ok_site))
    assert ok.returncode == 0, ok.stderr


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_refused(path: Path, expected: str) -> None:
    """``check-config`` and ``run`` both name the problem and exit 2, without a traceback."""
    for args in (("check-config", str(path)), ("run", "--config", str(path))):
        out = run_cli(*args)
        assert out.returncode == 2, (args, out.returncode, out.stdout[-500:], out.stderr[-2000:])
        assert "Traceback" not in out.stderr + out.stdout, out.stderr[-2000:]
        assert expected in out.stderr, (args, out.stderr)


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing here yet\n"])
def test_an_empty_config_is_refused(tmp_path: Path, text: str) -> None:
    assert_refused(write(tmp_path, text), "the file is empty")


def test_a_config_without_bays_is_refused(tmp_path: Path) -> None:
    no_bays = GOOD.split("[[bays]]")[0]
    assert_refused(write(tmp_path, no_bays), "bays: no bay is configured")


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a folder")
    assert_refused(write(tmp_path, GOOD), "station.data_dir: ")
    out = run_cli("check-config", str(tmp_path / "station.toml"))
    assert "is a file, not a folder" in out.stderr
    (tmp_path / "state").unlink()
    (tmp_path / "blocker").write_text("")
    cfg = write(tmp_path, GOOD.replace('data_dir = "state"', 'data_dir = "blocker/state"'))
    assert_refused(cfg, "cannot be created")


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write to: a read-only mount as root, else mode 0555."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)


def test_a_read_only_data_dir_is_refused(tmp_path: Path, read_only_dir: Path) -> None:
    cfg = write(tmp_path, GOOD.replace('data_dir = "state"', f'data_dir = "{read_only_dir}"'))
    assert_refused(cfg, f"station.data_dir: {read_only_dir} is not writable")
    missing = read_only_dir / "journal"
    cfg = write(tmp_path, GOOD.replace('data_dir = "state"', f'data_dir = "{missing}"'))
    assert_refused(cfg, "cannot be created")


def test_a_fresh_data_dir_is_fine(tmp_path: Path) -> None:
    cfg = write(tmp_path, GOOD.replace('data_dir = "state"', 'data_dir = "var/lib/station"'))
    out = run_cli("check-config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "var").exists()  # checking creates nothing


def _bus(**fields: object) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in fields.items())
    return GOOD.replace('port = "/dev/edge-bays0"\n', f'port = "/dev/edge-bays0"\n{extra}')


def test_a_bus_takes_its_poll_and_telemetry_periods(tmp_path: Path) -> None:
    default = load_config(write(tmp_path, GOOD)).buses[0]
    assert (default.poll_period_s, default.telemetry_period_s) == (0.2, 1.0)
    bus = load_config(write(tmp_path, _bus(poll_period_s=1, telemetry_period_s=1))).buses[0]
    assert (bus.poll_period_s, bus.telemetry_period_s) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"poll_period_s": 0}, "buses[0].poll_period_s: Input should be greater than or equal"),
        ({"poll_period_s": 11}, "buses[0].poll_period_s: Input should be less than or equal"),
        ({"telemetry_period_s": 0.05}, "buses[0].telemetry_period_s: Input should be greater"),
        (
            {"poll_period_s": 2, "telemetry_period_s": 1},
            "buses[0].poll_period_s: bus 'rs485' polls every 2 s, but its nodes are to report "
            "telemetry every 1 s",
        ),
        (
            {"poll_period_s": 4, "telemetry_period_s": 4},
            "buses[0].poll_period_s: bus 'rs485' polls every 4 s, too seldom for the "
            "host_timeout_s of the bus of 10 s, which must span 3 polls",
        ),
        (
            {"poll_period_s": 2, "telemetry_period_s": 2},
            "too seldom for the timers.lease_s of 5 s, which must span 3 polls so that one "
            "missed poll does not let it lapse; poll at least every 1.67 s",
        ),
    ],
)
def test_a_poll_period_the_timers_cannot_outlast_is_refused(
    tmp_path: Path, fields: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, _bus(**fields)))
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_a_node_offline_time_shorter_than_a_poll_is_refused(tmp_path: Path) -> None:
    text = _bus(poll_period_s=1.5, telemetry_period_s=1.5) + "\n[timers]\nnode_offline_s = 2\n"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert err.value.problems == [
        "(top): buses[0].poll_period_s: bus 'rs485' polls every 1.5 s, so timers.node_offline_s "
        "(2 s) would declare a healthy node offline between two polls; it must exceed 2.25 s"
    ]


def test_a_poll_period_on_a_bus_that_is_not_polled_is_a_warning(tmp_path: Path) -> None:
    text = _bus(poll_period_s=0.5).replace('id = "rs485"', 'id = "rs485"\ntransport = "mqtt"', 1)
    cfg = load_config(write(tmp_path, text))
    assert config_warnings(cfg) == [
        "buses[0].poll_period_s: bus 'rs485' uses transport 'mqtt', whose nodes are not "
        "polled: the setting applies to serial buses only"
    ]
    assert config_warnings(load_config(write(tmp_path, _bus(poll_period_s=0.5)))) == []
