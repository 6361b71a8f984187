"""A small tmpfs that only the station under test sees: a disk that can be filled for real.

A holder process (``sleep``) is started in a private mount namespace where a
tmpfs of the given size is mounted over ``mountpoint``; commands run inside it
with ``nsenter``. As root that is ``unshare -m``; otherwise an unprivileged
user namespace comes with it (``unshare -rm``), so the test needs neither root
nor sudo on a fresh Debian machine (``util-linux`` has both tools).

From outside, the same files are reached through ``/proc/<holder>/root/...``
(plain file operations only: SQLite would resolve that link to the host's
path, so the journal is read from a copy, see :meth:`Tmpfs.copy_out`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path


class Tmpfs:
    def __init__(self, mountpoint: Path, size: str) -> None:
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.mountpoint = mountpoint
        self.root = os.geteuid() == 0
        unshare = ["unshare", "-m"] if self.root else ["unshare", "-rm"]
        self.holder = subprocess.Popen(
            [
                *unshare,
                "sh",
                "-c",
                'mount -t tmpfs -o "size=$1" edge-test "$2" && echo ready && exec sleep 86400',
                "sh",
                size,
                str(mountpoint),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "ready":
            err = self.holder.stderr.read() if self.holder.stderr else ""
            self.holder.kill()
            raise RuntimeError(f"cannot mount a tmpfs in a private namespace: {err.strip()}")

    def enter(self) -> list[str]:
        """The prefix that runs a command inside the namespace (it sees the tmpfs)."""
        pid = str(self.holder.pid)
        if self.root:
            return ["nsenter", "-t", pid, "-m"]
        return ["nsenter", "-t", pid, "-U", "-m", "--preserve-credentials"]

    def outside(self, *parts: str) -> Path:
        """A path on the tmpfs as this process reaches it (through the holder's root)."""
        inner = self.mountpoint.relative_to("/")
        return Path(f"/proc/{self.holder.pid}/root").joinpath(inner, *parts)

    def fill(self, name: str = "filler") -> int:
        """Write zeros until the disk is full; returns the bytes written."""
        fd = os.open(self.outside(name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        chunk = b"\0" * 65536
        written = 0
        try:
            while True:
                try:
                    written += os.write(fd, chunk)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    if len(chunk) == 1:
                        return written
                    chunk = chunk[: len(chunk) // 2]
        finally:
            os.close(fd)

    def free(self, name: str = "filler") -> None:
        """Give the space back."""
        with contextlib.suppress(FileNotFoundError):
            self.outside(name).unlink()

    def free_bytes(self) -> int:
        st = os.statvfs(self.outside())
        return st.f_bavail * st.f_frsize

    def copy_out(self, dest: Path, *names: str) -> None:
        """Copy files (the journal and its WAL) to the host, to open them with SQLite."""
        dest.mkdir(parents=True, exist_ok=True)
        for n in names:
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(self.outside(n), dest / n)

    def close(self) -> None:
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait(10)
        for stream in (self.holder.stdout, self.holder.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def tmpfs(mountpoint: Path, size: str) -> Iterator[Tmpfs]:
    fs = Tmpfs(mountpoint, size)
    try:
        yield fs
    finally:
        fs.close()
