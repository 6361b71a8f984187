"""A simulated RS-485 bus of ESP32 bay nodes behind a pseudo-terminal.

The driver opens ``port_path`` (a stable symlink to the pty slave) exactly as
it would open ``/dev/ttyUSB0``. The bus keeps its own fd to the slave open,
so the master never sees EIO when the driver closes; ``unplug_usb`` closes
the master and removes the symlink (the driver sees the device vanish) and
``replug_usb`` makes a new pty behind the same path.

Two nodes may share one address (``add_node`` with a taken address): both
hear the host and both answer, as a mis-addressed second device on a real
bus would (here without collisions, so the host sees both replies).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import structlog

from simulators.esp32_node.model import Kind
from simulators.esp32_node.node import FIRMWARE, SimNode
from simulators.esp32_node.wire import BROADCAST, Frame, Splitter, encode

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SimNodeSpec:
    name: str
    address: int
    kind: Kind = "evse"
    max_current_a: float = 32.0
    response_delay_s: float = 0.0
    continuity: bool = True  # False: old firmware without plug/boot counters and serial
    serial: str | None = None  # None: ``SIM-<name>``
    firmware: str | None = None


def specs(count: int, kind: str = "evse", *, continuity: bool = True) -> list[SimNodeSpec]:
    """``bay1``..``bayN`` at bus addresses 1..N, all of one kind (``evse`` or ``locker``)."""
    if kind not in ("evse", "locker"):
        raise ValueError(f"unknown node kind {kind!r}")
    node_kind: Kind = "evse" if kind == "evse" else "locker"
    return [
        SimNodeSpec(f"bay{i}", i, node_kind, continuity=continuity) for i in range(1, count + 1)
    ]


def make_node(
    s: SimNodeSpec, *, clock: Callable[[], float] = time.monotonic, now: float, seed: int = 0
) -> SimNode:
    return SimNode(
        s.name,
        s.address,
        s.kind,
        clock=clock,
        now=now,
        max_current_a=s.max_current_a,
        response_delay_s=s.response_delay_s,
        seed=seed + s.address,
        continuity=s.continuity,
        serial=s.serial,
        firmware=s.firmware or FIRMWARE,
    )


class SimulatedBus:
    """Async context manager: ``async with SimulatedBus(tmp_path, specs(2)) as bus: bus.port_path``."""

    def __init__(
        self,
        directory: str | Path,
        nodes: Sequence[SimNodeSpec] = (),
        *,
        link_name: str = "ttyBAYS",
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = 0.02,
        seed: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.port_path = str(self.directory / link_name)
        self.clock = clock
        self._tick_s = tick_s
        self._seed = seed
        now = clock()
        self.nodes: dict[str, SimNode] = {
            s.name: make_node(s, clock=clock, now=now, seed=seed) for s in nodes
        }
        self._splitter = Splitter()
        self._master: int | None = None
        self._slave: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self.unknown_dst = 0
        self.tx_dropped = 0
        self.plugs = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> SimulatedBus:
        self._loop = asyncio.get_running_loop()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.replug_usb()
        tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        tg.create_task(self._tick_loop(), name="sim-bus-tick")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unplug_usb()
        self._stop.set()
        await self._stack.__aexit__(exc_type, exc, tb)

    async def _tick_loop(self) -> None:
        stop = self._stop
        while not stop.is_set():
            self.tick()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tick_s):
                    await stop.wait()

    def tick(self) -> None:
        """Advance every node to ``clock()`` (the tick task does this; a fake-clock test may too)."""
        now = self.clock()
        for node in self.nodes.values():
            node.tick(now)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
        """Wait (without polling sleeps) until ``predicate()`` holds after some change of the bus."""
        async with asyncio.timeout(limit_s):
            while not predicate():
                await self._changed.wait()

    # ------------------------------------------------------------------ the "USB" cable

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def unplug_usb(self) -> None:
        if self._master is None:
            return
        assert self._loop is not None and self._slave is not None
        self._loop.remove_reader(self._master)
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.port_path)
        self._splitter.reset()
        log.info("sim.usb_unplugged", port=self.port_path)

    def replug_usb(self) -> None:
        assert self._loop is not None, "use the bus as an async context manager"
        self.unplug_usb()
        master, slave = os.openpty()
        tty.setraw(slave)  # binary-clean: no echo, no CR/LF translation, before anyone opens it
        os.set_blocking(master, False)
        tmp = self.port_path + ".tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.port_path)
        self._master, self._slave = master, slave
        self._loop.add_reader(master, self._on_readable)
        self.plugs += 1
        log.info("sim.usb_plugged", port=self.port_path, pty=os.ttyname(slave))

    def add_node(self, spec: SimNodeSpec) -> SimNode:
        """Put one more node on the bus (also at an address that is taken: a conflict)."""
        if spec.name in self.nodes:
            raise ValueError(f"node {spec.name!r} exists")
        node = make_node(spec, clock=self.clock, now=self.clock(), seed=self._seed)
        self.nodes[spec.name] = node
        return node

    def set_online(self, name: str, online: bool) -> None:
        """A dead node (``online=False``) hears and answers nothing, like a cut cable."""
        self.nodes[name].knobs.silent = not online

    def remove_node(self, name: str) -> None:
        del self.nodes[name]

    def inject(self, data: bytes) -> None:
        """Write raw bytes towards the host (garbage, frames from unknown addresses)."""
        self._write(data)

    # ------------------------------------------------------------------ wire

    def _on_readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # no reader on the slave side right now; we hold the slave, so rare
        now = self.clock()
        for frame in self._splitter.feed(data):
            self._deliver(frame, now)
        self._notify()

    def _deliver(self, frame: Frame, now: float) -> None:
        if frame.dst == BROADCAST:
            targets = list(self.nodes.values())
        else:
            targets = [n for n in self.nodes.values() if n.address == frame.dst]
        if not targets:
            self.unknown_dst += 1
            return
        for target in targets:
            reply = target.handle(frame, now)
            if reply is None:
                continue
            data = b"\x00" + encode(reply)  # leading delimiter: see PROTOCOL.md, resynchronization
            if target.should_corrupt():
                data = _corrupt(data)
            delay = target.knobs.reply_delay_s
            if delay > 0 and self._loop is not None:
                self._loop.call_later(delay, self._write, data)
            else:
                self._write(data)

    def _write(self, data: bytes) -> None:
        if self._master is None:
            self.tx_dropped += 1
            return
        try:
            os.write(self._master, data)
        except (BlockingIOError, InterruptedError, OSError):
            self.tx_dropped += 1  # nobody draining the pty: the bytes are lost like on a real bus

    @property
    def decoder_bad_frames(self) -> int:
        return self._splitter.bad


def _corrupt(data: bytes) -> bytes:
    """Flip one byte in the middle of an encoded frame, never creating a delimiter."""
    i = len(data) // 2
    b = data[i] ^ 0x5A or 0xA5
    return data[:i] + bytes([b]) + data[i + 1 :]
