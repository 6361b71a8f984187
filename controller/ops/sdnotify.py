"""systemd readiness and watchdog notifications, without any systemd library.

Owns the ``sd_notify(3)`` datagram protocol: newline-separated ``KEY=VALUE``
assignments sent as one ``AF_UNIX``/``SOCK_DGRAM`` datagram to the socket named
by ``$NOTIFY_SOCKET`` (a leading ``@`` means the Linux abstract namespace).
Outside systemd (``$NOTIFY_SOCKET`` unset) every call is a no-op, so the same
code runs on a developer's laptop, in tests and under ``edge-station.service``.

How the station uses it (``edge-station.service`` is ``Type=notify`` with
``WatchdogSec=``)::

    notifier = Notifier.from_env()
    async with asyncio.TaskGroup() as tg:
        ...open the journal, start the drivers and the HTTP UI...
        if (interval := watchdog_interval()) is not None:
            tg.create_task(watchdog_loop(notifier, interval, supervisor.healthy))
        notifier.ready()  # once; systemd then starts the kiosk
        await stop_requested.wait()  # set by the SIGTERM handler
        notifier.stopping()  # before the orderly shutdown, not after it
        ...park the bays, close the journal, cancel the group's tasks...

The watchdog pings come from the event loop itself: a loop that is blocked
(or a supervisor that reports itself unhealthy) stops pinging, and systemd
kills and restarts the service after ``WatchdogSec``.

Sending never blocks: the socket is non-blocking, and a failed send is logged
once (repeats stay quiet, recovery is logged once) and otherwise ignored;
losing a notification must never take the station down.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

import structlog

__all__ = ["Notifier", "watchdog_interval", "watchdog_loop"]

log = structlog.get_logger(__name__)


def _socket_address(raw: str) -> str | None:
    """Translate ``$NOTIFY_SOCKET`` into a Python ``AF_UNIX`` address, or None if unusable."""
    if raw.startswith("@"):
        # Abstract namespace: the kernel name starts with a NUL byte.
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    # systemd >= 254 may also hand out "vsock:CID:PORT"; not used on the station.
    return None


class Notifier:
    """Sends notifications to the service manager; does nothing when there is none.

    ``ready()`` is sent at most once per notifier: a second call is ignored, so
    a restart of some internal component cannot announce readiness again.
    """

    def __init__(self, socket_path: str | None) -> None:
        self._address = _socket_address(socket_path) if socket_path else None
        if socket_path and self._address is None:
            log.warning("sdnotify.unsupported_socket", notify_socket=socket_path)
        self._sock: socket.socket | None = None
        self._ready_sent = False
        self._failing = False

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, unset_environment: bool = False
    ) -> Notifier:
        """Build from ``$NOTIFY_SOCKET``; ``unset_environment`` hides it from child processes."""
        source = os.environ if env is None else env
        notifier = cls(source.get("NOTIFY_SOCKET") or None)
        if unset_environment and env is None:
            os.environ.pop("NOTIFY_SOCKET", None)
        return notifier

    @property
    def enabled(self) -> bool:
        """True when there is a service manager to talk to."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; True if the kernel took it."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            # BlockingIOError (a full receive queue) included: drop rather than wait.
            if not self._failing:
                self._failing = True
                log.warning("sdnotify.send_failed", error=str(exc))
            return False
        if self._failing:
            self._failing = False
            log.info("sdnotify.send_recovered")
        return True

    def ready(self) -> None:
        """Announce that the station is up (journal open, drivers started). Once only."""
        if self._ready_sent:
            log.debug("sdnotify.ready_repeated")
            return
        self._ready_sent = True
        self.notify("READY=1", "STATUS=running")

    def stopping(self) -> None:
        """Announce an orderly shutdown, so systemd does not treat it as a crash."""
        self.notify("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> None:
        """Free-form one-line status shown by ``systemctl status``."""
        self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> None:
        """Keep-alive ping: the service is healthy."""
        self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for more start/stop time (e.g. a long journal migration before READY)."""
        self.notify(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1_000_000))}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """``WatchdogSec`` in seconds if the watchdog is meant for this process, else None.

    Reads ``$WATCHDOG_USEC``; if ``$WATCHDOG_PID`` is set it must be our pid
    (a child that inherited the environment must not ping for its parent).
    """
    source = os.environ if env is None else env
    raw_usec = source.get("WATCHDOG_USEC")
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        log.warning("sdnotify.bad_watchdog_usec", value=raw_usec)
        return None
    if usec <= 0:
        return None
    raw_pid = source.get("WATCHDOG_PID")
    if raw_pid:
        try:
            if int(raw_pid) != os.getpid():
                return None
        except ValueError:
            log.warning("sdnotify.bad_watchdog_pid", value=raw_pid)
            return None
    return usec / 1_000_000


async def watchdog_loop(
    notifier: Notifier,
    interval: float,
    health_check: Callable[[], bool],
) -> None:
    """Ping the watchdog every ``interval / 2`` seconds while ``health_check()`` is True.

    ``interval`` is the full ``WatchdogSec`` (see :func:`watchdog_interval`).
    Runs until cancelled; returns at once when there is nobody to notify.
    The ping is sent from this coroutine, on the event loop: if the loop is
    blocked nothing is sent, which is the point. ``health_check`` must be quick
    and must not block; an exception in it counts as unhealthy.
    """
    if not notifier.enabled or interval <= 0:
        return
    period = interval / 2
    healthy = True
    while True:
        try:
            ok = bool(health_check())
        except Exception:
            log.exception("sdnotify.health_check_failed")
            ok = False
        if ok:
            if not healthy:
                log.info("sdnotify.watchdog_resumed")
                notifier.status("running")
            notifier.watchdog()
        elif healthy:
            log.error("sdnotify.watchdog_withheld", reason="unhealthy")
            notifier.status("unhealthy: watchdog pings withheld")
        healthy = ok
        await asyncio.sleep(period)
