"""A real mosquitto for tests: a free loopback port, a generated config, password file and ACL.

The ACL is the shipped sample (``systemd/mosquitto/acl``), so the tests check
it too. ``start``/``stop``/``restart`` are blocking (call them through
``asyncio.to_thread`` inside a test); readiness is the broker's own
"running" log line, not a sleep. Persistence is on, as in the sample config,
so a restart keeps retained messages and the controller's session.

Usage::

    with Mosquitto(tmp_path, users={"controller": "pw", "bay1": "pw1"}) as broker:
        broker.port, broker.restart(), broker.kill()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE_ACL = REPO / "systemd" / "mosquitto" / "acl"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def available() -> bool:
    return os.access(MOSQUITTO, os.X_OK) and os.access(MOSQUITTO_PASSWD, os.X_OK)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BrokerError(RuntimeError):
    pass


class Mosquitto:
    def __init__(
        self,
        directory: Path,
        users: Mapping[str, str],
        *,
        port: int | None = None,
        acl: str | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.dir = Path(directory)
        self.users = dict(users)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self.conf = self.dir / "mosquitto.conf"
        self.passwd = self.dir / "passwd"
        self.acl = self.dir / "acl"
        self.data = self.dir / "data"
        self.log: list[str] = []
        self._acl_text = acl if acl is not None else SAMPLE_ACL.read_text(encoding="utf-8")
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lines = threading.Condition()
        self.starts = 0

    # ------------------------------------------------------------------ files

    def write_files(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(exist_ok=True)
        self.passwd.write_text("", encoding="utf-8")
        for user, password in self.users.items():
            subprocess.run(
                [MOSQUITTO_PASSWD, "-b", str(self.passwd), user, password],
                check=True,
                capture_output=True,
            )
        self.passwd.chmod(0o600)
        self.acl.write_text(self._acl_text, encoding="utf-8")
        self.acl.chmod(0o600)
        self.conf.write_text(
            "\n".join(
                [
                    # As root mosquitto would switch to its own user, who cannot read tmp_path.
                    *(["user root"] if os.geteuid() == 0 else []),
                    "per_listener_settings false",
                    "allow_anonymous false",
                    f"password_file {self.passwd}",
                    f"acl_file {self.acl}",
                    f"listener {self.port} {self.host}",
                    "persistence true",
                    f"persistence_location {self.data}/",
                    "autosave_interval 1",
                    "max_queued_messages 10000",
                    "set_tcp_nodelay true",  # as the shipped sample
                    "log_dest stderr",  # unbuffered: readiness shows at once
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                    "connection_messages true",
                    "",
                ]
            ),
            encoding="utf-8",
        )

    # ------------------------------------------------------------------ process

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise BrokerError("not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        if not self.conf.exists():
            self.write_files()
        mark = len(self.log)
        proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._proc = proc
        self._reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._reader.start()
        ok = self.wait_log(" running", since=mark, timeout=self.start_timeout_s)
        if not ok:
            self.stop()
            raise BrokerError("mosquitto did not start:\n" + "\n".join(self.log[mark:]))
        self.starts += 1

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._lines:
                self.log.append(line.rstrip("\n"))
                self._lines.notify_all()
        with self._lines:
            self._lines.notify_all()

    def wait_log(self, needle: str, *, since: int = 0, timeout: float = 10.0) -> bool:
        """Block until a log line after index ``since`` contains ``needle`` (or the broker exits)."""

        def seen() -> bool:
            return any(needle in line for line in self.log[since:]) or (
                self._proc is not None and self._proc.poll() is not None
            )

        with self._lines:
            self._lines.wait_for(seen, timeout)
            return any(needle in line for line in self.log[since:])

    def stop(self) -> None:
        """Graceful stop (SIGTERM): mosquitto saves its persistence database."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Crash stop (SIGKILL): nothing saved since the last autosave."""
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def require_mosquitto() -> None:
    if not available():
        pytest.skip("mosquitto is not installed (./dev.sh test installs the Debian package)")


@contextlib.contextmanager
def broker(directory: Path, users: Mapping[str, str]) -> Iterator[Mosquitto]:
    require_mosquitto()
    with Mosquitto(directory, users) as b:
        yield b
