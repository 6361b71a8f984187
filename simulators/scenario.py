"""Scenario files: a timed list of ``sim`` actions, run by ``edge-station sim run-scenario FILE``.

A scenario is TOML::

    name = "Evening peak"
    description = "Four cars arrive while the building cooks dinner."

    [[steps]]
    at = 0            # seconds from the start (divided by --speed)
    do = "plug"       # any sim action: plug, unplug, offline, online, reboot, door-open,
    bay = "bay1"      # door-close, door-force, lock-jam, lock-free, estop-press,
    phases = 3        # estop-release, meter, grid, pv, camera, disk-full, disk-free,
    max_a = 16        # usb-unplug, usb-replug; with the same fields as the command line

    [[steps]]
    at = 30
    do = "expect"     # wait (up to ``within`` s, real time) until the bay's node shows this
    bay = "bay1"
    within = 15
    drawing = true    # relay_on, drawing, host_silent, locked, door_closed,
                      # setpoint_at_most, setpoint_at_least

The whole file is checked before the first step runs; a step that fails stops
the run with a sentence naming the step.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from simulators.sim_actions import SimCommandError, call, do

ACTIONS: dict[str, set[str]] = {
    "plug": {"bay", "phases", "max_a", "soc_pct", "capacity_wh", "charger_a"},
    "unplug": {"bay"},
    "offline": {"bay"},
    "online": {"bay"},
    "reboot": {"bay"},
    "door-open": {"bay"},
    "door-close": {"bay"},
    "door-force": {"bay"},
    "lock-jam": {"bay"},
    "lock-free": {"bay"},
    "estop-press": set(),
    "estop-release": set(),
    "meter": {"fault", "meter", "code", "delay_s"},
    "grid": {"amps"},
    "pv": {"kw"},
    "camera": {"code", "bay"},
    "disk-full": set(),
    "disk-free": set(),
    "usb-unplug": set(),
    "usb-replug": set(),
    "expect": {
        "bay",
        "within",
        "relay_on",
        "drawing",
        "host_silent",
        "locked",
        "door_closed",
        "setpoint_at_most",
        "setpoint_at_least",
    },
}
NEEDS_BAY = {"plug", "unplug", "offline", "online", "reboot", "expect"} | {
    a for a in ACTIONS if a.startswith(("door-", "lock-"))
}
DRAWING_A = 0.5  # a node drawing more than this on a phase is charging


class ScenarioError(Exception):
    """A scenario that cannot be run, or a step that failed: a sentence naming the step."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class Step:
    index: int
    at: float
    action: dict[str, Any]

    @property
    def what(self) -> str:
        return str(self.action["do"])


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    steps: list[Step]


