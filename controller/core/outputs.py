"""The one rule for what a bay's node is told: relay on or off, and at how many amps.

Pure (no I/O, no clock): the station's output loop gathers :class:`OutputInputs`
and sends what :func:`decide` returns. The rule:

- A bay's current is the minimum of everything that may limit it: what its
  session wants (nothing while no session may draw), the load manager's
  setpoint, an installer test output, and the bay's own maximum.
- A bay fault, an offline node, the emergency stop (pressed, or latched until
  an owner clears it) and every safe-mode cause that forbids outputs switch the
  relay off for every purpose: sessions, holds, installer tests and the
  central system's commands alike. Such an "off" goes out even before the load
  manager's first decision.
- An installer test holds an output only on an idle bay and only while no
  safe-mode cause at all is active: a cause that lets sessions go on (a failed
  grid meter keeps them within the fallback budget) still ends a test.

Also here: :func:`floor_steps`, how every limit is put on a wire (floored,
never rounded up).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

# Safe-mode causes under which sessions may go on drawing (each has its own
# fallback: the journal refuses only new sessions, a failed grid meter leaves
# the load manager on its fallback budget, ...). Every other cause, known or
# not, forbids outputs: when in doubt the relay goes off.
CAUSES_KEEPING_OUTPUTS = frozenset({"journal", "grid_meter", "overcurrent", "config"})


def forbids_outputs(cause: str) -> bool:
    """Whether safe-mode ``cause`` switches every relay off."""
    return cause not in CAUSES_KEEPING_OUTPUTS


class Why(StrEnum):
    """Why a bay gets the output it gets (the first that applies, in this order)."""

    EMERGENCY_STOP = "emergency_stop"
    FAULT = "fault"
    NODE_OFFLINE = "node_offline"
    SAFE_MODE = "safe_mode"
    TEST = "test"
    SESSION = "session"
    IDLE = "idle"
    WAITING = "waiting_for_load_manager"


class TestEnd(StrEnum):
    """Why an installer test output ends before (or at) its time."""

    __test__ = False  # not a pytest class

    EXPIRED = "expired"
    SESSION = "session"
    EMERGENCY_STOP = "emergency_stop"
    FAULT = "fault"
    NODE_OFFLINE = "node_offline"
    SAFE_MODE = "safe_mode"


TEST_END_MESSAGES = {
    TestEnd.EXPIRED: "The test output ended at its time.",
    TestEnd.SESSION: "A session started on this bay, so the test output ended.",
    TestEnd.EMERGENCY_STOP: "The emergency stop ended the test output: the relay is off.",
    TestEnd.FAULT: "The bay reported a fault, so the test output ended: the relay is off.",
    TestEnd.NODE_OFFLINE: "The bay's node went offline, so the test output ended.",
    TestEnd.SAFE_MODE: "The station entered safe mode, so the test output ended.",
}


@dataclass(frozen=True, slots=True)
class TestOutput:
    """An installer's test output on an idle bay, held until ``until`` (monotonic seconds)."""

    __test__ = False  # not a pytest class

    relay_on: bool
    current_a: float
    until: float


@dataclass(frozen=True, slots=True)
class OutputInputs:
    """Everything that may limit one bay's output at one instant."""

    now: float  # monotonic, the clock of ``TestOutput.until``
    max_current_a: float  # the bay's configured maximum
    want_relay: bool = False  # the bay's state machine lets its session draw
    session: bool = False  # a session is open on the bay
    setpoint_a: float = 0.0  # the load manager's setpoint (the bay's maximum without one)
    load_decided: bool = True  # the load manager (if any) has made its first decision
    fault: str | None = None
    node_online: bool = True
    estop_pressed: bool = False
    safe_causes: Collection[str] = ()
    test: TestOutput | None = None


@dataclass(frozen=True, slots=True)
class Output:
    relay_on: bool
    current_a: float
    why: Why
    send: bool  # False: leave the node on its lease (or its safe share) for now
    test_end: TestEnd | None = None  # the running test ends now (None: keeps running, or none)

    @property
    def forced_off(self) -> bool:
        return self.why in _FORCED


_FORCED = frozenset({Why.EMERGENCY_STOP, Why.FAULT, Why.NODE_OFFLINE, Why.SAFE_MODE})


def _amps(value: float) -> float:
    """A limit that is not a number, or below zero, is no current at all."""
    return value if value > 0 and math.isfinite(value) else 0.0


def _forced(i: OutputInputs) -> Why | None:
    if i.estop_pressed or "emergency_stop" in i.safe_causes:
        return Why.EMERGENCY_STOP
    if i.fault is not None:
        return Why.FAULT
    if not i.node_online:
        return Why.NODE_OFFLINE
    if any(forbids_outputs(c) for c in i.safe_causes):
        return Why.SAFE_MODE
    return None


def _test_end(i: OutputInputs, forced: Why | None) -> TestEnd | None:
    if i.test is None:
        return None
    if forced is not None:
        return TestEnd(forced.value)
    if i.safe_causes:
        return TestEnd.SAFE_MODE
    if i.session:
        return TestEnd.SESSION
    if i.test.until <= i.now:
        return TestEnd.EXPIRED
    return None


def decide(i: OutputInputs) -> Output:
    """The output of one bay: see the module docstring for the rule."""
    forced = _forced(i)
    test_end = _test_end(i, forced)
    if forced is not None:
        return Output(False, 0.0, forced, send=True, test_end=test_end)
    cap = _amps(i.max_current_a)
    if i.test is not None and test_end is None:
        amps = min(_amps(i.test.current_a), cap) if i.test.relay_on else 0.0
        return Output(i.test.relay_on, amps, Why.TEST, send=True)
    amps = min(_amps(i.setpoint_a), cap) if i.want_relay else 0.0
    if amps > 0:
        why = Why.SESSION
    else:
        why = Why.SESSION if i.session else Why.IDLE
    if not i.load_decided:
        # Until the load manager's first decision the node keeps its lease or falls
        # to its safe share; only a test ending now needs its relay off at once.
        return Output(False, 0.0, Why.WAITING, send=test_end is not None, test_end=test_end)
    return Output(amps > 0, amps, why, send=True, test_end=test_end)


def floor_steps(value: float, per_unit: int) -> int:
    """The largest whole number of ``1/per_unit`` steps not above ``value``.

    Every limit put on a wire is floored, never rounded up: a 6.06 A safe share
    in 0.1 A steps is 60 (6.0 A), since the site's proof sums 6.06, not 6.1.
    The float product ``value * per_unit`` may land a hair on either side of a
    whole number, so the result is corrected until ``n / per_unit <= value <
    (n + 1) / per_unit`` holds as the receiver computes it.
    """
    if not math.isfinite(value):
        raise ValueError(f"not a finite limit: {value!r}")
    n = math.floor(value * per_unit)
    while n / per_unit > value:
        n -= 1
    while (n + 1) / per_unit <= value:
        n += 1
    return n


__all__ = [
    "CAUSES_KEEPING_OUTPUTS",
    "TEST_END_MESSAGES",
    "Output",
    "OutputInputs",
    "TestEnd",
    "TestOutput",
    "Why",
    "decide",
    "floor_steps",
    "forbids_outputs",
]
