"""Control of running simulated nodes from another process: JSON lines on a unix socket.

Request: ``{"op": "plug_in", "node": "bay1", "args": {"max_a": 16, "phases": 3}}``.
Reply: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "a sentence"}``.
Ops: ``plug_in``, ``unplug``, ``open_door``, ``close_door``, ``force_door`` (open a locked
door), ``reboot``, ``offline`` / ``online`` (the node goes dead / comes back: silent on a
serial bus, its TCP connection cut on MQTT), ``jam_lock`` / ``free_lock``, ``knobs`` (args:
knob values), ``state`` (one node, or all without ``node``), ``unplug_usb``, ``replug_usb``
(serial only), ``ping``; forgeries: ``forge_telemetry`` (args: the fields that lie, e.g.
``energy_wh``), ``forge_event`` (args: ``kind``, ``detail``); a second device: ``add_node``
(args: ``address``, ``serial``, ``firmware``, ``kind``; ``node`` names it) and ``remove_node``.

The nodes are a :class:`NodeGroup`: a serial bus (``SimulatedBus``) or MQTT nodes
(``MqttSimNodes``). ``serve`` takes any handler, so ``simulate`` serves a wider set of
ops (meters, PV, camera, emergency stop, disk) on the same protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import structlog

from simulators.esp32_node.bus import SimNodeSpec, SimulatedBus
from simulators.esp32_node.node import SimNode

log = structlog.get_logger(__name__)
SOCKET_NAME = "control.sock"


class ControlError(Exception):
    """A request that cannot be done; the message is a sentence for the person who asked."""


class NodeGroup(Protocol):
    """What the node ops need of a set of simulated nodes, whatever their transport."""

    @property
    def nodes(self) -> Mapping[str, SimNode]: ...

    def clock(self) -> float: ...

    def tick(self) -> None: ...

    def set_online(self, name: str, online: bool) -> None: ...


Handler = Callable[[dict[str, Any]], Any]


def _node(group: NodeGroup, request: dict[str, Any]) -> SimNode:
    name = request.get("node")
    if not name:
        raise ControlError("Name the bay (for example bay1).")
    node: SimNode | None = group.nodes.get(str(name))
    if node is None:
        have = ", ".join(sorted(group.nodes)) or "none"
        raise ControlError(f"There is no bay {name!r} in this simulation (bays: {have}).")
    return node


def apply(group: NodeGroup, request: dict[str, Any]) -> Any:
    """Carry out one node request; raises :class:`ControlError` with a sentence."""
    op = request.get("op")
    args: dict[str, Any] = request.get("args") or {}
    now = group.clock()
    if op == "ping":
        return "pong"
    if op in ("unplug_usb", "replug_usb"):
        if not isinstance(group, SimulatedBus):
            raise ControlError("These nodes talk MQTT: there is no USB cable to pull.")
        group.unplug_usb() if op == "unplug_usb" else group.replug_usb()
        return None
    if op == "state" and "node" not in request:
        return {name: n.snapshot(now) for name, n in group.nodes.items()}
    if op == "status":
        return {"nodes": {name: n.snapshot(now) for name, n in group.nodes.items()}}
    if op == "add_node":
        if not isinstance(group, SimulatedBus):
            raise ControlError("A second device can only be added to a serial bus.")
        spec = SimNodeSpec(
            str(request["node"]),
            int(args["address"]),
            "locker" if args.get("kind") == "locker" else "evse",
            serial=args.get("serial"),
            firmware=args.get("firmware"),
            continuity=bool(args.get("continuity", True)),
        )
        return group.add_node(spec).snapshot(now)
    if op == "remove_node":
        if not isinstance(group, SimulatedBus):
            raise ControlError("Only a device added to a serial bus can be removed.")
        group.remove_node(str(request["node"]))
        return None
    node = _node(group, request)
    match op:
        case "plug_in":
            node.plug_in(now=now, **args)
        case "unplug":
            node.unplug(now)
        case "open_door":
            node.open_door(now)
        case "close_door":
            node.close_door(now)
        case "force_door":
            if node.kind != "locker":
                raise ControlError(f"{node.name} is an EV charger: it has no door.")
            if not node.physics.locked:
                raise ControlError(f"{node.name}'s door is not locked: opening it forces nothing.")
            if not node.physics.door_closed:
                raise ControlError(f"{node.name}'s door is already open.")
            node.open_door(now)
        case "jam_lock" | "free_lock":
            if node.kind != "locker":
                raise ControlError(f"{node.name} is an EV charger: it has no lock.")
            node.jam_lock(op == "jam_lock")
        case "offline" | "online":
            group.set_online(node.name, op == "online")
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
            raise ControlError(f"Unknown request {op!r}.")
    return node.snapshot(now)


def node_handler(group: NodeGroup) -> Handler:
    def handle(request: dict[str, Any]) -> Any:
        try:
            return apply(group, request)
        finally:
            group.tick()

    return handle


async def serve(
    target: NodeGroup | Handler, path: str | Path, ready: asyncio.Event | None = None
) -> None:
    """Serve control requests until cancelled (``target``: nodes, or a handler of requests)."""
    handler: Handler = target if callable(target) else node_handler(target)
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                request: Any = {}
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ControlError("A request is a JSON object with an 'op'.")
                    result = handler(request)
                    if asyncio.iscoroutine(result):
                        result = await result
                    reply = {"ok": True, "result": result}
                except ControlError as exc:
                    reply = {"ok": False, "error": str(exc)}
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"ok": False, "error": f"The request was refused: {exc}"}
                op = request.get("op") if isinstance(request, dict) else None
                log.info("sim.control", op=op, ok=reply["ok"], error=reply.get("error"))
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
