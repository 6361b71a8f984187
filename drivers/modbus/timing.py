"""Worst-case timing of a meter's poll (pure), for the config check.

A poll is the meter's fast requests plus one slow one (see
:func:`~drivers.modbus.planner.plan_poll`). Each request costs the meter's
answer time (``answer_time_s`` in its map, :data:`DEFAULT_ANSWER_TIME_S` when
the maker does not document it) plus, on RS-485, the bytes on the wire. A
request may also wait for one request of every other meter on the same bus
(the bus lock serves waiters in turn). The values read on every poll are
oldest just before the next reading replaces them (:func:`worst_age_s`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .planner import PollPlan, ReadBlock

DEFAULT_ANSWER_TIME_S = 0.2
"""Assumed answer time of a meter whose map does not state one."""
WARN_FRACTION = 0.75
"""check-config warns when the grid meter's worst age reaches this share of its timeout."""
_BITS_PER_CHAR = 11  # RTU: start, 8 data, parity or a second stop, stop
_REQUEST_BYTES = 8  # unit, function, address, count, CRC
_ANSWER_OVERHEAD_BYTES = 5  # unit, function, byte count, CRC


@dataclass(frozen=True, slots=True)
class Link:
    """What the wire adds: the baud rate of an RS-485 line (None over TCP) and its frame gap."""

    baudrate: int | None = None
    gap_s: float = 0.0

    def wire_s(self, registers: int) -> float:
        if self.baudrate is None:
            return 0.0
        chars = _REQUEST_BYTES + _ANSWER_OVERHEAD_BYTES + 2 * registers
        return chars * _BITS_PER_CHAR / self.baudrate + 2 * self.gap_s


def request_s(block: ReadBlock, answer_time_s: float, link: Link) -> float:
    return answer_time_s + link.wire_s(block.count)


def fast_s(plan: PollPlan, answer_time_s: float, link: Link) -> float:
    """Time of the requests every poll makes."""
    return sum(request_s(b, answer_time_s, link) for b in plan.fast)


def slow_s(plan: PollPlan, answer_time_s: float, link: Link) -> float:
    """Time of the longest of the requests made one per poll, in turn."""
    return max((request_s(b, answer_time_s, link) for b in plan.slow), default=0.0)


def poll_s(plan: PollPlan, answer_time_s: float, link: Link) -> float:
    """Worst time of one steady-state poll: every fast request and the longest slow one."""
    return fast_s(plan, answer_time_s, link) + slow_s(plan, answer_time_s, link)


def longest_request_s(plan: PollPlan, answer_time_s: float, link: Link) -> float:
    return max((request_s(b, answer_time_s, link) for b in plan.blocks), default=0.0)


def worst_age_s(poll_interval_s: float, fast_s: float, slow_s: float) -> float:
    """Oldest the every-poll values get before the next reading replaces them.

    A poll reads its slow request first, then the fast ones; the reading is
    stamped at the first fast request. The next reading comes one period later
    (or when this poll ends, if it runs longer), after that poll's slow and fast
    requests: ``max(period, fast) + fast + slow`` at worst.
    """
    return max(poll_interval_s, fast_s) + fast_s + slow_s
