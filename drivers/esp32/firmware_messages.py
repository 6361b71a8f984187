"""The firmware-transfer messages of the node protocol (PROTOCOL.md §5) and their payloads.

Host → node commands, each answered by an ACK like every command: FW_BEGIN
(size, SHA-256 and version of the image for the inactive slot), FW_CHUNK (an
offset, the chunk's CRC-32 and up to :data:`MAX_CHUNK` bytes), FW_COMMIT
(check the whole image, boot it on trial), FW_CONFIRM (keep the running
trial image). ``codec.py`` frames them; this module owns their payload bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MSG_FW_BEGIN = 0x13
MSG_FW_CHUNK = 0x14
MSG_FW_COMMIT = 0x15
MSG_FW_CONFIRM = 0x16
FIRMWARE_TYPES = frozenset({MSG_FW_BEGIN, MSG_FW_CHUNK, MSG_FW_COMMIT, MSG_FW_CONFIRM})

MAX_CHUNK = 200  # data bytes per FW_CHUNK: the frame stays within the 250-byte body
MAX_VERSION = 32
DIGEST_LEN = 32  # SHA-256

_BEGIN = struct.Struct(">HI32sB")  # cmd_id, size, sha256, version_len (version follows)
_CHUNK = struct.Struct(">HIIB")  # cmd_id, offset, crc32, data_len (data follows)
_COMMIT = struct.Struct(">HH")  # cmd_id, confirm_timeout_s
_CONFIRM = struct.Struct(">H")  # cmd_id


class FirmwarePayloadError(ValueError):
    """A firmware message whose payload breaks its layout."""


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
    crc32: int = -1  # -1: computed from ``data`` when encoded

    def crc_ok(self) -> bool:
        return self.crc32 == zlib.crc32(self.data)


@dataclass(frozen=True, slots=True)
class FwCommit:
    cmd_id: int
    confirm_timeout_s: int


@dataclass(frozen=True, slots=True)
class FwConfirm:
    cmd_id: int


FirmwareCommand = FwBegin | FwChunk | FwCommit | FwConfirm


def encode_firmware(msg: FirmwareCommand) -> bytes:
    """Type byte + payload."""
    match msg:
        case FwBegin():
            version = msg.version.encode()
            if len(version) > MAX_VERSION or len(msg.sha256) != DIGEST_LEN:
                raise FirmwarePayloadError("FW_BEGIN: version or digest length")
            return (
                bytes([MSG_FW_BEGIN])
                + _BEGIN.pack(msg.cmd_id, msg.size, msg.sha256, len(version))
                + version
            )
        case FwChunk():
            if len(msg.data) > MAX_CHUNK:
                raise FirmwarePayloadError(f"FW_CHUNK: more than {MAX_CHUNK} bytes")
            crc = zlib.crc32(msg.data) if msg.crc32 < 0 else msg.crc32
            return (
                bytes([MSG_FW_CHUNK])
                + _CHUNK.pack(msg.cmd_id, msg.offset, crc, len(msg.data))
                + msg.data
            )
        case FwCommit():
            return bytes([MSG_FW_COMMIT]) + _COMMIT.pack(msg.cmd_id, msg.confirm_timeout_s)
        case FwConfirm():
            return bytes([MSG_FW_CONFIRM]) + _CONFIRM.pack(msg.cmd_id)
    raise FirmwarePayloadError(f"not a firmware message: {msg!r}")  # pragma: no cover


def decode_firmware(kind: int, body: bytes) -> FirmwareCommand:
    """The message of type ``kind`` from its payload (raises struct.error or this module's)."""
    if kind == MSG_FW_BEGIN:
        cmd_id, size, digest, vlen = _BEGIN.unpack_from(body)
        version = body[_BEGIN.size : _BEGIN.size + vlen]
        if vlen > MAX_VERSION or len(version) != vlen:
            raise FirmwarePayloadError("FW_BEGIN: version truncated or too long")
        return FwBegin(cmd_id, size, digest, version.decode())
    if kind == MSG_FW_CHUNK:
        cmd_id, offset, crc, n = _CHUNK.unpack_from(body)
        data = body[_CHUNK.size : _CHUNK.size + n]
        if n > MAX_CHUNK or len(data) != n:
            raise FirmwarePayloadError("FW_CHUNK: data truncated or too long")
        return FwChunk(cmd_id, offset, data, crc)
    if kind == MSG_FW_COMMIT:
        cmd_id, timeout = _COMMIT.unpack_from(body)
        return FwCommit(cmd_id, timeout)
    if kind == MSG_FW_CONFIRM:
        (cmd_id,) = _CONFIRM.unpack_from(body)
        return FwConfirm(cmd_id)
    raise FirmwarePayloadError(f"not a firmware type 0x{kind:02x}")
