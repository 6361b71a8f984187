"""A small disk for the simulated station's journal, and filling it (``sim disk full``).

``simulate --small-disk MB`` runs itself again inside a private mount namespace
(``unshare -m``, or ``unshare -rm`` without root: util-linux, no sudo) where a
tmpfs of MB is mounted over the journal's folder. Only that process sees the
tmpfs, so filling it fills nothing else. ``sim disk full`` writes a file there
until the disk says ENOSPC; ``sim disk free`` removes it. A journal folder on a
big disk is never filled: that would fill the developer's own disk.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

ENV_INSIDE = "EDGE_STATION_SIM_SMALL_DISK"
FILLER = "sim-disk-filler"
MAX_FILLABLE_BYTES = 1 << 30  # a disk bigger than this is somebody's real disk


class DiskError(RuntimeError):
    """The disk cannot be made or filled; the message says why in a sentence."""


def inside_small_disk() -> bool:
    return os.environ.get(ENV_INSIDE) == "1"


def run_on_small_disk(argv: list[str], mountpoint: Path, mb: int) -> NoReturn:
    """Become ``argv`` (this command again) with a tmpfs of ``mb`` MB over ``mountpoint``.

    The process replaces itself (same pid, so a supervisor or a test still holds it)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    unshare = shutil.which("unshare")
    if unshare is None:
        raise DiskError("--small-disk needs the unshare tool (Debian package util-linux).")
    prefix = [unshare, "-m"] if os.geteuid() == 0 else [unshare, "-rm"]
    script = (
        'mount -t tmpfs -o "size=$1m" edge-sim "$2" || { echo "Cannot mount a small disk for '
        'the journal here: run without --small-disk." >&2; exit 97; }; shift 2; exec "$@"'
    )
    env = {**os.environ, ENV_INSIDE: "1"}
    os.execve(unshare, [*prefix, "sh", "-c", script, "sh", str(mb), str(mountpoint), *argv], env)


def this_command() -> list[str]:
    """How to run this very command again (the ``edge-station`` script, or ``python -m``)."""
    if os.access(sys.argv[0], os.X_OK) and not sys.argv[0].endswith(".py"):
        return [sys.argv[0], *sys.argv[1:]]
    return [sys.executable, "-m", "controller.cli.main", *sys.argv[1:]]


def fill(folder: Path) -> int:
    """Write zeros into ``folder`` until its disk is full; returns the bytes written."""
    st = os.statvfs(folder)
    size = st.f_blocks * st.f_frsize
    if size > MAX_FILLABLE_BYTES:
        raise DiskError(
            f"The journal's folder {folder} is on a disk of {size / 1e9:.0f} GB: filling it "
            "would fill your own disk. Start simulate with --small-disk MB to fill a disk of "
            "its own."
        )
    fd = os.open(folder / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    chunk = b"\0" * 65536
    written = 0
    try:
        while True:
            try:
                written += os.write(fd, chunk)
            except OSError as err:
                if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                if len(chunk) == 1:
                    return written
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)


def free(folder: Path) -> int:
    """Remove the filler; returns the bytes given back (0: the disk was not filled)."""
    path = folder / FILLER
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    path.unlink()
    return size


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize
