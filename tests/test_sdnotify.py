"""controller.ops.sdnotify against a real AF_UNIX datagram socket standing in for systemd.

A receiver thread timestamps every datagram as it arrives, so a test can tell
when a ping was *sent* even while the event loop under test is blocked.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

from controller.ops.sdnotify import Notifier, watchdog_interval, watchdog_loop

WATCHDOG = "WATCHDOG=1"


class Receiver:
    """What systemd does with NOTIFY_SOCKET: bind a datagram socket and read it."""

    def __init__(self, address: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.02)
        self.received: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._loop = loop
        self._queue: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-systemd", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            item = (time.monotonic(), data.decode())
            with self._lock:
                self.received.append(item)
            if self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
                except RuntimeError:  # loop closed at teardown
                    return

    def snapshot(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.received)

    def messages(self) -> list[str]:
        return [text for _, text in self.snapshot()]

    async def next(self, prefix: str = "", timeout: float = 2.0) -> tuple[float, str]:
        """The next datagram starting with ``prefix`` (earlier others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                item = await self._queue.get()
                if item[1].startswith(prefix):
                    return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[str]:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="sdn-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def receiver(short_dir: str) -> AsyncIterator[tuple[Receiver, Notifier]]:
    path = os.path.join(short_dir, "notify")
    recv = Receiver(path, asyncio.get_running_loop())
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    yield recv, notifier
    notifier.close()
    recv.close()


# ----------------------------------------------------------------------- no systemd


async def test_everything_is_a_noop_without_notify_socket() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False
    notifier.ready()
    notifier.watchdog()
    notifier.status("x")
    notifier.stopping()
    # Returns at once instead of looping forever.
    async with asyncio.timeout(1):
        await watchdog_loop(notifier, 0.2, lambda: True)


def test_unsupported_socket_disables_notifications() -> None:
    notifier = Notifier("vsock:2:1234")
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False


def test_from_env_can_hide_the_socket_from_children(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    notifier = Notifier.from_env(unset_environment=True)
    assert notifier.enabled
    assert "NOTIFY_SOCKET" not in os.environ


# ----------------------------------------------------------------------- the protocol


async def test_ready_is_sent_exactly_once(receiver: tuple[Receiver, Notifier]) -> None:
    recv, notifier = receiver
    notifier.ready()
    notifier.ready()
    notifier.stopping()
    _, first = await recv.next()
    assert first.split("\n") == ["READY=1", "STATUS=running"]
    # Datagrams on a UNIX socket keep their order: once STOPPING is here,
    # a second READY would have arrived before it.
    await recv.next("STOPPING=1")
    ready = [m for m in recv.messages() if "READY=1" in m.split("\n")]
    assert len(ready) == 1


async def test_status_is_one_line(receiver: tuple[Receiver, Notifier]) -> None:
    recv, notifier = receiver
    notifier.status("bay 1 faulted\nbay 2 ok")
    _, text = await recv.next("STATUS=")
    assert text == "STATUS=bay 1 faulted bay 2 ok"


async def test_extend_timeout(receiver: tuple[Receiver, Notifier]) -> None:
    recv, notifier = receiver
    notifier.extend_timeout(30)
    _, text = await recv.next()
    assert text == "EXTEND_TIMEOUT_USEC=30000000"


async def test_abstract_namespace_socket() -> None:
    name = f"edge-station-test-{os.getpid()}-{time.monotonic_ns()}"
    recv = Receiver("\0" + name, asyncio.get_running_loop())
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
    try:
        notifier.watchdog()
        _, text = await recv.next()
        assert text == WATCHDOG
    finally:
        notifier.close()
        recv.close()


# ----------------------------------------------------------------------- failures


def test_send_failure_is_logged_once_then_recovery(short_dir: str) -> None:
    path = os.path.join(short_dir, "notify")
    notifier = Notifier(path)  # nobody listens yet
    with structlog.testing.capture_logs() as logs:
        assert notifier.notify(WATCHDOG) is False
        assert notifier.notify(WATCHDOG) is False
        assert notifier.notify(WATCHDOG) is False
        recv = Receiver(path)
        try:
            assert notifier.notify(WATCHDOG) is True
        finally:
            recv.close()
            notifier.close()
    events = [entry["event"] for entry in logs]
    assert events == ["sdnotify.send_failed", "sdnotify.send_recovered"]


def test_sending_never_blocks_when_the_manager_does_not_read(short_dir: str) -> None:
    path = os.path.join(short_dir, "notify")
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.bind(path)  # bound, never read: its queue fills up
    notifier = Notifier(path)
    try:
        start = time.monotonic()
        results = [notifier.notify(WATCHDOG) for _ in range(5000)]
        elapsed = time.monotonic() - start
    finally:
        notifier.close()
        stuck.close()
    assert results[0] is True
    assert False in results, "the receive queue never filled up; the test proves nothing"
    assert elapsed < 1.0


# ----------------------------------------------------------------------- watchdog interval


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "200000"}, 0.2),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}, 10.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "ten"}, None),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "me"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected


# ----------------------------------------------------------------------- watchdog loop


async def test_watchdog_pings_at_half_the_interval(receiver: tuple[Receiver, Notifier]) -> None:
    recv, notifier = receiver
    interval = watchdog_interval({"WATCHDOG_USEC": "200000"})
    assert interval == 0.2
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(watchdog_loop(notifier, interval, lambda: True))
        pings = [await recv.next(WATCHDOG) for _ in range(11)]
        task.cancel()
    times = [at for at, _ in pings]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    mean = (times[-1] - times[0]) / len(gaps)
    assert 0.09 <= mean <= 0.13, f"mean period {mean:.3f}s, expected ~0.1s"
    # What systemd checks: never a gap as long as WatchdogSec.
    assert max(gaps) < interval, f"gaps {gaps}"


async def test_no_ping_while_the_event_loop_is_blocked(
    receiver: tuple[Receiver, Notifier],
) -> None:
    recv, notifier = receiver
    window: list[float] = []

    def block_the_loop() -> None:
        window.append(time.monotonic())
        time.sleep(0.5)  # what a blocking call on the loop looks like
        window.append(time.monotonic())

    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(watchdog_loop(notifier, 0.2, lambda: True))
        await recv.next(WATCHDOG)
        # Right after a ping: the next one is due ~0.1 s later, inside the block.
        await recv.next(WATCHDOG)
        loop.call_soon(block_the_loop)
        resumed_at, _ = await recv.next(WATCHDOG)
        task.cancel()
    start, end = window
    during = [at for at, text in recv.snapshot() if text == WATCHDOG and start < at < end]
    assert during == [], "a ping was sent while the event loop was blocked"
    assert end <= resumed_at < end + 0.2, "pings did not resume once the loop was free"


async def test_no_ping_while_unhealthy(receiver: tuple[Receiver, Notifier]) -> None:
    recv, notifier = receiver
    healthy = False
    calls = 0

    def health_check() -> bool:
        nonlocal calls
        calls += 1
        return healthy

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(watchdog_loop(notifier, 0.2, health_check))
        await recv.next("STATUS=unhealthy")
        # Several periods (0.1 s each) without a single ping.
        with pytest.raises(TimeoutError):
            await recv.next(WATCHDOG, timeout=0.45)
        assert calls >= 4
        healthy = True
        await recv.next(WATCHDOG, timeout=0.5)
        await recv.next(WATCHDOG, timeout=0.5)
        healthy = False
        await recv.next("STATUS=unhealthy", timeout=0.5)
        with pytest.raises(TimeoutError):
            await recv.next(WATCHDOG, timeout=0.35)
        task.cancel()
    statuses = [m for m in recv.messages() if m.startswith("STATUS=")]
    assert statuses == [
        "STATUS=unhealthy: watchdog pings withheld",
        "STATUS=running",
        "STATUS=unhealthy: watchdog pings withheld",
    ]


async def test_a_failing_health_check_counts_as_unhealthy(
    receiver: tuple[Receiver, Notifier],
) -> None:
    recv, notifier = receiver

    def health_check() -> bool:
        raise RuntimeError("supervisor state unreadable")

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(watchdog_loop(notifier, 0.2, health_check))
        await recv.next("STATUS=unhealthy")
        with pytest.raises(TimeoutError):
            await recv.next(WATCHDOG, timeout=0.35)
        task.cancel()
