"""Real processes for system tests: the node simulator and the controller, each in its own process.

The controller is started as ``edge-station run --config ...`` exactly as on a
Pi, so it can be killed with SIGKILL at any instant while the simulated nodes
(another process) keep their energy counters and their own failsafe.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
EDGE_STATION = str(Path(sys.executable).with_name("edge-station"))


KIOSK_HEADERS = {
    "content-type": "application/json",
    # The kiosk API wants the double-submit CSRF pair (cookie == header), as its page sends.
    "cookie": "es_csrf=test",
    "x-csrf-token": "test",
}


def kiosk_call(
    method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5.0
) -> tuple[int, dict[str, Any]]:
    """One JSON call to a station's HTTP API from another process; (0, {}) if nothing listens."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=KIOSK_HEADERS)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read() or b"{}")
    except OSError:
        return 0, {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LogWatcher:
    """Reads a process's JSON log lines on a thread; tests wait for a matching line."""

    def __init__(self, stream: IO[str], keep: int = 5000) -> None:
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self._keep = keep
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            with self._cond:
                self.raw.append(line.rstrip())
                try:
                    self.lines.append(json.loads(line))
                except ValueError:
                    pass
                del self.raw[: -self._keep]
                self._cond.notify_all()

    def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20.0, start: int = 0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self.lines):
                    if pred(self.lines[i]):
                        return self.lines[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(self.raw[-30:])
                    raise TimeoutError(f"log line not seen within {timeout} s; last lines:\n{tail}")
                self._cond.wait(left)

    def count(self, event: str) -> int:
        with self._cond:
            return sum(1 for ln in self.lines if ln.get("event") == event)


class Proc:
    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        full_env = {
            **os.environ,
            "EDGE_STATION_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        full_env.pop("NOTIFY_SOCKET", None)
        self.popen = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
            cwd=cwd or REPO,
            start_new_session=True,
        )
        assert self.popen.stdout is not None
        self.log = LogWatcher(self.popen.stdout)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)


def start_node_sim(
    directory: Path, nodes: int, kind: str = "evse", extra: Sequence[str] = ()
) -> Proc:
    """``edge-station sim-nodes``: the bays in their own process, as a developer runs them."""
    p = Proc(
        [
            EDGE_STATION,
            "sim-nodes",
            "--dir",
            str(directory),
            "--bays",
            str(nodes),
            "--kind",
            kind,
            *extra,
        ]
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(r.startswith("READY") for r in p.log.raw):
            return p
        if p.popen.poll() is not None:
            raise RuntimeError("node simulator exited:\n" + "\n".join(p.log.raw[-20:]))
        with p.log._cond:
            p.log._cond.wait(0.5)
    raise TimeoutError("node simulator not ready")


def write_station_config(
    path: Path,
    *,
    port_path: str,
    nodes: int,
    http_port: int,
    data_dir: Path,
    kind: str = "evse",
    safe_current_a: float = 0.0,
    extra: str = "",
) -> Path:
    bays = "\n".join(
        f"""
[[bays]]
id = "bay{i}"
connector = {i}
kind = "{kind}"
bus = "bays"
address = {i}
max_current_a = 16
safe_current_a = {safe_current_a}
"""
        for i in range(1, nodes + 1)
    )
    path.write_text(
        f"""
[station]
id = "test-station"
data_dir = "{data_dir}"

[http]
host = "127.0.0.1"
port = {http_port}

[auth]
free_vend = true

[timers]
lease_s = 5
connection_timeout_s = 600

[[buses]]
id = "bays"
transport = "serial"
port = "{port_path}"
host_timeout_s = 10
{bays}
{extra}
""",
        encoding="utf-8",
    )
    return path


def start_controller(config: Path) -> Proc:
    return Proc([EDGE_STATION, "run", "--config", str(config)])
