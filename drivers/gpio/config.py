"""The ``[gpio]`` section of ``station.toml``: what is wired to the Pi's own pins.

Validated here (the controller keeps the section as a raw dict). Pins are
gpiozero pin names (``17``, ``"GPIO17"``, ``"BOARD11"``). Input polarity is
explicit: ``active_high = false`` with ``pull = "up"`` is a switch to ground.

An outlet relay on a Pi pin is refused unless the config declares what keeps
it off when the station's process is gone (``drivers/gpio/FAILSAFE.md``): the
relay's ``failsafe`` pull resistor (matching its polarity), released pins that
become inputs (``released_pins = "input"``) and the Pi's hardware watchdog
(``hardware_watchdog = true``).
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


Failsafe = Literal["pull_down", "pull_up"]


class RelayPin(OutputPin):
    """An outlet relay's driver input. ``failsafe``: the resistor wired on that input, which
    decides the level of a pin the Pi lets go of (process killed, Pi rebooting): it must
    mean "relay off" — ``pull_down`` for an active-high driver, ``pull_up`` for an active-low one.
    The station also sets the pin's internal pull the same way, as a second line."""

    failsafe: Failsafe | None = None


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
    relay: RelayPin | None = None
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
    grid_limit: InputPin | None = Field(
        default=None,
        description="the grid operator's control contact (§14a EnWG): active = the site is "
        "capped at [external] grid_operator_kw",
    )
    bays: list[GpioBay] = Field(default_factory=list)
    hardware_watchdog: bool = Field(
        default=False,
        description="the Pi's hardware watchdog is on (systemd RuntimeWatchdogSec=); needed for "
        "relays",
    )
    released_pins: Literal["input", "kept"] = Field(
        default="kept",
        description="what the kernel does with the pins of a process that died: 'kept' (Raspberry "
        "Pi OS default) or 'input' (dtparam=strict_gpiod); relays need 'input'",
    )
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
        if self.grid_limit is not None:
            out.append(("grid_limit", self.grid_limit.pin))
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


def relay_failsafe_problems(g: GpioConfig) -> list[str]:
    """What is missing for every GPIO relay to fall off by itself when the process dies."""
    out: list[str] = []
    relays = [(i, b.relay) for i, b in enumerate(g.bays) if b.relay is not None]
    for i, relay in relays:
        where = f"gpio.bays[{i}].relay.failsafe"
        off_level = "pull_down" if relay.active_high else "pull_up"
        if relay.failsafe is None:
            out.append(
                f"{where}: say what holds this relay off when the station's process dies: "
                f'"{off_level}" (a {off_level.replace("_", "-")} resistor on the relay '
                f"driver's input, for this {'active-high' if relay.active_high else 'active-low'}"
                " relay); see drivers/gpio/FAILSAFE.md"
            )
        elif relay.failsafe != off_level:
            out.append(
                f'{where}: "{relay.failsafe}" would switch this '
                f"{'active-high' if relay.active_high else 'active-low'} relay ON when the Pi "
                f'lets go of its pin; wire and declare "{off_level}" instead'
            )
    if relays and not g.hardware_watchdog:
        out.append(
            "gpio.hardware_watchdog: a relay on a Pi pin needs the Pi's hardware watchdog "
            "(RuntimeWatchdogSec= in systemd, installed by systemd/install.sh); once it is on, "
            "set hardware_watchdog = true"
        )
    if relays and g.released_pins != "input":
        out.append(
            "gpio.released_pins: a relay on a Pi pin needs the pins of a dead process to become "
            'inputs (dtparam=strict_gpiod in the Pi\'s config.txt); then set released_pins = "input"'
        )
    return out


def check_gpio(section: dict[str, Any] | None) -> list[str]:
    """Problems of the ``[gpio]`` section as ``gpio.path: message`` lines (none when absent)."""
    if section is None:
        return []
    try:
        g = GpioConfig.model_validate(section)
    except ValidationError as err:
        out = []
        for e in err.errors():
            path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in e["loc"])
            path = path.replace(".[", "[")
            out.append(
                f"gpio{'.' + path if path else ''}: {e['msg'].removeprefix('Value error, ')}"
            )
        return out
    return relay_failsafe_problems(g)


def parse_gpio(section: dict[str, Any] | None) -> GpioConfig:
    problems = check_gpio(section)
    if problems:
        raise PermanentError("; ".join(problems))
    return GpioConfig.model_validate(section or {})
