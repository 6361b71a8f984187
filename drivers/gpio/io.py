"""Thin shells over gpiozero: the pin factory by name, debounced inputs, plain outputs.

gpiozero calls edge callbacks in its own threads; :class:`DebouncedInput`
only hops onto the event loop there (``call_soon_threadsafe``) and does the
debouncing with a loop timer: after the last edge, the level must hold for
``debounce_s`` before it counts, so a bouncing contact yields one change.
Library errors are mapped to ``PermanentError`` (wrong pin, pin in use).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from gpiozero import Device, DigitalInputDevice, DigitalOutputDevice, GPIOZeroError

from controller.ports import PermanentError
from drivers.gpio.config import Failsafe, InputPin, OutputPin


@functools.cache
def pin_factory(name: str) -> Any:
    """The gpiozero pin factory called ``name`` (one instance per name), or None for gpiozero's
    own choice: ``gpiozero.Device.pin_factory`` when set (tests inject a MockFactory there),
    else its default (lgpio on a Raspberry Pi)."""
    if name == "default":
        return None
    for ep in entry_points(group="gpiozero_pin_factories"):
        if ep.name == name:
            try:
                return ep.load()()
            except Exception as exc:  # the factory's own import or hardware error
                raise PermanentError(f"gpio: pin factory {name!r} unavailable: {exc}") from exc
    raise PermanentError(f"gpio: unknown pin factory {name!r}")


class DebouncedInput:
    """One input pin; ``on_change(active)`` runs on the loop for each debounced change."""

    def __init__(
        self,
        cfg: InputPin,
        on_change: Callable[[bool], None],
        *,
        factory: Any = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.cfg = cfg
        self._on_change = on_change
        self._loop = loop or asyncio.get_running_loop()
        pull_up = {"up": True, "down": False, "none": None}[cfg.pull]
        try:
            self._dev = DigitalInputDevice(
                cfg.pin,
                pull_up=pull_up,
                active_state=cfg.active_high if pull_up is None else None,
                pin_factory=factory,
            )
        except GPIOZeroError as exc:
            raise PermanentError(f"gpio: input pin {cfg.pin}: {exc}") from exc
        self._timer: asyncio.TimerHandle | None = None
        self.edges = 0
        self.active = (
            self._read()
        )  # raw level and our polarity: independent of gpiozero's pull logic
        self._dev.when_activated = self._edge_from_thread
        self._dev.when_deactivated = self._edge_from_thread

    def _read(self) -> bool:
        raw = bool(self._dev.pin.state)
        return raw if self.cfg.active_high else not raw

    def _edge_from_thread(self) -> None:
        self._loop.call_soon_threadsafe(self._edge)

    def _edge(self) -> None:
        self.edges += 1
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self.cfg.debounce_s, self._settle)

    def _settle(self) -> None:
        self._timer = None
        level = self._read()
        if level != self.active:
            self.active = level
            self._on_change(level)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._dev.when_activated = None
        self._dev.when_deactivated = None
        self._dev.close()


class Output:
    """One output pin; ``on``/``off`` are quick register writes, safe from any thread.

    With a ``failsafe`` pull (relays), the pin's internal pull is set to it before the pin
    becomes an output, and again when it is closed: the pull stays while the pin drives,
    so a pin released without our help (the process killed, the kernel returning its
    lines to inputs) falls to the failsafe level alongside the external resistor.
    """

    def __init__(
        self, cfg: OutputPin, *, factory: Any = None, failsafe: Failsafe | None = None
    ) -> None:
        self._pin: Any = None
        self._failsafe = failsafe
        try:
            if failsafe is not None:
                Device.ensure_pin_factory()
                self._pin = (factory or Device.pin_factory).pin(cfg.pin)
                self._pull_to_failsafe()
            self._dev = DigitalOutputDevice(
                cfg.pin, active_high=cfg.active_high, initial_value=False, pin_factory=factory
            )
        except GPIOZeroError as exc:
            raise PermanentError(f"gpio: output pin {cfg.pin}: {exc}") from exc

    def _pull_to_failsafe(self) -> None:
        self._pin.function = "input"
        self._pin.pull = "down" if self._failsafe == "pull_down" else "up"

    @property
    def is_on(self) -> bool:
        return bool(self._dev.value)

    def set(self, on: bool) -> None:
        if on:
            self._dev.on()
        else:
            self._dev.off()

    def blink(self, on_s: float, off_s: float) -> None:
        self._dev.blink(on_time=on_s, off_time=off_s, background=True)

    def close(self) -> None:
        self._dev.off()
        self._dev.close()
        if self._pin is not None:
            # Some pin libraries drop the pull when they let go of a pin: put it back.
            with contextlib.suppress(GPIOZeroError):
                self._pull_to_failsafe()
