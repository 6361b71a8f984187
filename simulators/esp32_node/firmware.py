"""A simulated node's two firmware slots and its bootloader (PROTOCOL.md §5).

The running image sits in one slot; FW_BEGIN erases the other and states the
new image's size, SHA-256 and version, FW_CHUNKs fill it in order (a chunk
whose CRC-32 does not match, or at another offset than the next, is refused;
the last chunk again is a retry and acknowledged again), FW_COMMIT checks the
whole image's hash and boots it **on trial**: the node says HELLO with the new
version and a new boot id. FW_CONFIRM keeps it. A trial image not confirmed
within the commit's ``confirm_timeout_s`` is rolled back by the bootloader
(another reboot, the old version again).

Fault knobs: ``bad_image`` (the next image committed hangs at boot: the node
stays silent until the bootloader rolls it back), ``corrupt_flash`` (one
byte of the next chunk written lands wrong: the commit's hash check fails).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from simulators.esp32_node.firmware_wire import FwBegin, FwChunk, FwCommit, FwConfirm

SLOT_SIZE = 4 * 1024 * 1024
BOOT_DELAY_S = 0.05  # from the ACK of FW_COMMIT to the new image's first frame


@dataclass(slots=True)
class Slot:
    version: str
    image: bytearray = field(default_factory=bytearray)


@dataclass(slots=True)
class FirmwareKnobs:
    bad_image: bool = False
    corrupt_flash: bool = False


class FirmwareSlots:
    """The node's firmware state. The node calls :meth:`command`, :meth:`tick`, :attr:`hung`."""

    def __init__(self, version: str) -> None:
        self.slots = [Slot(version), Slot("")]
        self.active = 0  # the slot the node runs
        self.knobs = FirmwareKnobs()
        self._expect: FwBegin | None = None
        self._last_offset = -1
        self.trial_until: float | None = None  # a trial image runs; rolled back after this
        self.reboot_at: float | None = None  # FW_COMMIT accepted: reboot into the new slot then
        self._confirm_timeout_s = 0.0
        self._bad = False  # the image booting now hangs
        self.hung = False
        self.rollbacks = 0
        self.installed: list[str] = []  # versions confirmed, in order

    @property
    def version(self) -> str:
        return self.slots[self.active].version

    def command(self, cmd: FwBegin | FwChunk | FwCommit | FwConfirm, now: float) -> int:
        """Apply one FW_* command; the ACK status (0 OK, 1 INVALID)."""
        inactive = self.slots[1 - self.active]
        match cmd:
            case FwBegin():
                if cmd.size <= 0 or cmd.size > SLOT_SIZE or self.trial_until is not None:
                    return 1
                self._expect = cmd
                self._last_offset = -1
                inactive.version, inactive.image = "", bytearray()
                return 0
            case FwChunk():
                if self._expect is None or not cmd.crc_ok():
                    return 1
                if cmd.offset == self._last_offset:
                    return 0  # the same chunk again: a retry
                end = cmd.offset + len(cmd.data)
                if cmd.offset != len(inactive.image) or end > self._expect.size:
                    return 1
                data = bytearray(cmd.data)
                if self.knobs.corrupt_flash and data:
                    self.knobs.corrupt_flash = False
                    data[0] ^= 0xFF
                inactive.image += data
                self._last_offset = cmd.offset
                return 0
            case FwCommit():
                exp = self._expect
                if exp is None or len(inactive.image) != exp.size:
                    return 1
                if hashlib.sha256(inactive.image).digest() != exp.sha256:
                    self._expect, inactive.image = None, bytearray()
                    return 1
                inactive.version = exp.version
                self._expect = None
                self._confirm_timeout_s = float(cmd.confirm_timeout_s)
                self.reboot_at = now + BOOT_DELAY_S
                return 0
            case FwConfirm():
                if self.trial_until is None or self.hung:
                    return 1
                self.trial_until = None
                self.installed.append(self.version)
                return 0
        return 1  # pragma: no cover

    def tick(self, now: float) -> str | None:
        """Time passing: ``"boot"`` when the node must reboot now (into whatever is active)."""
        if self.reboot_at is not None and now >= self.reboot_at:
            self.reboot_at = None
            self.active = 1 - self.active
            self.trial_until = now + self._confirm_timeout_s
            self._bad, self.knobs.bad_image = self.knobs.bad_image, False
            self.hung = self._bad
            return "boot"
        if self.trial_until is not None and now >= self.trial_until:
            # The bootloader: the trial image was not confirmed in time, back to the old one.
            self.trial_until = None
            self.active = 1 - self.active
            self.hung = False
            self.rollbacks += 1
            return "boot"
        return None
