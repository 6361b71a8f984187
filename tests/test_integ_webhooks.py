"""Webhooks to a real local HTTP server: delivered fast, retried while it is down, kept across
a station restart."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controller.core.bay_model import StopReason
from drivers.webhooks.extension import SERVICES
from tests.support.integ import running_station, until

SECRET = b"webhook-secret-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """A real HTTP server that records what it is sent (``status`` decides the answer)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.status = 200
        self.got: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.arrived = asyncio.Event()

        async def hook(request: Request) -> Response:
            body = await request.body()
            self.got.append((dict(request.headers), json.loads(body)))
            self.arrived.set()
            return Response(status_code=self.status)

        self.app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Receiver]:
        started = asyncio.Event()

        class _Server(uvicorn.Server):
            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                started.set()

            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None, None, None]:
                yield

        server = _Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=self.port, log_config=None, lifespan="off"
            )
        )
        task = asyncio.create_task(server.serve())
        await asyncio.wait_for(started.wait(), 10)
        try:
            yield self
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)

    def kinds(self) -> list[str]:
        return [body["kind"] for _h, body in self.got]

    async def wait_for(self, kind: str, timeout: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for _h, body in self.got:
                    if body["kind"] == kind:
                        return body
                self.arrived.clear()
                await self.arrived.wait()


def webhooks(tmp: Path, port: int) -> dict[str, Any]:
    secret = tmp / "webhook.secret"
    secret.write_bytes(SECRET + b"\n")
    return {
        "targets": [
            {
                "url": f"http://127.0.0.1:{port}/hook",
                "secret_file": str(secret),
                "retry_initial_s": 0.2,
                "retry_max_s": 1.0,
                "timeout_s": 2,
            }
        ]
    }


async def test_a_completed_session_is_delivered_at_once_and_signed(tmp_path: Path) -> None:
    port = free_port()
    async with (
        Receiver(port).serving() as rx,
        running_station(tmp_path, webhooks=webhooks(tmp_path, port)) as (st, _hub),
    ):
        sess = st.bays["b1"].state.session
        assert sess is not None
        t0 = time.monotonic()
        await st.commands.stop_session(sess.session_id, StopReason.REMOTE, actor="test")
        body = await rx.wait_for("session_completed")
        assert time.monotonic() - t0 < 30.0
        assert body["bay"] == "b1" and body["data"]["session_id"] == sess.session_id
        assert body["message"] == "The session at b1 has ended."
        headers = next(h for h, b in rx.got if b is body)
        raw = json.dumps(body, sort_keys=True).encode()
        assert headers["x-edge-signature"] == (
            "sha256=" + hmac.new(SECRET, raw, hashlib.sha256).hexdigest()
        )
        assert headers["x-edge-event"] == "session_completed"
        await st.safety.emergency_stop(True)
        estop = await rx.wait_for("emergency_stop")
        assert estop["message"] == "The emergency stop was pressed: every charging point is off."
        svc = SERVICES[st]
        await until(st, lambda: svc.delivered == 2)
        assert rx.kinds() == ["session_completed", "emergency_stop"]
        assert await svc.store.pending() == 0


async def test_retried_while_the_receiver_is_down_and_kept_across_a_restart(
    tmp_path: Path,
) -> None:
    port = free_port()
    rx = Receiver(port)
    hooks = webhooks(tmp_path, port)
    async with running_station(tmp_path, webhooks=hooks) as (st, _hub):
        svc = SERVICES[st]
        sess = st.bays["b1"].state.session
        assert sess is not None
        await st.commands.stop_session(sess.session_id, StopReason.REMOTE, actor="test")
        await until(st, lambda: svc.failures >= 2)  # nobody listens: retried with backoff
        assert await svc.store.pending() == 1
    # The station restarts; the receiver is back (answering 503 first, then 200).
    async with rx.serving():
        rx.status = 503
        async with running_station(tmp_path, start=False, webhooks=hooks) as (st, _hub):
            svc = SERVICES[st]
            await rx.wait_for("session_completed")
            rx.status = 200
            await until(st, lambda: svc.delivered == 1, timeout=15)
            assert await svc.store.pending() == 0
    sent = [b for _h, b in rx.got if b["kind"] == "session_completed"]
    assert len(sent) >= 2 and len({b["id"] for b in sent}) == 1  # the same notification, retried
    assert sent[0]["data"]["session_id"] == sess.session_id


async def test_each_kind_of_notification_is_derived_once_from_the_station_events(
    tmp_path: Path, monkeypatch: Any
) -> None:
    from controller.ports import NodeLink
    from drivers.webhooks.notify import EVENT_KINDS, Notifier

    async with running_station(tmp_path, n=2) as (st, hub):
        notifier = Notifier(st)
        notifier.prime()
        got: list[Any] = []
        async with st.events.subscription(lossy=False, kinds=EVENT_KINDS) as sub:

            async def drain(kind: str) -> None:
                async with asyncio.timeout(10):
                    while kind not in [n.kind for n in got]:
                        got.extend(notifier.notifications(await sub.get()))

            await st.commands.raise_fault("b1", "overtemperature")
            await drain("fault")
            assert "overtemperature" in got[-1].message
            st.safety.block("grid_meter", "Grid meter silent: charging within the headroom.")
            await drain("safe_mode")
            st.safety.block("grid_meter", "again")  # already active: no second notification
            monkeypatch.setattr(
                st.guard, "warning", lambda: "The station's storage is almost full."
            )
            st.safety.block("journal", "x")
            await drain("low_disk")
            # b2's link is declared lost (the hub's heartbeat timeout).
            hub.emit(NodeLink("b2", time.monotonic(), False, "heartbeat timeout"))
            await drain("node_offline")
            await drain("session_interrupted")
        kinds = [n.kind for n in got]
        assert kinds.count("safe_mode") == 2  # grid meter, then the journal
        assert kinds.count("low_disk") == 1 and kinds.count("node_offline") == 1
        offline = next(n for n in got if n.kind == "node_offline")
        assert offline.message == f"The charging point {offline.bay_id} does not answer."
