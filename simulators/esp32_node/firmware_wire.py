"""The node simulator's firmware-transfer messages, written from PROTOCOL.md §5 (not the driver).

FW_BEGIN ``cmd_id:u16 size:u32 sha256:32 bytes version_len:u8 version:utf8[≤ 32]``,
FW_CHUNK ``cmd_id:u16 offset:u32 crc32:u32 data_len:u8 data[≤ 200]``,
FW_COMMIT ``cmd_id:u16 confirm_timeout_s:u16``, FW_CONFIRM ``cmd_id:u16``; each
answered by an ACK. ``wire.py`` frames them. Decoding errors are ``ValueError``
(``wire.py`` turns them into its ``payload`` error); bytes past the known fields
are ignored, as for every message.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

FW_BEGIN, FW_CHUNK, FW_COMMIT, FW_CONFIRM = 0x13, 0x14, 0x15, 0x16
TYPES = (FW_BEGIN, FW_CHUNK, FW_COMMIT, FW_CONFIRM)
CHUNK_MAX = 200
VERSION_MAX = 32


@dataclass(frozen=True, slots=True)
class FwBegin:
    cmd_id: int
    size: int
    sha256: bytes
    version: str


@dataclass(frozen=True, slots=True)
class FwChunk:
    cmd_id: int
    offset: int
    data: bytes
    crc32: int = -1  # -1: the CRC of ``data`` is written

    def crc_ok(self) -> bool:
        return self.crc32 == binascii.crc32(self.data)


@dataclass(frozen=True, slots=True)
class FwCommit:
    cmd_id: int
    confirm_timeout_s: int


@dataclass(frozen=True, slots=True)
class FwConfirm:
    cmd_id: int


FwMessage = FwBegin | FwChunk | FwCommit | FwConfirm


def _u(data: bytes, at: int, n: int) -> int:
    part = data[at : at + n]
    if len(part) != n:
        raise ValueError("truncated")
    return int.from_bytes(part, "big")


def _w(value: int, n: int) -> bytes:
    return value.to_bytes(n, "big")  # OverflowError for a value that does not fit


def encode(msg: FwMessage) -> bytes:
    """Type byte and payload."""
    if isinstance(msg, FwBegin):
        version = msg.version.encode("utf-8")
        if len(version) > VERSION_MAX or len(msg.sha256) != 32:
            raise ValueError("version longer than 32 bytes or digest not 32 bytes")
        return (
            bytes([FW_BEGIN])
            + _w(msg.cmd_id, 2)
            + _w(msg.size, 4)
            + msg.sha256
            + bytes([len(version)])
            + version
        )
    if isinstance(msg, FwChunk):
        if len(msg.data) > CHUNK_MAX:
            raise ValueError("chunk longer than 200 bytes")
        crc = binascii.crc32(msg.data) if msg.crc32 == -1 else msg.crc32
        return (
            bytes([FW_CHUNK])
            + _w(msg.cmd_id, 2)
            + _w(msg.offset, 4)
            + _w(crc, 4)
            + bytes([len(msg.data)])
            + msg.data
        )
    if isinstance(msg, FwCommit):
        return bytes([FW_COMMIT]) + _w(msg.cmd_id, 2) + _w(msg.confirm_timeout_s, 2)
    return bytes([FW_CONFIRM]) + _w(msg.cmd_id, 2)


def decode(kind: int, p: bytes) -> FwMessage:
    """The message of type ``kind`` from its payload ``p`` (after the type byte)."""
    if kind == FW_BEGIN:
        digest = p[6:38]
        if len(digest) != 32:
            raise ValueError("truncated")
        n = _u(p, 38, 1)
        version = p[39 : 39 + n]
        if n > VERSION_MAX or len(version) != n:
            raise ValueError("version too long or truncated")
        return FwBegin(_u(p, 0, 2), _u(p, 2, 4), digest, version.decode("utf-8"))
    if kind == FW_CHUNK:
        n = _u(p, 10, 1)
        data = p[11 : 11 + n]
        if n > CHUNK_MAX or len(data) != n:
            raise ValueError("chunk too long or truncated")
        return FwChunk(_u(p, 0, 2), _u(p, 2, 4), data, _u(p, 6, 4))
    if kind == FW_COMMIT:
        return FwCommit(_u(p, 0, 2), _u(p, 2, 2))
    if kind == FW_CONFIRM:
        return FwConfirm(_u(p, 0, 2))
    raise ValueError(f"not a firmware message type 0x{kind:02x}")
