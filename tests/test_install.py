"""systemd/install.sh and uninstall.sh into a throwaway root (DESTDIR).

The scripts run for real (systemd-sysusers and systemd-tmpfiles write the
accounts and folders into the throwaway root); only apt, pip and the live
systemctl/udevadm calls are left out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_systemd_units import KIOSK_OFFLINE_PAGE

REPO = Path(__file__).resolve().parent.parent
SYSTEMD_DIR = REPO / "systemd"
SCRIPTS = [SYSTEMD_DIR / "install.sh", SYSTEMD_DIR / "uninstall.sh"]

UNITDIR = "usr/local/lib/systemd/system"


# ----------------------------------------------------------------------- static checks (fast)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_syntax(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
    subprocess.run(["sh", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    result = subprocess.run(
        [shellcheck, "-s", "sh", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_shellcheck_dev_sh() -> None:
    """The set-up script every fresh machine runs first is a bash script: checked as one."""
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    result = subprocess.run(
        [shellcheck, "-s", "bash", str(REPO / "dev.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_unknown_option_is_refused(script: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(script), "--frobnicate"],
        env={**os.environ, "DESTDIR": str(tmp_path / "root")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr


# ----------------------------------------------------------------------- helpers


def _need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian: apt-get install systemd)")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The source tree to install from: the repo, or a copy when the sample config is missing."""
    if (SYSTEMD_DIR / "station.example.toml").exists():
        return REPO
    # The sample is the lead's file; until it lands, install from a copy with a stand-in.
    staged = tmp_path / "src"
    shutil.copytree(SYSTEMD_DIR, staged / "systemd")
    (staged / "systemd" / "station.example.toml").write_text(
        '[station]\ndata_dir = "/var/lib/edge-station"\n'
    )
    return staged


