"""The emergency-stop button on a Pi pin (``controller.ports.StopInput``), and the service
that hands its changes to the station."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from controller.ports import StopInput
from drivers.gpio.config import InputPin
from drivers.gpio.io import DebouncedInput

if TYPE_CHECKING:
    from controller.core.station import Station

log = structlog.get_logger(__name__)


class GpioStopInput:
    """``run(on_change)`` reports every debounced change, and a press already held at start."""

    def __init__(self, cfg: InputPin, *, factory: Any = None) -> None:
        self.cfg = cfg
        self._factory = factory
        self.pressed = False

    async def run(self, on_change: Callable[[bool], None]) -> None:
        loop = asyncio.get_running_loop()

        def changed(pressed: bool) -> None:
            self.pressed = pressed
            log.warning("gpio.emergency_stop", pressed=pressed)
            on_change(pressed)

        inp = await asyncio.to_thread(
            DebouncedInput, self.cfg, changed, factory=self._factory, loop=loop
        )
        try:
            if inp.active:
                changed(True)
            await asyncio.Future()
        finally:
            await asyncio.to_thread(inp.close)


async def run_stop_input(station: Station, stop_input: StopInput) -> None:
    """A station service: every change of ``stop_input`` goes to ``station.safety.emergency_stop``."""
    changes: asyncio.Queue[bool] = asyncio.Queue()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(stop_input.run(changes.put_nowait), name="stop-input")
        while True:
            pressed = await changes.get()
            await station.safety.emergency_stop(pressed)
