"""The ``[gpio]`` section of ``station.toml``: what is wired to the Pi's own pins.

Validated here (the controller keeps the section as a raw dict). Pins are
gpiozero pin names (``17``, ``"GPIO17"``, ``"BOARD11"``). Input polarity is
explicit: ``active_high = false`` with ``pull = "up"`` is a switch to ground.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from controller.ports import PermanentError

PinName = int | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputPin(_Strict):
    """A digital input, debounced in software: a change counts once it held ``debounce_s``."""

    pin: PinName
    active_high: bool = False
    pull: Literal["up", "down", "none"] = "up"
    debounce_s: float = Field(default=0.05, ge=0, le=2)


class OutputPin(_Strict):
    pin: PinName
    active_high: bool = True


class LockConfig(_Strict):
    """A locker's lock. ``hold``: the output stays energized (``energized`` says what that means).
    ``pulse``: unlock is a pulse of ``pulse_s`` that releases a latch; the latch locks by itself
    when the door closes. ``feedback`` (active = locked) must confirm within ``confirm_s``."""

    output: OutputPin
    mode: Literal["hold", "pulse"] = "hold"
    energized: Literal["locked", "unlocked"] = "unlocked"
    pulse_s: float = Field(default=0.5, gt=0, le=10)
    feedback: InputPin | None = None
    confirm_s: float = Field(default=2.0, gt=0, le=30)


class GpioBay(_Strict):
    """One bay wired to the Pi. ``node`` is the bay's ``node_id`` (by default its id)."""

    node: str = Field(min_length=1)
    relay: OutputPin | None = None
    lock: LockConfig | None = None
    door: InputPin | None = Field(default=None, description="active = door closed")
    led: OutputPin | None = None
    buzzer: OutputPin | None = None
    current_a: float = Field(
        default=0.0, ge=0, le=80, description="reported while the relay is on (no meter: 0)"
    )
    voltage_v: float = Field(default=230.0, gt=0, le=500)
    alarm_s: float = Field(default=30.0, gt=0, description="how long a tamper alarm sounds")


class GpioConfig(_Strict):
    pin_factory: Literal["default", "lgpio", "rpigpio", "pigpio", "native", "mock"] = Field(
        default="default",
        description="gpiozero pin factory; default: gpiozero's choice (lgpio on a Pi)",
    )
    emergency_stop: InputPin | None = Field(default=None, description="active = pressed")
    bays: list[GpioBay] = Field(default_factory=list)
    telemetry_period_s: float = Field(default=1.0, gt=0, le=60)

    @model_validator(mode="after")
    def _unique(self) -> GpioConfig:
        nodes = [b.node for b in self.bays]
        dup = {n for n in nodes if nodes.count(n) > 1}
        if dup:
            raise ValueError(f"bays: duplicate node {sorted(dup)}")
        seen: dict[str, str] = {}
        for where, pin in self.pins():
            key = str(pin).upper().removeprefix("GPIO")
            if key in seen:
                raise ValueError(f"{where}: pin {pin} already used by {seen[key]}")
            seen[key] = where
        return self

    def pins(self) -> list[tuple[str, PinName]]:
        out: list[tuple[str, PinName]] = []
        if self.emergency_stop is not None:
            out.append(("emergency_stop", self.emergency_stop.pin))
        for i, b in enumerate(self.bays):
            for name in ("relay", "door", "led", "buzzer"):
                p = getattr(b, name)
                if p is not None:
                    out.append((f"bays[{i}].{name}", p.pin))
            if b.lock is not None:
                out.append((f"bays[{i}].lock.output", b.lock.output.pin))
                if b.lock.feedback is not None:
                    out.append((f"bays[{i}].lock.feedback", b.lock.feedback.pin))
        return out

    def bay(self, node_id: str) -> GpioBay:
        for b in self.bays:
            if b.node == node_id:
                return b
        raise PermanentError(f"gpio: no [[gpio.bays]] entry for node {node_id!r}")


def check_gpio(section: dict[str, Any] | None) -> list[str]:
    """Problems of the ``[gpio]`` section as ``gpio.path: message`` lines (none when absent)."""
    if section is None:
        return []
    try:
        GpioConfig.model_validate(section)
    except ValidationError as err:
        out = []
        for e in err.errors():
            path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in e["loc"])
            path = path.replace(".[", "[")
            out.append(
                f"gpio{'.' + path if path else ''}: {e['msg'].removeprefix('Value error, ')}"
            )
        return out
    return []


def parse_gpio(section: dict[str, Any] | None) -> GpioConfig:
    problems = check_gpio(section)
    if problems:
        raise PermanentError("; ".join(problems))
    return GpioConfig.model_validate(section or {})
