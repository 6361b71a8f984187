"""The connection gate on a real uvicorn server: caps per client and in total, head and body deadlines.

Other hosts are loopback addresses other than 127.0.0.1 (127.0.0.2, ...):
the station sees them as LAN clients, while 127.0.0.1 is the kiosk's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import websockets

from local_ui.connections import ConnectionGate, ConnectionLimits
from local_ui.server import create_app, serve_app
from tests.support.procs import free_port
from tests.test_api_rig import running_station

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def serving(tmp: Path, limits: ConnectionLimits) -> AsyncIterator[tuple[int, ConnectionGate]]:
    async with running_station(tmp) as rig:
        gate = ConnectionGate(limits)
        port = free_port()
        task = asyncio.create_task(serve_app(create_app(rig.station), "127.0.0.1", port, gate=gate))
        try:
            async with asyncio.timeout(10):
                while True:
                    with contextlib.suppress(OSError):
                        _, w = await asyncio.open_connection("127.0.0.1", port)
                        w.close()
                        break
                    await asyncio.sleep(0.05)
            await until_open(gate, 0)  # the probe above has gone
            yield port, gate
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until_open(gate: ConnectionGate, n: int) -> None:
    changed = asyncio.Event()
    gate.on_change = changed.set
    try:
        async with asyncio.timeout(5):
            while gate.open != n:
                await changed.wait()
                changed.clear()
    finally:
        gate.on_change = None


async def connect(port: int, host: str) -> Conn:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(host, 0))


async def reply(conn: Conn, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    reader, _ = conn
    async with asyncio.timeout(timeout):
        return await reader.read()


async def get(conn: Conn, path: str = "/api/v1/kiosk/state") -> bytes:
    reader, writer = conn
    writer.write(f"GET {path} HTTP/1.1\r\nHost: station\r\n\r\n".encode())
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        return head + await reader.readexactly(length)


def body_of(raw: bytes) -> dict[str, str]:
    parsed: dict[str, str] = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    return parsed


async def test_caps_per_client_and_in_total_with_a_pool_for_the_kiosk(tmp_path: Path) -> None:
    limits = ConnectionLimits(max_connections=4, per_client=2, kiosk_pool=2, head_timeout_s=30)
    async with serving(tmp_path, limits) as (port, gate):
        a1, a2 = await connect(port, "127.0.0.2"), await connect(port, "127.0.0.2")
        third = await connect(port, "127.0.0.2")
        refused = await reply(third)
        assert refused.startswith(b"HTTP/1.1 503"), refused
        assert "too many open connections" in body_of(refused)["message"]
        b1, b2 = await connect(port, "127.0.0.3"), await connect(port, "127.0.0.3")
        assert gate.open == 4
        other = await connect(port, "127.0.0.4")  # per-client room, but the total is reached
        assert (await reply(other)).startswith(b"HTTP/1.1 503")
        # The kiosk still gets its screen, twice over, on connections of its own.
        k1, k2 = await connect(port, "127.0.0.1"), await connect(port, "127.0.0.1")
        assert (await get(k1)).startswith(b"HTTP/1.1 200")
        assert (await get(k2)).startswith(b"HTTP/1.1 200")
        assert (await reply(await connect(port, "127.0.0.1"))).startswith(b"HTTP/1.1 503")
        assert gate.totals["refused"] == 3
        # A closed connection gives its slot back.
        a1[1].close()
        await until_open(gate, 5)
        again = await connect(port, "127.0.0.2")
        assert (await get(again)).startswith(b"HTTP/1.1 200")
        for _, w in (a2, b1, b2, k1, k2, again):
            w.close()
        await until_open(gate, 0)


async def test_a_websocket_holds_its_slot_until_it_closes(tmp_path: Path) -> None:
    limits = ConnectionLimits(max_connections=10, per_client=1, head_timeout_s=0.5)
    async with serving(tmp_path, limits) as (port, gate):
        raw = socket.socket()
        raw.bind(("127.0.0.2", 0))
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", port))
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/api/v1/kiosk/live", sock=raw)
        try:
            assert json.loads(await ws.recv())["type"] == "snapshot"
            await asyncio.sleep(1.0)  # past the head deadline: an open stream is not a slow request
            assert gate.open == 1
            refused = await reply(await connect(port, "127.0.0.2"))
            assert refused.startswith(b"HTTP/1.1 503")
        finally:
            await ws.close()
        await until_open(gate, 0)
        assert (await get(await connect(port, "127.0.0.2"))).startswith(b"HTTP/1.1 200")


async def test_head_and_body_deadlines(tmp_path: Path) -> None:
    limits = ConnectionLimits(head_timeout_s=0.5, body_timeout_s=0.8, keep_alive_s=30)
    async with serving(tmp_path, limits) as (port, gate):
        t0 = time.monotonic()
        idle = await connect(port, "127.0.0.2")
        assert await reply(idle) == b""  # nothing asked, nothing answered: just closed
        assert 0.4 < time.monotonic() - t0 < 3.0

        partial = await connect(port, "127.0.0.2")
        partial[1].write(b"GET /api/v1/kiosk/state HTTP/1.1\r\nHost: station\r\n")
        for _ in range(3):  # a header line now and then does not buy time
            await asyncio.sleep(0.2)
            partial[1].write(b"X-Slow: 1\r\n")
        raw = await reply(partial)
        assert raw.startswith(b"HTTP/1.1 408"), raw
        assert body_of(raw)["message"] == (
            "Your request arrived too slowly and was dropped. Please send it again."
        )

        slow_body = await connect(port, "127.0.0.2")
        slow_body[1].write(
            b"POST /api/v1/kiosk/bays/bay1/token HTTP/1.1\r\nHost: station\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n"
            b'Cookie: es_csrf=t\r\nX-CSRF-Token: t\r\n\r\n{"tok'
        )
        raw = await reply(slow_body)
        assert raw.startswith(b"HTTP/1.1 408"), raw
        assert gate.totals["timeout_head"] == 2 and gate.totals["timeout_body"] == 1

        # Keep-alive: every new request on the connection gets a fresh deadline.
        ka = await connect(port, "127.0.0.2")
        for _ in range(3):
            assert (await get(ka)).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.3)
        ka[1].write(b"GET /api/v1/kiosk/state HTTP/1.1\r\n")
        assert (await reply(ka)).startswith(b"HTTP/1.1 408")
        await until_open(gate, 0)


@pytest.mark.parametrize("size", [64 * 1024, 64 * 1024 + 1])
async def test_body_limit_is_exact_whatever_the_encoding(tmp_path: Path, size: int) -> None:
    async with serving(tmp_path, ConnectionLimits()) as (port, _):
        for chunked in (False, True):
            reader, writer = await connect(port, "127.0.0.2")
            payload = b'{"token":"' + b"x" * (size - 12) + b'"}'
            assert len(payload) == size
            head = (
                "POST /api/v1/kiosk/bays/bay1/token HTTP/1.1\r\nHost: station\r\n"
                "Content-Type: application/json\r\nCookie: es_csrf=t\r\nX-CSRF-Token: t\r\n"
            )
            if chunked:
                writer.write(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n")
                for i in range(0, size, 1000):
                    part = payload[i : i + 1000]
                    writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(head.encode() + f"Content-Length: {size}\r\n\r\n".encode() + payload)
            async with asyncio.timeout(10):
                status = await reader.readline()
            writer.close()
            # At the limit the body is read (and refused as a token, 422); one byte over, 413.
            expected = b"413" if size > 64 * 1024 else b"422"
            assert expected in status, (chunked, status)