def _run(script: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESTDIR": str(root), "PYTHON": sys.executable}
    result = subprocess.run(
        [str(script), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _install(source: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(source / "systemd" / "install.sh", root, "--no-apt", "--no-pip", *args)


def _uninstall(source: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(source / "systemd" / "uninstall.sh", root, *args)


def _tree(root: Path) -> dict[str, tuple[str, int, int, int, str]]:
    """Path -> (kind, mode, uid, gid, content hash or link target); mtimes left out."""
    out: dict[str, tuple[str, int, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                kind, detail = "link", os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                kind, detail = "dir", ""
            else:
                kind, detail = "file", hashlib.sha256(path.read_bytes()).hexdigest()
            rel = str(path.relative_to(root))
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, detail)
    return out


def _ids(root: Path, table: str) -> dict[str, tuple[int, list[str]]]:
    """Name -> (id, members) from the throwaway root's etc/passwd or etc/group."""
    out: dict[str, tuple[int, list[str]]] = {}
    for line in (root / "etc" / table).read_text().splitlines():
        fields = line.split(":")
        members = fields[3].split(",") if table == "group" and fields[3] else []
        out[fields[0]] = (int(fields[2]), members)
    return out


# ----------------------------------------------------------------------- install


@pytest.mark.long
def test_install_into_a_throwaway_root(source: Path, tmp_path: Path) -> None:
    _need("systemd-sysusers", "systemd-tmpfiles")
    root = tmp_path / "root"
    _install(source, root, "--no-systemctl")

    for unit in ("edge-station.service", "edge-station-kiosk.service"):
        installed = root / UNITDIR / unit
        assert installed.read_bytes() == (source / "systemd" / unit).read_bytes()
        assert stat.S_IMODE(installed.stat().st_mode) == 0o644
    assert (root / "usr/local/lib/sysusers.d/edge-station.conf").is_file()
    assert (root / "usr/local/lib/tmpfiles.d/edge-station.conf").is_file()
    assert (root / "etc/udev/rules.d/99-edge-station.rules").read_bytes() == (
        source / "systemd/99-edge-station.rules"
    ).read_bytes()
    assert (root / "opt/edge-station/venv/bin/python").exists()
    assert (root / "opt/edge-station/station.example.toml").is_file()
    watchdog = root / "usr/local/lib/systemd/system.conf.d/edge-station-watchdog.conf"
    assert "\nRuntimeWatchdogSec=14s\n" in watchdog.read_text()  # GPIO relays rely on it
    offline = root / KIOSK_OFFLINE_PAGE.lstrip("/")  # the kiosk unit's first page
    assert offline.read_bytes() == (source / "systemd/kiosk-offline.html").read_bytes()
    assert stat.S_IMODE(offline.stat().st_mode) == 0o644

    users, groups = _ids(root, "passwd"), _ids(root, "group")
    station_uid, station_gid = users["edge-station"][0], groups["edge-station"][0]
    assert "kiosk" in users
    for group in ("dialout", "gpio", "video"):
        assert "edge-station" in groups[group][1], group
    for group in ("video", "render", "input"):
        assert "kiosk" in groups[group][1], group

    config = root / "etc/edge-station/station.toml"
    assert config.read_bytes() == (source / "systemd/station.example.toml").read_bytes()
    st = config.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, station_gid)
    st = (root / "etc/edge-station").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 0, station_gid)
    st = (root / "var/lib/edge-station").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, station_uid, station_gid)
    st = (root / "var/lib/edge-station-kiosk").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, users["kiosk"][0])


@pytest.mark.long
def test_install_twice_gives_the_same_tree(source: Path, tmp_path: Path) -> None:
    _need("systemd-sysusers", "systemd-tmpfiles")
    root = tmp_path / "root"
    _install(source, root, "--no-systemctl")
    first = _tree(root)
    _install(source, root, "--no-systemctl")
    assert _tree(root) == first


@pytest.mark.long
def test_reinstall_keeps_site_config_and_repairs_the_rest(source: Path, tmp_path: Path) -> None:
    _need("systemd-sysusers", "systemd-tmpfiles")
    root = tmp_path / "root"
    _install(source, root, "--no-systemctl")
    config = root / "etc/edge-station/station.toml"
    rules = root / "etc/udev/rules.d/99-edge-station.rules"
    unit = root / UNITDIR / "edge-station.service"
    config.write_text('[station]\nid = "site-42"\n')
    rules.write_text('SUBSYSTEM=="tty", SYMLINK+="edge-bays0"\n')
    unit.write_text("stale\n")
    journal = root / "var/lib/edge-station/journal.sqlite3"
    journal.write_bytes(b"sessions")
    config.chmod(0o644)

    result = _install(source, root, "--no-systemctl")

    assert config.read_text() == '[station]\nid = "site-42"\n'
    assert stat.S_IMODE(config.stat().st_mode) == 0o640, "secrets must not stay world-readable"
    assert rules.read_text() == 'SUBSYSTEM=="tty", SYMLINK+="edge-bays0"\n'
    assert unit.read_bytes() == (source / "systemd/edge-station.service").read_bytes()
    assert journal.read_bytes() == b"sessions"
    assert "kept existing /etc/edge-station/station.toml" in result.stdout


@pytest.mark.long
def test_install_enables_the_units_offline(source: Path, tmp_path: Path) -> None:
    """Without --no-systemctl, a DESTDIR install enables with `systemctl --root` (no daemon)."""
    _need("systemd-sysusers", "systemd-tmpfiles", "systemctl")
    root = tmp_path / "root"
    _install(source, root)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    for unit in ("edge-station.service", "edge-station-kiosk.service"):
        assert os.readlink(wants / unit) == f"/{UNITDIR}/{unit}"
    first = _tree(root)
    _install(source, root)
    assert _tree(root) == first

    _uninstall(source, root)
    assert not (wants / "edge-station.service").exists()
    assert not (wants / "edge-station-kiosk.service").exists()


@pytest.mark.long
def test_hardware_watchdog_can_be_left_out_and_goes_with_uninstall(
    source: Path, tmp_path: Path
) -> None:
    _need("systemd-sysusers", "systemd-tmpfiles")
    root = tmp_path / "root"
    watchdog = root / "usr/local/lib/systemd/system.conf.d/edge-station-watchdog.conf"
    boot = root / "boot/firmware/config.txt"
    boot.parent.mkdir(parents=True)
    boot.write_text("dtparam=audio=on\n")
    result = _install(source, root, "--no-systemctl")
    assert watchdog.is_file()
    assert "dtparam=strict_gpiod" in result.stdout  # the other half of a GPIO relay's failsafe
    _install(source, root, "--no-systemctl", "--no-hardware-watchdog")
    assert not watchdog.exists()
    _install(source, root, "--no-systemctl")
    _uninstall(source, root, "--no-systemctl")
    assert not watchdog.exists()


@pytest.mark.long
def test_install_without_kiosk(source: Path, tmp_path: Path) -> None:
    _need("systemd-sysusers", "systemd-tmpfiles")
    root = tmp_path / "root"
    _install(source, root, "--no-systemctl", "--no-kiosk")
    assert (root / UNITDIR / "edge-station.service").is_file()
    assert not (root / UNITDIR / "edge-station-kiosk.service").exists()
    assert not (root / KIOSK_OFFLINE_PAGE.lstrip("/")).exists()


# ----------------------------------------------------------------------- uninstall


@pytest.mark.long
def test_uninstall_keeps_journal_and_config_unless_purged(source: Path, tmp_path: Path) -> None:
    _need("systemd-sysusers", "systemd-tmpfiles")
    root = tmp_path / "root"
    _install(source, root, "--no-systemctl")
    journal = root / "var/lib/edge-station/journal.sqlite3"
    journal.write_bytes(b"sessions")

    _uninstall(source, root, "--no-systemctl")
    assert not (root / UNITDIR / "edge-station.service").exists()
    assert not (root / UNITDIR / "edge-station-kiosk.service").exists()
    assert not (root / "opt/edge-station").exists()
    assert not (root / "usr/local/lib/sysusers.d/edge-station.conf").exists()
    assert journal.read_bytes() == b"sessions"
    assert (root / "etc/edge-station/station.toml").is_file()
    assert (root / "etc/udev/rules.d/99-edge-station.rules").is_file()

    _uninstall(source, root, "--no-systemctl")  # again: nothing left to do, still fine

    _uninstall(source, root, "--no-systemctl", "--purge")
    for gone in (
        "etc/edge-station",
        "var/lib/edge-station",
        "var/lib/edge-station-kiosk",
        "etc/udev/rules.d/99-edge-station.rules",
    ):
        assert not (root / gone).exists(), gone
    # System accounts stay (Debian practice): files elsewhere may still carry their uids.
    assert "edge-station" in _ids(root, "passwd")
