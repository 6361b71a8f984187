"""Control of a running simulated bus from another process: JSON lines on a unix socket.

Request: ``{"op": "plug_in", "node": "bay1", "args": {"max_a": 16, "phases": 3}}``.
Reply: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
Ops: ``plug_in``, ``unplug``, ``open_door``, ``close_door``, ``reboot``, ``knobs``
(args: knob values), ``state`` (one node, or all without ``node``), ``unplug_usb``,
``replug_usb``, ``ping``; forgeries: ``forge_telemetry`` (args: the fields that lie,
e.g. ``energy_wh``), ``forge_event`` (args: ``kind``, ``detail``); a second device:
``add_node`` (args: ``address``, ``serial``, ``firmware``, ``kind``; ``node`` names
it) and ``remove_node``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import Any

import structlog

from simulators.esp32_node.bus import SimNodeSpec, SimulatedBus

log = structlog.get_logger(__name__)
SOCKET_NAME = "control.sock"


def apply(bus: SimulatedBus, request: dict[str, Any]) -> Any:
    op = request.get("op")
    args: dict[str, Any] = request.get("args") or {}
    now = bus.clock()
    if op == "ping":
        return "pong"
    if op == "unplug_usb":
        bus.unplug_usb()
        return None
    if op == "replug_usb":
        bus.replug_usb()
        return None
    if op == "state" and "node" not in request:
        return {name: n.snapshot(now) for name, n in bus.nodes.items()}
    if op == "add_node":
        spec = SimNodeSpec(
            str(request["node"]),
            int(args["address"]),
            "locker" if args.get("kind") == "locker" else "evse",
            serial=args.get("serial"),
            firmware=args.get("firmware"),
            continuity=bool(args.get("continuity", True)),
        )
        return bus.add_node(spec).snapshot(now)
    if op == "remove_node":
        bus.remove_node(str(request["node"]))
        return None
    node = bus.nodes[str(request["node"])]
    match op:
        case "plug_in":
            node.plug_in(now=now, **args)
        case "unplug":
            node.unplug(now)
        case "open_door":
            node.open_door(now)
        case "close_door":
            node.close_door(now)
        case "reboot":
            node.reboot(now)
        case "knobs":
            node.set_knobs(**args)
        case "forge_telemetry":
            node.forge_telemetry(now, **args)
        case "forge_event":
            node.forge_event(str(args["kind"]), str(args.get("detail", "")))
        case "state":
            pass
        case _:
            raise ValueError(f"unknown op {op!r}")
    return node.snapshot(now)


async def serve(bus: SimulatedBus, path: str | Path, ready: asyncio.Event | None = None) -> None:
    """Serve control requests until cancelled."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = {"ok": True, "result": apply(bus, json.loads(line))}
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                bus.tick()
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path))
    if ready is not None:
        ready.set()
    try:
        async with server:
            await server.serve_forever()
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def request(
    directory: str | Path, op: str, node: str | None = None, timeout: float = 5.0, **args: Any
) -> Any:
    """Blocking client (for test harnesses in another process). Raises RuntimeError on an error reply."""
    body: dict[str, Any] = {"op": op, "args": args}
    if node is not None:
        body["node"] = node
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(Path(directory) / SOCKET_NAME))
        sock.sendall(json.dumps(body).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise RuntimeError(reply.get("error", "control request failed"))
    return reply.get("result")


async def arequest(directory: str | Path, op: str, node: str | None = None, **args: Any) -> Any:
    """Async client: same as :func:`request`, without blocking the loop."""
    body: dict[str, Any] = {"op": op, "args": args}
    if node is not None:
        body["node"] = node
    reader, writer = await asyncio.open_unix_connection(str(Path(directory) / SOCKET_NAME))
    try:
        writer.write(json.dumps(body).encode() + b"\n")
        await writer.drain()
        reply = json.loads(await reader.readline())
    finally:
        writer.close()
        await writer.wait_closed()
    if not reply.get("ok"):
        raise RuntimeError(reply.get("error", "control request failed"))
    return reply.get("result")
