"""A locker door on the Pi's pins: lock actuator, lock feedback and door sensor (``DoorLock``).

``set_locked`` drives the actuator and returns once the feedback confirms,
or raises ``DriverTimeout`` after ``confirm_s`` (a lock fault). Without a
feedback input the commanded state is taken as the truth. A door that
opens while the lock is (reported) locked is a tamper: ``DOOR_OPENED`` with
detail ``forced`` and the ``on_tamper`` callback (the bay's alarm).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog

from controller.ports import ConnectionLost, DriverTimeout, NodeEvent, NodeEventKind, NodeSink
from drivers.gpio.config import InputPin, LockConfig
from drivers.gpio.io import DebouncedInput, Output

log = structlog.get_logger(__name__)


class GpioDoorLock:
    def __init__(
        self,
        node_id: str,
        lock: LockConfig | None,
        door: InputPin | None,
        *,
        factory: Any = None,
        on_tamper: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        self.lock_cfg = lock
        self.door_cfg = door
        self._factory = factory
        self._on_tamper = on_tamper
        self._clock = clock
        self._out: Output | None = None
        self._feedback: DebouncedInput | None = None
        self._door: DebouncedInput | None = None
        self._sink: NodeSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._pulse: asyncio.TimerHandle | None = None
        self.opened = asyncio.Event()  # set while run() holds the pins
        self.commanded: bool | None = None
        self.faults = 0
        self.tampers = 0

    # ------------------------------------------------------------------ state

    @property
    def locked(self) -> bool | None:
        if self.lock_cfg is None:
            return None
        if self._feedback is not None:
            return self._feedback.active
        return self.commanded

    @property
    def door_closed(self) -> bool | None:
        return None if self._door is None else self._door.active

    # ------------------------------------------------------------------ lifecycle

    def open(self, sink: NodeSink, loop: asyncio.AbstractEventLoop) -> None:
        """Claim the pins (may run in a worker thread; callbacks go to ``loop``)."""
        self._sink, self._loop = sink, loop
        try:
            if self.lock_cfg is not None:
                self._out = Output(self.lock_cfg.output, factory=self._factory)
                if self.lock_cfg.feedback is not None:
                    self._feedback = DebouncedInput(
                        self.lock_cfg.feedback, self._on_feedback, factory=self._factory, loop=loop
                    )
            if self.door_cfg is not None:
                self._door = DebouncedInput(
                    self.door_cfg, self._on_door, factory=self._factory, loop=loop
                )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._pulse is not None:
            self._pulse.cancel()
        for dev in (self._door, self._feedback, self._out):
            if dev is not None:
                with contextlib.suppress(Exception):
                    dev.close()
        self._out = self._feedback = self._door = None

    async def run(self, sink: NodeSink) -> None:
        """``DoorLock.run``: claim the pins, report door changes until cancelled."""
        await asyncio.to_thread(self.open, sink, asyncio.get_running_loop())
        self.opened.set()
        try:
            await asyncio.Future()
        finally:
            self.opened.clear()
            await asyncio.to_thread(self.close)

    # ------------------------------------------------------------------ commands

    async def set_locked(self, locked: bool) -> None:
        cfg = self.lock_cfg
        if cfg is None:
            raise ConnectionLost(f"{self.node_id}: no lock is wired")
        out = self._out
        if out is None:
            raise ConnectionLost(f"{self.node_id}: the GPIO lock is not running")
        self.commanded = locked
        if cfg.mode == "hold":
            out.set(locked == (cfg.energized == "locked"))
        elif not locked:
            self._start_pulse(out, cfg.pulse_s)
        # (pulse mode, lock: the latch catches by itself when the door closes)
        if self._feedback is None:
            self._emit(NodeEventKind.LOCKED if locked else NodeEventKind.UNLOCKED)
            return
        try:
            async with asyncio.timeout(cfg.confirm_s):
                while self._feedback.active != locked:
                    await self._wait_change()
        except TimeoutError:
            self.faults += 1
            state = "locked" if locked else "unlocked"
            log.warning("gpio.lock_fault", node=self.node_id, wanted=state)
            raise DriverTimeout(
                f"{self.node_id}: lock did not report {state} within {cfg.confirm_s} s"
            ) from None

    def _start_pulse(self, out: Output, pulse_s: float) -> None:
        assert self._loop is not None
        if self._pulse is not None:
            self._pulse.cancel()
        out.set(True)
        self._pulse = self._loop.call_later(pulse_s, out.set, False)

    async def _wait_change(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ inputs (on the loop)

    def _on_feedback(self, locked: bool) -> None:
        self._emit(NodeEventKind.LOCKED if locked else NodeEventKind.UNLOCKED)
        self._notify()

    def _on_door(self, closed: bool) -> None:
        if closed:
            self._emit(NodeEventKind.DOOR_CLOSED)
        elif self.locked:
            self.tampers += 1
            log.error("gpio.door_forced", node=self.node_id)
            self._emit(NodeEventKind.DOOR_OPENED, "forced")
            if self._on_tamper is not None:
                self._on_tamper()
        else:
            self._emit(NodeEventKind.DOOR_OPENED)
        self._notify()

    def _emit(self, kind: NodeEventKind, detail: str = "") -> None:
        if self._sink is not None:
            self._sink(NodeEvent(self.node_id, self._clock(), kind, detail))
