"""The HTTP server's guard against slow and greedy clients: connection caps and request deadlines.

Uvicorn closes idle keep-alive connections, but it has no deadline for a
request's head or body (a client that trickles a byte now and then keeps its
connection for ever) and no cap on the connections of one client; each open
connection costs the station a file descriptor. :class:`ConnectionGate`
counts open connections, HTTP and upgraded WebSocket alike, per client
address and in total. The kiosk's own address (the touchscreen's browser runs
on the station and connects over loopback) has a pool of its own, so a crowd
of clients on the LAN cannot take the screen away from a driver.

:func:`protocols` builds the uvicorn protocol classes that ask the gate and
enforce the deadlines. A refused connection gets a short 503, a request that
misses its deadline a 408 (when any of it arrived), and both are logged as
counts at most every ten seconds, never once per socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = structlog.get_logger(__name__)

# Where the kiosk's browser connects from (systemd/edge-station-kiosk.service).
KIOSK_ADDRESSES = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 256  # every client but the kiosk, together
    per_client: int = 16  # one address: a browser opens about six, plus its live stream
    kiosk_pool: int = 32  # the kiosk's own address, outside the shared cap
    head_timeout_s: float = 10.0  # from connecting (or the last response) to a complete head
    body_timeout_s: float = 30.0  # from the head to the last byte of the body (64 KiB at most)
    keep_alive_s: int = 5  # uvicorn's: an idle connection after a response is closed
    backlog: int = 64  # how many sockets asyncio accepts per loop iteration
    listen_queue: int = 2048  # connections waiting in the kernel (they cost no descriptor)

    def fd_budget(self) -> int:
        """File descriptors the HTTP server may hold at once, refused sockets included.

        A refused socket lives a few loop iterations (accept, transport,
        connection_made, close) while up to ``backlog`` more are accepted in
        each: four batches at most.
        """
        return self.max_connections + self.kiosk_pool + 4 * self.backlog


DEFAULT_LIMITS = ConnectionLimits()


def _reply(status: str, code: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": code, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


BUSY = _reply(
    "503 Service Unavailable",
    "busy",
    "The station has too many open connections right now. Please try again in a minute.",
    "retry-after: 30\r\n",
)
TIMED_OUT = _reply(
    "408 Request Timeout",
    "timeout",
    "Your request arrived too slowly and was dropped. Please send it again.",
)


def _host(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


class ConnectionGate:
    """Open connections per client address; admits a new one only within the caps."""

    def __init__(
        self, limits: ConnectionLimits = DEFAULT_LIMITS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self.clock = clock
        self._open: dict[asyncio.BaseTransport, str] = {}
        self._per_host: Counter[str] = Counter()
        self._kiosk = 0
        self._shared = 0
        self.totals: Counter[str] = Counter()  # refused, timeout_head, timeout_body
        self._pending: dict[str, Counter[str]] = {}
        self._logged_at: dict[str, float] = {}
        self.on_change: Callable[[], None] | None = None  # told when ``open`` changes

    @property
    def open(self) -> int:
        return len(self._open)

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        host = _host(transport)
        lim = self.limits
        if host in KIOSK_ADDRESSES:
            ok = self._kiosk < lim.kiosk_pool
        else:
            ok = self._per_host[host] < lim.per_client and self._shared < lim.max_connections
        if not ok:
            self.note("refused", host)
            return False
        self._open[transport] = host
        self._per_host[host] += 1
        if host in KIOSK_ADDRESSES:
            self._kiosk += 1
        else:
            self._shared += 1
        if self.on_change:
            self.on_change()
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        host = self._open.pop(transport, None)
        if host is None:
            return
        self._per_host[host] -= 1
        if self._per_host[host] <= 0:
            del self._per_host[host]
        if host in KIOSK_ADDRESSES:
            self._kiosk -= 1
        else:
            self._shared -= 1
        if self.on_change:
            self.on_change()

    def note(self, kind: str, host: str) -> None:
        """Count a refusal or a timeout; log the counts at most every ``LOG_EVERY_S``."""
        self.totals[kind] += 1
        pending = self._pending.setdefault(kind, Counter())
        pending[host] += 1
        now = self.clock()
        if now - self._logged_at.get(kind, float("-inf")) < LOG_EVERY_S:
            return
        self._logged_at[kind] = now
        event, note = _EVENTS[kind]
        log.warning(
            event,
            count=sum(pending.values()),
            clients=[h for h, _ in pending.most_common(5)],
            open=self.open,
            note=note,
        )
        pending.clear()


_EVENTS = {
    "refused": (
        "ui.connections_refused",
        "too many connections from these clients or in total; answered 503 and closed",
    ),
    "timeout_head": (
        "ui.request_head_timeout",
        "a request head did not arrive in time; connection closed",
    ),
    "timeout_body": (
        "ui.request_body_timeout",
        "a request body did not arrive in time; connection closed",
    ),
}


class _GatedH11(H11Protocol):
    """uvicorn's h11 protocol, admitted by the gate, with deadlines for a request's head and body."""

    gate: ClassVar[ConnectionGate]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._upgraded = False
        self._phase: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self.gate.admit(transport):
            self._refused = True
            transport.write(BUSY)
            transport.close()
            return
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._disarm()
        self.gate.release(self.transport)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # The transport now belongs to the WebSocket protocol, which releases the gate.
        self._upgraded = True
        self._disarm()
        super().handle_websocket_upgrade(event)

    def _arm(self) -> None:
        if self._upgraded or self.transport.is_closing():
            self._disarm()
            return
        state = self.conn.their_state
        phase = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if phase == self._phase:
            return
        self._disarm()
        if phase is not None:
            lim = self.gate.limits
            timeout = lim.head_timeout_s if phase == "head" else lim.body_timeout_s
            self._phase = phase
            self._timer = self.loop.call_later(timeout, self._expire)

    def _disarm(self) -> None:
        self._phase = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        phase, self._timer, self._phase = self._phase, None, None
        if self.transport.is_closing() or phase is None:
            return
        self.gate.note(f"timeout_{phase}", _host(self.transport))
        started = phase == "body" or bool(self.conn.trailing_data[0])
        answered = self.cycle is not None and self.cycle.response_started
        if phase == "head":
            answered = False  # the last cycle's response is complete; nothing is in flight
        if started and not answered:
            self.transport.write(TIMED_OUT)
        self.transport.close()


class _GatedWs(WebSocketsSansIOProtocol):
    gate: ClassVar[ConnectionGate]

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.release(self.transport)
        super().connection_lost(exc)


def widen_listen_queue(servers: list[asyncio.Server], queue: int) -> None:
    """Let ``queue`` connections wait in the kernel while asyncio accepts ``backlog`` per turn.

    asyncio uses one number for both: the listen queue and the sockets
    accepted per loop iteration. A short queue drops the kiosk's SYN behind
    a burst of connects (and TCP retries it only after a second); a long
    batch holds hundreds of refused sockets at once. Linux lets a listening
    socket be given a new queue length by calling ``listen`` again.
    """
    for server in servers:
        for tsock in server.sockets:
            with socket.socket(fileno=os.dup(tsock.fileno())) as sock:
                sock.listen(queue)


def protocols(gate: ConnectionGate) -> tuple[type[H11Protocol], type[WebSocketsSansIOProtocol]]:
    """The HTTP and WebSocket protocol classes for uvicorn's ``http=`` and ``ws=``, bound to ``gate``."""
    http = type("GatedH11Protocol", (_GatedH11,), {"gate": gate})
    ws = type("GatedWebSocketProtocol", (_GatedWs,), {"gate": gate})
    return http, ws
