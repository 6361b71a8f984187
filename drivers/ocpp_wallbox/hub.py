"""The downstream OCPP 1.6J server: wallboxes as bay nodes (``controller.ports.NodeHub``).

One websockets server per ``transport = "ocpp"`` bus. A wallbox connects to
``ws[s]://<listen><path_prefix><charge point id>`` with the ``ocpp1.6``
subprotocol; an unknown id, a wrong password (security profile 1/2) or
another subprotocol is refused at the handshake and logged. A second
connection of one id replaces the first. Each bay is a
:class:`WallboxNode`: its ``set_output`` is a charging profile (and a remote
start or stop), its ``set_lock(False)`` an UnlockConnector; what the wallbox
reports reaches the station through the sink as node updates.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ssl
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from controller.ports import LinkStats, NodeSink, PermanentError
from drivers.ocpp_wallbox.charger import Charger, Connector, StationSide
from drivers.ocpp_wallbox.config import WallboxBus, parse_bus, parse_listen
from drivers.ocpp_wallbox.link import ChargerLink

if TYPE_CHECKING:
    from controller.core.config import BayConfig, BusConfig, StationConfig

log = structlog.get_logger(__name__)

SUBPROTOCOL = "ocpp1.6"
BIND_RETRY_S = (1.0, 30.0)


class WallboxNode:
    """One bay on a wallbox (``controller.ports.BayNode``)."""

    def __init__(self, charger: Charger, connector: Connector) -> None:
        self.node_id = connector.bay.node_id
        self.charger = charger
        self.connector = connector
        self._stats = LinkStats()

    async def set_output(self, *, relay_on: bool, current_a: float, lease_s: float) -> None:
        await self.charger.set_limit(self.connector, relay_on=relay_on, current_a=current_a)
        self._stats.frames_tx += 1

    async def set_lock(self, *, locked: bool) -> None:
        if not locked:
            await self.charger.unlock(self.connector)

    def stats(self) -> LinkStats:
        self._stats.firmware = self.charger.model_name
        self._stats.last_rx_at = self.charger.last_seen
        return self._stats

    def assumed_draw_a(self, now: float) -> float | None:
        return self.charger.assumed_draw_a(self.connector, now)


class WallboxHub:
    def __init__(
        self,
        bus_id: str,
        listen: str,
        cfg: WallboxBus,
        bays: Sequence[BayConfig],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus_id = bus_id
        self.listen = parse_listen(listen)
        self.cfg = cfg
        by_cp: dict[str, list[BayConfig]] = {}
        for b in bays:
            if b.charger_id is None:
                raise PermanentError(f"bay {b.id}: no charger_id on OCPP bus {bus_id}")
            by_cp.setdefault(b.charger_id, []).append(b)
        self.chargers = {cp: Charger(cp, bs, cfg, clock=clock) for cp, bs in by_cp.items()}
        self._nodes = {
            c.bay.node_id: WallboxNode(ch, c)
            for ch in self.chargers.values()
            for c in ch.connectors.values()
        }
        self.port: int | None = None
        self.refused = 0
        self._refused_logged: set[str] = set()
        self._listening = asyncio.Event()

    # ------------------------------------------------------------------ NodeHub

    def node(self, node_id: str) -> WallboxNode:
        return self._nodes[node_id]

    def bind(self, station: StationSide) -> None:
        """Who authorizes cards and owns sessions (the station, through the extension)."""
        for ch in self.chargers.values():
            ch.station = station

    async def wait_listening(self) -> int:
        await self._listening.wait()
        assert self.port is not None
        return self.port

    async def run(self, sink: NodeSink) -> None:
        for ch in self.chargers.values():
            ch.sink = sink
        delay = BIND_RETRY_S[0]
        while True:
            try:
                server = await self._serve()
            except OSError as err:
                log.error("wallbox.listen_failed", bus=self.bus_id, error=str(err), retry_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BIND_RETRY_S[1])
                continue
            try:
                self.port = server.sockets[0].getsockname()[1]
                log.info("wallbox.listening", bus=self.bus_id, port=self.port)
                self._listening.set()
                await server.serve_forever()
            finally:
                self._listening.clear()
                server.close(close_connections=True)
                with contextlib.suppress(Exception):
                    await asyncio.shield(server.wait_closed())

    # ------------------------------------------------------------------ the server

    def _ssl(self) -> ssl.SSLContext | None:
        c = self.cfg
        if c.security_profile < 2 or c.tls_cert_file is None or c.tls_key_file is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(c.tls_cert_file), str(c.tls_key_file))
        return ctx

    async def _serve(self) -> Server:
        half = self.cfg.offline_after_s / 2
        return await serve(
            self._handle,
            self.listen.host,
            self.listen.port,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            process_request=self._check,
            ssl=self._ssl(),
            ping_interval=half,
            ping_timeout=half,
            max_size=2**20,
        )

    def _cp_id(self, path: str) -> str | None:
        prefix = self.cfg.path_prefix
        if not path.startswith(prefix):
            return None
        cp = path[len(prefix) :].split("?", 1)[0].strip("/")
        return cp if cp in self.chargers else None

    def _refuse(self, what: str, status: int, reason: str, headers: Headers) -> Response:
        self.refused += 1
        if what not in self._refused_logged:
            self._refused_logged.add(what)
            log.warning("wallbox.refused", bus=self.bus_id, who=what[:80], reason=reason)
        return Response(status, reason, headers, b"")

    def _check(self, conn: ServerConnection, request: Request) -> Response | None:
        cp = self._cp_id(request.path)
        if cp is None:
            return self._refuse(request.path, 404, "Unknown charge point", Headers())
        if self.cfg.security_profile >= 1:
            expected = self.cfg.passwords.get(cp)
            header = request.headers.get("Authorization", "")
            ok = False
            if header.startswith("Basic ") and expected is not None:
                try:
                    user, _, pw = (
                        base64.b64decode(header[6:], validate=True).decode().partition(":")
                    )
                except (binascii.Error, UnicodeDecodeError):
                    user, pw = "", ""
                ok = user == cp and pw == expected.get_secret_value()
            if not ok:
                return self._refuse(
                    f"{cp}:auth",
                    401,
                    "Unauthorized",
                    Headers([("WWW-Authenticate", 'Basic realm="edge-station"')]),
                )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        cp = self._cp_id(ws.request.path)
        if cp is None:
            return
        if ws.subprotocol != SUBPROTOCOL:
            log.warning("wallbox.refused", bus=self.bus_id, who=cp, reason="no ocpp1.6 subprotocol")
            await ws.close(1002, "ocpp1.6 required")
            return
        ch = self.chargers[cp]
        old = ch.link
        if old is not None:
            log.info("wallbox.replaced", charger=cp)
            with contextlib.suppress(Exception):
                await old._connection.close(1000, "replaced by a new connection")
        link = ChargerLink(
            cp,
            ws,
            ch,
            heartbeat_s=self.cfg.heartbeat_s,
            response_timeout_s=self.cfg.response_timeout_s,
        )
        log.info("wallbox.connected", charger=cp, peer=str(ws.remote_address))
        try:
            await ch.serve(link)
        except* ConnectionClosed:
            pass


def build_wallboxes(
    bus: BusConfig, bays: list[BayConfig], station: StationConfig | None = None
) -> WallboxHub:
    """Entry point ``edge_station.node_hubs: ocpp``: the server for one ``transport = "ocpp"`` bus."""
    return WallboxHub(bus.id, bus.listen or "0.0.0.0:8887", parse_bus(bus.ocpp), bays)


__all__ = ["WallboxHub", "WallboxNode", "build_wallboxes"]
