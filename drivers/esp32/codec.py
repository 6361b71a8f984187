"""Bytes <-> frames of the ESP32 bay-node protocol. Pure: no I/O, no clock.

Wire format (PROTOCOL.md has byte-level examples)::

    COBS( ver | flags | dst | src | seq:u16 | type | payload | crc16:u16 ) 0x00

All integers big-endian; the CRC is CRC-16/CCITT-FALSE over everything
before it. Limits sent to a node (its current, its safe share, lease and
host timeout) are floored to the wire's step, never rounded up;
measurements are rounded to the nearest step. ``encode``/``decode`` handle exactly one frame (what an MQTT
message carries); :class:`Decoder` splits a byte stream, counts what it
rejects and resynchronizes at the next delimiter.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

from controller.core.outputs import floor_steps
from controller.ports import PilotState
from drivers.esp32.firmware_messages import (
    FIRMWARE_TYPES,
    FirmwarePayloadError,
    FwBegin,
    FwChunk,
    FwCommit,
    FwConfirm,
    decode_firmware,
    encode_firmware,
)
from drivers.esp32.messages import (
    CAPABILITIES,
    EVENT_CODES,
    EVENT_KINDS,
    PROTOCOL_VERSION,
    Ack,
    AckStatus,
    Configure,
    Event,
    Frame,
    Heartbeat,
    Hello,
    Message,
    MsgType,
    SetLock,
    SetOutput,
    Telemetry,
)

DELIMITER = 0x00
MAX_FRAME_BODY = 250  # bytes before COBS, CRC included; the largest message is far below
_HEADER = struct.Struct(">BBBBHB")
_CRC = struct.Struct(">H")
_MIN_BODY = _HEADER.size + _CRC.size

_HEARTBEAT = struct.Struct(">I")
_SET_OUTPUT = struct.Struct(">HBHI")
_SET_LOCK = struct.Struct(">HB")
_CONFIGURE = struct.Struct(">HHII")
_HELLO = struct.Struct(">BHB")
_ACK = struct.Struct(">HB")
_TELEMETRY = struct.Struct(">3H3HIBHIchB")
_EVENT = struct.Struct(">BB")
# Appended by nodes with the ``continuity`` capability (additive within version 1).
_TELEMETRY_CONTINUITY = struct.Struct(">II")  # plug_count, boot_id
_HELLO_CONTINUITY = struct.Struct(">IB")  # boot_id, serial_len (serial follows)

_MAX_FIRMWARE = 32
_MAX_SERIAL = 32
_MAX_DETAIL = 64
_NO_TEMPERATURE = -32768
_NO_SOC = 0xFF

# Telemetry flag bits.
_T_RELAY = 0x01
_T_LOCKED = 0x02
_T_HAS_LOCK = 0x04
_T_DOOR_CLOSED = 0x08
_T_HAS_DOOR = 0x10


class CodecError(ValueError):
    """A frame or message that cannot be encoded or decoded."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


