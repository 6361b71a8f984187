"""Is one device speaking for a node address? Sequence lines and identity, per frame. Pure.

Every sender numbers its frames with its own counter (PROTOCOL.md §1), so
the frames of one node form one *line* of sequence numbers. A line may
restart (the node rebooted, its HELLO first): the new line is then on
probation for a moment, and its reports are held back. If the old line
carries on meanwhile, two devices answer on the address — an address
conflict, and what the new line said is dropped instead of delivered. A
HELLO whose serial is not the configured one, or not the one heard before
on this address, is a conflict too. The adapter reports conflicts; the
controller decides what they mean for the bay.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controller.ports import ConflictReason

SEQ_WINDOW = 64  # a step forward of up to this many is the same line (lost frames in between)


class StepKind(enum.Enum):
    OK = "ok"  # continues the current line
    REPEAT = "repeat"  # a frame already seen (a QoS 1 redelivery): not delivered again
    NEW_LINE = "new_line"  # a line (re)started: held back until its probation is over


@dataclass(frozen=True, slots=True)
class Finding:
    reason: ConflictReason
    detail: str


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    gaps: int = 0  # frames lost before this one on the same line
    finding: Finding | None = None


@dataclass(slots=True)
class FrameGuard:
    """The sequence lines and the identity heard on one node address."""

    expected_serial: str | None = None
    probation_s: float = 2.5
    last_seq: int | None = None
    old_seq: int | None = None
    probation_until: float | None = None
    serial: str | None = None
    firmware: str = ""
    heard_hello: bool = False

    @property
    def on_probation(self) -> bool:
        return self.probation_until is not None

    def forget_sequence(self) -> None:
        """The node was offline: whatever it numbers next starts afresh (identity is kept)."""
        self.last_seq = self.old_seq = self.probation_until = None

    def end_probation(self) -> None:
        """A conflict was found: nothing is held any longer (the old line is still watched)."""
        self.probation_until = None

    def sequence(
        self, seq: int, now: float, redelivery_window: int = 0, *, restart: bool = False
    ) -> Step:
        """Place frame ``seq`` on a line.

        ``redelivery_window``: how far back a frame may be and still be a repeat (a broker
        redelivering after a reconnect; 0 on a serial bus). ``restart``: the frame is a HELLO
        numbered 1, how a node that rebooted begins its new count.
        """
        if self.probation_until is not None and now >= self.probation_until:
            self.probation_until = self.old_seq = None  # the old line fell silent: a restart
        last = self.last_seq
        if last is None:
            self.last_seq = seq
            return Step(StepKind.OK)
        ahead = (seq - last) & 0xFFFF
        if ahead == 0:
            return Step(StepKind.REPEAT)
        old = self.old_seq
        ahead_old = (seq - old) & 0xFFFF if old is not None else 0
        if 0 < ahead_old <= SEQ_WINDOW < ahead:
            # The count from before the restart goes on, and this frame cannot be the new one's.
            self.old_seq = seq
            return Step(StepKind.OK, finding=self._two(seq, f"continues the count {old}", last))
        if ahead <= SEQ_WINDOW:
            self.last_seq = seq
            return Step(StepKind.OK, gaps=ahead - 1)
        if (last - seq) & 0xFFFF <= redelivery_window:
            return Step(StepKind.REPEAT)
        self.old_seq, self.last_seq = last, seq
        if self.probation_until is not None and not restart:
            # One node restarts with a HELLO numbered 1; yet another count meanwhile is a second
            # device (e.g. one saying HELLO and TELEMETRY in turn, numbering on from its own).
            return Step(StepKind.OK, finding=self._two(seq, "starts yet another count", last))
        self.probation_until = now + self.probation_s
        return Step(StepKind.NEW_LINE)

    @staticmethod
    def _two(seq: int, what: str, last: int) -> Finding:
        return Finding(
            ConflictReason.TWO_SENDERS, f"frame {seq} {what} while another sender counts at {last}"
        )

    def identity(
        self, serial: str | None, firmware: str, *, restart: bool = False
    ) -> Finding | None:
        """Check a HELLO against the configured serial and the HELLO heard before.

        A node's serial never changes; its firmware changes only across a restart (an
        update reboots it, and its HELLO is numbered 1 then).
        """
        said = serial or "no serial"
        if self.expected_serial is not None and serial != self.expected_serial:
            return Finding(
                ConflictReason.IDENTITY_MISMATCH,
                f"the node says {said}, the bay is configured for {self.expected_serial}",
            )
        heard, prev_serial, prev_fw = self.heard_hello, self.serial, self.firmware
        self.heard_hello, self.serial, self.firmware = True, serial, firmware
        if not heard:
            return None
        if serial != prev_serial:
            # A swapped node is reported once; alternating serials every time.
            return Finding(
                ConflictReason.TWO_IDENTITIES,
                f"{prev_serial or 'no serial'} and then {said} on the same address",
            )
        if firmware != prev_fw and not restart:
            return Finding(
                ConflictReason.TWO_IDENTITIES,
                f"firmware {prev_fw} and then {firmware} without a restart in between",
            )
        return None