def load(path: Path) -> Scenario:
    """Read and check a scenario file; every problem is a :class:`ScenarioError` sentence."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ScenarioError(
            f"Cannot read the scenario {path}: {err.strerror or err}.", usage=True
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ScenarioError(f"{path} is not valid TOML: {err}.", usage=True) from None
    unknown = set(data) - {"name", "description", "steps"}
    if unknown:
        raise ScenarioError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}.", usage=True)
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ScenarioError(f"{path}: a scenario needs at least one [[steps]] entry.", usage=True)
    steps = []
    for i, raw in enumerate(raw_steps, start=1):
        steps.append(_step(path, i, raw))
    steps.sort(key=lambda s: (s.at, s.index))
    return Scenario(str(data.get("name", path.stem)), str(data.get("description", "")), steps)


def _step(path: Path, i: int, raw: Any) -> Step:
    where = f"{path}: step {i}"
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where} is not a table.", usage=True)
    what = raw.get("do")
    if what not in ACTIONS:
        known = ", ".join(sorted(ACTIONS))
        raise ScenarioError(f"{where}: 'do' must be one of {known}, not {what!r}.", usage=True)
    at = raw.get("at", 0)
    if not isinstance(at, (int, float)) or isinstance(at, bool) or at < 0:
        raise ScenarioError(
            f"{where}: 'at' is a number of seconds from the start, not {at!r}.", usage=True
        )
    extra = set(raw) - {"do", "at"} - ACTIONS[what]
    if extra:
        raise ScenarioError(
            f"{where} ({what}): unknown key(s) {', '.join(sorted(extra))}.", usage=True
        )
    if what in NEEDS_BAY and not raw.get("bay"):
        raise ScenarioError(f"{where} ({what}) needs a bay.", usage=True)
    if what == "expect" and len(set(raw) - {"do", "at", "bay", "within"}) == 0:
        raise ScenarioError(f"{where} (expect) names nothing to expect.", usage=True)
    return Step(i, float(at), {k: v for k, v in raw.items() if k != "at"})


# --------------------------------------------------------------------------- running


def _matches(state: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """What of ``want`` the node's ``state`` does not show (empty: all of it)."""
    wrong = []
    drawing = max(state["current_a"]) > DRAWING_A
    checks: dict[str, Callable[[Any], bool]] = {
        "relay_on": lambda v: state["relay_on"] == v,
        "drawing": lambda v: drawing == v,
        "host_silent": lambda v: state["host_silent"] == v,
        "locked": lambda v: state["locked"] == v,
        "door_closed": lambda v: state["door_closed"] == v,
        "setpoint_at_most": lambda v: state["setpoint_a"] <= float(v),
        "setpoint_at_least": lambda v: state["setpoint_a"] >= float(v),
    }
    for key, value in want.items():
        if key in checks and not checks[key](value):
            wrong.append(f"{key} = {value}")
    return wrong


def expect(
    directory: Path, action: dict[str, Any], sleep: Callable[[float], None] = time.sleep
) -> str:
    bay = str(action["bay"])
    within = float(action.get("within", 10.0))
    deadline = time.monotonic() + within
    while True:
        state = call(directory, "state", bay)
        wrong = _matches(state, action)
        if not wrong:
            shown = ", ".join(
                f"{k} = {v}" for k, v in action.items() if k not in ("do", "bay", "within")
            )
            return f"{bay} shows {shown}."
        if time.monotonic() > deadline:
            amps = "/".join(f"{a:.1f}" for a in state["current_a"])
            raise SimCommandError(
                f"{bay} did not show {', '.join(wrong)} within {within:g} s (relay "
                f"{'on' if state['relay_on'] else 'off'}, setpoint {state['setpoint_a']:g} A, "
                f"drawing {amps} A)."
            )
        sleep(0.2)  # the node lives in another process: its state is polled


def run(
    directory: Path,
    scenario: Scenario,
    *,
    speed: float = 1.0,
    out: TextIO,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    started = time.monotonic()
    print(f"Scenario: {scenario.name} ({len(scenario.steps)} steps)", file=out, flush=True)
    for step in scenario.steps:
        wait = started + step.at / speed - time.monotonic()
        if wait > 0:
            sleep(wait)  # the scenario's own timeline
        try:
            said = (
                expect(directory, step.action)
                if step.what == "expect"
                else do(directory, step.action)
            )
        except SimCommandError as err:
            raise ScenarioError(
                f"Step {step.index} ({step.what}) at {step.at:g} s failed: {err}"
            ) from None
        print(f"[{time.monotonic() - started:7.1f} s] {said}", file=out, flush=True)
    print(f"Scenario {scenario.name!r} done.", file=out, flush=True)


def run_file(directory: Path, path: Path, *, speed: float = 1.0, out: TextIO) -> int:
    if not speed > 0:
        raise ScenarioError("--speed must be above 0.", usage=True)
    scenario = load(_find(path))
    call(directory, "ping")  # no simulation: say so before the first step
    run(directory, scenario, speed=speed, out=out)
    return 0


def _find(path: Path) -> Path:
    """A path, or the name of a shipped scenario (``evening-peak``)."""
    if path.exists():
        return path
    shipped = Path(__file__).parent / "scenarios" / path.with_suffix(".toml").name
    return shipped if shipped.exists() else path