# --------------------------------------------------------------------------- CRC, COBS


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no xorout."""
    return binascii.crc_hqx(data, 0xFFFF)


def cobs_encode(data: bytes) -> bytes:
    # The runs between zero bytes, each cut into blocks of at most 254 (slices, not a loop
    # over every byte: a node's poll is encoded five times a second).
    out = bytearray()
    for run in data.split(b"\x00"):
        while len(run) >= 254:
            out.append(255)
            out += run[:254]
            run = run[254:]
        out.append(len(run) + 1)
        out += run
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise CodecError("cobs", "zero byte inside a COBS block")
        end = i + code
        if end > n:
            raise CodecError("cobs", "COBS block runs past the end")
        block = data[i + 1 : end]
        if 0 in block:
            raise CodecError("cobs", "zero byte inside a COBS block")
        out += block
        i = end
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


# --------------------------------------------------------------------------- messages


def _u(value: float, scale: int, bits: int, what: str) -> int:
    """A measurement in fixed point: rounded to the nearest step."""
    return _in_range(round(value * scale), value, bits, what)


def _limit(value: float, scale: int, bits: int, what: str) -> int:
    """A limit in fixed point (a current the node may offer, a lease it may hold): floored,
    never rounded up, so the node never gets more than the controller decided."""
    try:
        raw = floor_steps(value, scale)
    except ValueError:
        raise CodecError("range", f"{what}={value} is not a number") from None
    return _in_range(raw, value, bits, what)


def _in_range(raw: int, value: float, bits: int, what: str) -> int:
    if not 0 <= raw < (1 << bits):
        raise CodecError("range", f"{what}={value} out of range")
    return raw


def encode_message(msg: Message) -> bytes:
    """Type byte + payload: the message without addressing or framing."""
    try:
        return _encode_message(msg)
    except struct.error as exc:
        raise CodecError("range", str(exc)) from exc


def _encode_message(msg: Message) -> bytes:
    match msg:
        case FwBegin() | FwChunk() | FwCommit() | FwConfirm():
            try:
                return encode_firmware(msg)
            except FirmwarePayloadError as exc:
                raise CodecError("range", str(exc)) from exc
        case Heartbeat(uptime_ms=up):
            return bytes([MsgType.HEARTBEAT]) + _HEARTBEAT.pack(up & 0xFFFFFFFF)
        case SetOutput():
            return bytes([MsgType.SET_OUTPUT]) + _SET_OUTPUT.pack(
                msg.cmd_id,
                int(msg.relay_on),
                _limit(msg.current_a, 10, 16, "current_a"),
                _limit(msg.lease_s, 1000, 32, "lease_s"),
            )
        case SetLock():
            return bytes([MsgType.SET_LOCK]) + _SET_LOCK.pack(msg.cmd_id, int(msg.locked))
        case Configure():
            return bytes([MsgType.CONFIGURE]) + _CONFIGURE.pack(
                msg.cmd_id,
                _limit(msg.safe_current_a, 10, 16, "safe_current_a"),
                _limit(msg.host_timeout_s, 1000, 32, "host_timeout_s"),
                _u(msg.telemetry_period_s, 1000, 32, "telemetry_period_s"),
            )
        case Hello():
            fw = msg.firmware.encode()
            if len(fw) > _MAX_FIRMWARE:
                raise CodecError("range", "firmware string too long")
            unknown = msg.capabilities - set(CAPABILITIES)
            if unknown:
                raise CodecError("range", f"unknown capabilities {sorted(unknown)}")
            caps = sum(1 << i for i, name in enumerate(CAPABILITIES) if name in msg.capabilities)
            out = bytes([MsgType.HELLO]) + _HELLO.pack(msg.protocol_version, caps, len(fw)) + fw
            return out + _encode_hello_continuity(msg)
        case Ack():
            return bytes([MsgType.ACK]) + _ACK.pack(msg.cmd_id, int(msg.status))
        case Telemetry():
            return bytes([MsgType.TELEMETRY]) + _encode_telemetry(msg)
        case Event():
            detail = msg.detail.encode()
            if len(detail) > _MAX_DETAIL:
                raise CodecError("range", "event detail too long")
            return bytes([MsgType.EVENT]) + _EVENT.pack(EVENT_CODES[msg.kind], len(detail)) + detail
    raise CodecError("type", f"not a message: {msg!r}")


def _encode_hello_continuity(msg: Hello) -> bytes:
    if msg.boot_id is None:
        if msg.serial is not None:
            raise CodecError("range", "a serial travels only with a boot id")
        return b""
    serial = (msg.serial or "").encode()
    if len(serial) > _MAX_SERIAL:
        raise CodecError("range", "serial string too long")
    return _HELLO_CONTINUITY.pack(msg.boot_id, len(serial)) + serial


def _encode_telemetry(t: Telemetry) -> bytes:
    flags = _T_RELAY if t.relay_on else 0
    if t.locked is not None:
        flags |= _T_HAS_LOCK | (_T_LOCKED if t.locked else 0)
    if t.door_closed is not None:
        flags |= _T_HAS_DOOR | (_T_DOOR_CLOSED if t.door_closed else 0)
    temp = _NO_TEMPERATURE if t.temperature_c is None else round(t.temperature_c * 10)
    if temp != _NO_TEMPERATURE and not -32767 <= temp <= 32767:
        raise CodecError("range", "temperature_c out of range")
    soc = _NO_SOC if t.soc_pct is None else int(t.soc_pct)
    if soc != _NO_SOC and not 0 <= soc <= 100:
        raise CodecError("range", "soc_pct out of range")
    if (t.plug_count is None) != (t.boot_id is None):
        raise CodecError("range", "plug_count and boot_id travel together")
    tail = b"" if t.boot_id is None else _TELEMETRY_CONTINUITY.pack(t.plug_count, t.boot_id)
    return (
        _TELEMETRY.pack(
            *(_u(i, 100, 16, "current_a") for i in t.current_a),
            *(_u(v, 10, 16, "voltage_v") for v in t.voltage_v),
            t.energy_wh,
            flags,
            _u(t.setpoint_a, 10, 16, "setpoint_a"),
            _u(t.lease_remaining_s, 1000, 32, "lease_remaining_s"),
            t.pilot.value.encode(),
            temp,
            soc,
        )
        + tail
    )


def decode_message(data: bytes) -> Message:
    """Inverse of :func:`encode_message`. Extra trailing bytes are ignored (additive extensions)."""
    if not data:
        raise CodecError("payload", "empty message")
    try:
        kind = MsgType(data[0])
    except ValueError:
        raise CodecError("unknown_type", f"unknown message type 0x{data[0]:02x}") from None
    body = data[1:]
    try:
        return _decode_body(kind, body)
    except (struct.error, UnicodeDecodeError, ValueError, KeyError) as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError("payload", f"{kind.name}: {exc}") from exc


def _decode_body(kind: MsgType, body: bytes) -> Message:
    if kind in FIRMWARE_TYPES:
        return decode_firmware(kind, body)  # its errors are ValueError / struct.error
    match kind:
        case MsgType.HEARTBEAT:
            (up,) = _HEARTBEAT.unpack_from(body)
            return Heartbeat(uptime_ms=up)
        case MsgType.SET_OUTPUT:
            cmd_id, relay, cur, lease = _SET_OUTPUT.unpack_from(body)
            return SetOutput(cmd_id, _bool(relay), cur / 10, lease / 1000)
        case MsgType.SET_LOCK:
            cmd_id, locked = _SET_LOCK.unpack_from(body)
            return SetLock(cmd_id, _bool(locked))
        case MsgType.CONFIGURE:
            cmd_id, safe, timeout, period = _CONFIGURE.unpack_from(body)
            return Configure(cmd_id, safe / 10, timeout / 1000, period / 1000)
        case MsgType.HELLO:
            version, caps, fw_len = _HELLO.unpack_from(body)
            _bounded(fw_len, _MAX_FIRMWARE, "HELLO: firmware")
            fw = body[_HELLO.size : _HELLO.size + fw_len]
            if len(fw) != fw_len:
                raise CodecError("payload", "HELLO: firmware string truncated")
            names = frozenset(n for i, n in enumerate(CAPABILITIES) if caps & (1 << i))
            boot_id, serial = _decode_hello_continuity(body[_HELLO.size + fw_len :])
            return Hello(fw.decode(), version, names, boot_id, serial)
        case MsgType.ACK:
            cmd_id, status = _ACK.unpack_from(body)
            return Ack(cmd_id, AckStatus(status))
        case MsgType.TELEMETRY:
            return _decode_telemetry(body)
        case MsgType.EVENT:
            code, detail_len = _EVENT.unpack_from(body)
            _bounded(detail_len, _MAX_DETAIL, "EVENT: detail")
            detail = body[_EVENT.size : _EVENT.size + detail_len]
            if len(detail) != detail_len:
                raise CodecError("payload", "EVENT: detail truncated")
            return Event(EVENT_KINDS[code], detail.decode())
    raise CodecError("unknown_type", f"unhandled type {kind!r}")  # pragma: no cover


def _decode_hello_continuity(tail: bytes) -> tuple[int | None, str | None]:
    if not tail:
        return None, None  # a node without the continuity capability
    boot_id, serial_len = _HELLO_CONTINUITY.unpack_from(tail)
    _bounded(serial_len, _MAX_SERIAL, "HELLO: serial")
    serial = tail[_HELLO_CONTINUITY.size : _HELLO_CONTINUITY.size + serial_len]
    if len(serial) != serial_len:
        raise CodecError("payload", "HELLO: serial truncated")
    return boot_id, serial.decode() or None


def _bounded(length: int, limit: int, what: str) -> None:
    # PROTOCOL.md bounds these strings; a longer one is not a frame of this protocol.
    if length > limit:
        raise CodecError("payload", f"{what} longer than {limit} bytes")


def _bool(raw: int) -> bool:
    if raw not in (0, 1):
        raise CodecError("payload", f"boolean byte {raw}")
    return raw == 1


def _decode_telemetry(body: bytes) -> Telemetry:
    (i1, i2, i3, v1, v2, v3, energy, flags, setpoint, lease, pilot, temp, soc) = (
        _TELEMETRY.unpack_from(body)
    )
    plug_count = boot_id = None
    if len(body) > _TELEMETRY.size:  # the continuity fields: both, or a malformed frame
        plug_count, boot_id = _TELEMETRY_CONTINUITY.unpack_from(body, _TELEMETRY.size)
    return Telemetry(
        current_a=(i1 / 100, i2 / 100, i3 / 100),
        voltage_v=(v1 / 10, v2 / 10, v3 / 10),
        energy_wh=energy,
        relay_on=bool(flags & _T_RELAY),
        setpoint_a=setpoint / 10,
        lease_remaining_s=lease / 1000,
        locked=bool(flags & _T_LOCKED) if flags & _T_HAS_LOCK else None,
        door_closed=bool(flags & _T_DOOR_CLOSED) if flags & _T_HAS_DOOR else None,
        pilot=PilotState(pilot.decode("ascii")),
        temperature_c=None if temp == _NO_TEMPERATURE else temp / 10,
        soc_pct=None if soc == _NO_SOC else soc,
        plug_count=plug_count,
        boot_id=boot_id,
    )


# --------------------------------------------------------------------------- frames


def encode(frame: Frame) -> bytes:
    """One frame as it goes on the wire: COBS-encoded body and the 0x00 delimiter."""
    if not (0 <= frame.src <= 0xFF and 0 <= frame.dst <= 0xFF and 0 <= frame.flags <= 0xFF):
        for name, value in (("src", frame.src), ("dst", frame.dst), ("flags", frame.flags)):
            if not 0 <= value <= 0xFF:
                raise CodecError("range", f"{name}={value} out of range")
    header = _HEADER.pack(frame.version, frame.flags, frame.dst, frame.src, frame.seq & 0xFFFF, 0)
    body = header[:-1] + encode_message(frame.msg)
    if len(body) + _CRC.size > MAX_FRAME_BODY:
        raise CodecError("range", "frame too long")
    body += _CRC.pack(crc16(body))
    return cobs_encode(body) + bytes([DELIMITER])


def decode(data: bytes) -> Frame:
    """Exactly one frame, with or without its trailing delimiter. Raises :class:`CodecError`."""
    if data.endswith(b"\x00"):
        data = data[:-1]
    return _decode_body_bytes(cobs_decode(data))


def _decode_body_bytes(body: bytes) -> Frame:
    if len(body) < _MIN_BODY:
        raise CodecError("short", "frame too short")
    if len(body) > MAX_FRAME_BODY:
        raise CodecError("oversize", "frame longer than 250 bytes")
    (crc,) = _CRC.unpack_from(body, len(body) - _CRC.size)
    if crc16(body[: -_CRC.size]) != crc:
        raise CodecError("crc", "CRC mismatch")
    version, flags, dst, src, seq, _ = _HEADER.unpack_from(body)
    if version != PROTOCOL_VERSION:
        raise CodecError("version", f"protocol version {version}")
    msg = decode_message(body[_HEADER.size - 1 : -_CRC.size])
    return Frame(src=src, dst=dst, seq=seq, msg=msg, flags=flags, version=version)


@dataclass(slots=True)
class DecoderStats:
    frames: int = 0
    bad_frames: int = 0
    bytes_rx: int = 0
    by_reason: dict[str, int] | None = None

    def count(self, reason: str) -> None:
        self.bad_frames += 1
        if self.by_reason is None:
            self.by_reason = {}
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


class Decoder:
    """Streaming decoder: ``feed`` any chunk, get the complete good frames.

    Never raises on input: everything rejected is counted in :attr:`stats`
    (``bad_frames`` plus a reason), and decoding resumes at the next delimiter.
    """

    def __init__(self, max_encoded: int = MAX_FRAME_BODY + 4) -> None:
        self.stats = DecoderStats()
        self._buf = bytearray()
        self._max = max_encoded
        self._overflow = False

    def reset(self) -> None:
        """Drop a partial frame (after a reconnect)."""
        self._buf.clear()
        self._overflow = False

    def feed(self, data: bytes) -> list[Frame]:
        self.stats.bytes_rx += len(data)
        frames: list[Frame] = []
        self._buf += data
        if DELIMITER not in data:
            self._check_overflow()
            return frames
        *chunks, rest = self._buf.split(b"\x00")
        self._buf = bytearray(rest)
        for chunk in chunks:
            if self._overflow:
                self._overflow = False
                self.stats.count("oversize")
                continue
            if not chunk:
                continue  # an empty frame is a wake-up/resync delimiter
            if len(chunk) > self._max:
                self.stats.count("oversize")
                continue
            try:
                frames.append(_decode_body_bytes(cobs_decode(bytes(chunk))))
            except CodecError as exc:
                self.stats.count(exc.reason)
            else:
                self.stats.frames += 1
        self._check_overflow()
        return frames

    def _check_overflow(self) -> None:
        if len(self._buf) > self._max:
            # Garbage without delimiters: keep memory bounded, count it once at the next delimiter.
            self._buf.clear()
            self._overflow = True
