"""Attacks on a running station's HTTP server, and what the tests measure meanwhile.

Used by tests/test_http_attacks.py and tests/bench/bench_http_attacks.py.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from types import TracebackType
from typing import Any

import psutil

from tests.support.charging import timed_get
from tests.support.procs import Proc

ATTACK_SOCKETS = 1500
ATTACK_S = 10.0


def poll_kiosk(url: str, until: threading.Event | float) -> tuple[list[float], int]:
    """Latencies of kiosk-state reads every 100 ms (fresh connection each) and the failures."""
    lat: list[float] = []
    failed = 0
    end = until if isinstance(until, float) else None
    while not (isinstance(until, threading.Event) and until.is_set()):
        if end is not None and time.monotonic() >= end:
            break
        t = timed_get(url)
        if t is None:
            failed += 1
        else:
            lat.append(t)
        time.sleep(0.1)
    return lat, failed


def run_slowloris(port: int, *, sockets: int = ATTACK_SOCKETS, seconds: float = ATTACK_S) -> Proc:
    attacker = Proc(
        [
            sys.executable,
            "-m",
            "tests.support.slowloris",
            "--port",
            str(port),
            "--sockets",
            str(sockets),
            "--seconds",
            str(seconds),
        ]
    )
    deadline = time.monotonic() + 20
    while not any(r.startswith("ATTACKING") for r in attacker.log.raw):
        assert time.monotonic() < deadline, attacker.log.raw[-10:]
        time.sleep(0.05)
    return attacker


def poll_kiosk_under_slowloris(port: int, url: str) -> tuple[list[float], int, dict[str, Any]]:
    """Kiosk latencies and failures while :func:`run_slowloris` runs, and the attacker's stats."""
    attacker = run_slowloris(port)
    done = threading.Event()

    def wait_attacker() -> None:
        attacker.popen.wait(ATTACK_S + 60)
        done.set()

    waiter = threading.Thread(target=wait_attacker)
    waiter.start()
    lat, failed = poll_kiosk(url, done)
    waiter.join()
    stats: dict[str, Any] = json.loads(attacker.log.raw[-1])
    return lat, failed, stats


def chunked_upload(port: int, path: str, total: int, chunk: int = 64 * 1024) -> tuple[int, bytes]:
    """Send ``total`` bytes as a chunked body; returns (bytes sent, the server's reply)."""
    sock = socket.create_connection(("127.0.0.1", port))
    reply = bytearray()

    def read() -> None:
        try:
            while data := sock.recv(65536):
                reply.extend(data)
        except OSError:
            pass

    reader = threading.Thread(target=read)
    reader.start()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: station\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: application/json\r\nCookie: es_csrf=t\r\nX-CSRF-Token: t\r\n\r\n"
    )
    sent = 0
    frame = f"{chunk:x}\r\n".encode() + b"x" * chunk + b"\r\n"
    try:
        sock.sendall(head.encode())
        while sent < total:
            sock.sendall(frame)
            sent += chunk
        sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server hung up: what we want
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    reader.join(30)
    sock.close()
    return sent, bytes(reply)


class RssPeak:
    """The resident memory of process ``pid`` before, and its peak while the block runs."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.before = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.every_s)

    def __enter__(self) -> RssPeak:
        self.before = self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
