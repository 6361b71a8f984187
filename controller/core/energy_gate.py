"""Plausibility of a node's energy counter, the figure sessions are billed on. Pure.

(Modbus meter readings have their own gate in ``controller.core.plausibility``: those
feed load management, where a failed reading only has to be left unused; here a
reading that is not booked must never be billed later either.)

A counter reading is booked only if it moved forward by no more than the bay
could have delivered since the last booked one: its maximum power (all phases
at the top of the mains tolerance, with a margin) over the time between them,
plus a little slack for readings that arrive bunched (a broker delivering
what it queued, a poll that came late) and the counter's whole-Wh steps.
Anything else is a failed reading: not booked, reported, and the next
plausible reading is measured against the last booked one, so one wild frame
never freezes metering. A counter that really restarted lower (a replaced
node, a wiped flash) is re-anchored only outside a session and only after
several readings that agree with each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAINS_MAX_V = 253.0  # 230 V + 10 % (EN 50160)
POWER_MARGIN = 1.1  # metering tolerance and the vehicle's draw above the setpoint
SLACK_S = 3.0  # readings measured this much apart may arrive together
QUANTUM_WH = 2  # the counter moves in whole Wh
AGREEING_TO_REANCHOR = 3  # consistent out-of-line readings before an idle re-anchor


class Verdict(enum.StrEnum):
    OK = "ok"
    BACKWARDS = "backwards"
    JUMP = "jump"


def bay_max_power_w(max_current_a: float, phases: int) -> float:
    """The most a bay can draw: its maximum current on each phase at the highest mains voltage."""
    return max_current_a * phases * MAINS_MAX_V


def allowed_step_wh(max_power_w: float, dt_s: float) -> float:
    """The largest counter step that ``dt_s`` seconds at ``max_power_w`` can explain."""
    return max_power_w * POWER_MARGIN * (max(0.0, dt_s) + SLACK_S) / 3600.0 + QUANTUM_WH


def check(
    anchor_wh: int, anchor_at: float | None, wh: int, now: float, max_power_w: float
) -> Verdict:
    """Is ``wh`` at ``now`` plausible after the booked ``anchor_wh`` at ``anchor_at``?

    Without ``anchor_at`` (a reading booked before its time was kept) only the direction
    can be checked.
    """
    if wh < anchor_wh:
        return Verdict.BACKWARDS
    if anchor_at is not None and wh - anchor_wh > allowed_step_wh(max_power_w, now - anchor_at):
        return Verdict.JUMP
    return Verdict.OK


@dataclass(frozen=True, slots=True)
class Doubt:
    """Out-of-line readings seen since the last booked one: the latest, and how many agree."""

    wh: int
    at: float
    agreeing: int = 1


def doubt_after(doubt: Doubt | None, wh: int, now: float, max_power_w: float) -> Doubt:
    """Fold one rejected reading into the doubt: a run of readings that agree with each other."""
    if doubt is not None and check(doubt.wh, doubt.at, wh, now, max_power_w) is Verdict.OK:
        return Doubt(wh, now, doubt.agreeing + 1)
    return Doubt(wh, now)


def reanchor(doubt: Doubt | None, in_session: bool) -> bool:
    """Accept a new counter line? Only between sessions, after enough agreeing readings."""
    return not in_session and doubt is not None and doubt.agreeing >= AGREEING_TO_REANCHOR
