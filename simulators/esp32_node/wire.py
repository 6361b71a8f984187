"""The node simulator's own frames, written from ``drivers/esp32/PROTOCOL.md``, not from the driver.

A simulator that borrowed the driver's codec would share its bugs, and the
tests that run the driver against the simulator would pass with them. So the
simulator reads and writes the wire by itself: every message type both ways,
the continuity fields of HELLO and TELEMETRY, the units and their rounding
(limits floored to the step as the number is written, measurements to the
nearest step, a tie to the even one), and a stream splitter that counts what
it drops and resynchronizes at the next delimiter. ``tests/test_wire_interop.py``
holds the two implementations against each other and against the byte
examples of the document.

COBS comes from the ``cobs`` library (the driver has its own); the CRC is
computed from its definition below.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from cobs import cobs

from controller.ports import NodeEventKind, PilotState
from simulators.esp32_node import firmware_wire
from simulators.esp32_node.firmware_wire import FwBegin, FwChunk, FwCommit, FwConfirm

VERSION = 1
HOST = 0
BROADCAST = 255
FLAG_MORE = 0x01  # node -> host: poll me again at once
MAX_BODY = 250  # bytes before COBS, CRC included
MAX_ENCODED = MAX_BODY + 1 + MAX_BODY // 254  # COBS adds one byte per started 254

_HEADER = struct.Struct(">BBBBH")  # ver, flags, dst, src, seq; the type byte follows
_CRC_LEN = 2


class Type(enum.IntEnum):
    HEARTBEAT = 0x01
    SET_OUTPUT = 0x10
    SET_LOCK = 0x11
    CONFIGURE = 0x12
    FW_BEGIN = 0x13  # firmware transfer: firmware_wire.py
    FW_CHUNK = 0x14
    FW_COMMIT = 0x15
    FW_CONFIRM = 0x16
    HELLO = 0x20
    ACK = 0x21
    TELEMETRY = 0x22
    EVENT = 0x23


class AckStatus(enum.IntEnum):
    OK = 0
    INVALID = 1
    UNSUPPORTED = 2
    HW_FAULT = 3


CAPABILITY_BITS: dict[str, int] = {
    "evse": 0,
    "locker": 1,
    "three_phase": 2,
    "lock": 3,
    "door": 4,
    "pilot": 5,
    "soc": 6,
    "temperature": 7,
    "energy_meter": 8,
    "continuity": 9,
    "firmware": 10,
}
EVENT_CODES: dict[NodeEventKind, int] = {
    NodeEventKind.DOOR_OPENED: 1,
    NodeEventKind.DOOR_CLOSED: 2,
    NodeEventKind.LOCKED: 3,
    NodeEventKind.UNLOCKED: 4,
    NodeEventKind.FAULT: 5,
    NodeEventKind.FAULT_CLEARED: 6,
    NodeEventKind.LEASE_EXPIRED: 7,
    NodeEventKind.HOST_SILENT: 8,
    NodeEventKind.EMERGENCY_STOP: 9,
}
PILOT_BYTES: dict[PilotState, bytes] = {
    PilotState.A: b"A",
    PilotState.B: b"B",
    PilotState.C: b"C",
    PilotState.D: b"D",
    PilotState.E: b"E",
    PilotState.F: b"F",
    PilotState.NONE: b"-",
}
_KINDS = {code: kind for kind, code in EVENT_CODES.items()}
_PILOTS = {raw: state for state, raw in PILOT_BYTES.items()}
_MAX_FIRMWARE = _MAX_SERIAL = 32
_MAX_DETAIL = 64
_NO_TEMPERATURE = -32768
_NO_SOC = 255

# TELEMETRY flags
_RELAY, _LOCKED, _HAS_LOCK, _DOOR_CLOSED, _HAS_DOOR = 0x01, 0x02, 0x04, 0x08, 0x10


class WireError(ValueError):
    """Bytes that are not a frame of the protocol, or a message that cannot be sent."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Heartbeat:
    uptime_ms: int


@dataclass(frozen=True, slots=True)
class SetOutput:
    cmd_id: int
    relay_on: bool
    current_a: float
    lease_s: float


@dataclass(frozen=True, slots=True)
class SetLock:
    cmd_id: int
    locked: bool


@dataclass(frozen=True, slots=True)
class Configure:
    cmd_id: int
    safe_current_a: float
    host_timeout_s: float
    telemetry_period_s: float


@dataclass(frozen=True, slots=True)
class Hello:
    firmware: str
    protocol_version: int
    capabilities: frozenset[str] = frozenset()
    boot_id: int | None = None  # with ``continuity``
    serial: str | None = None  # with ``continuity``; None: the node has none


@dataclass(frozen=True, slots=True)
class Ack:
    cmd_id: int
    status: AckStatus = AckStatus.OK


@dataclass(frozen=True, slots=True)
class Telemetry:
    current_a: tuple[float, float, float]
    voltage_v: tuple[float, float, float]
    energy_wh: int
    relay_on: bool
    setpoint_a: float
    lease_remaining_s: float
    locked: bool | None = None
    door_closed: bool | None = None
    pilot: PilotState = PilotState.NONE
    temperature_c: float | None = None
    soc_pct: int | None = None
    plug_count: int | None = None  # with ``continuity``, together with boot_id
    boot_id: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    kind: NodeEventKind
    detail: str = ""


Command = SetOutput | SetLock | Configure | FwBegin | FwChunk | FwCommit | FwConfirm
Message = (
    Heartbeat
    | SetOutput
    | SetLock
    | Configure
    | Hello
    | Ack
    | Telemetry
    | Event
    | FwBegin
    | FwChunk
    | FwCommit
    | FwConfirm
)


@dataclass(frozen=True, slots=True)
class Frame:
    src: int
    dst: int
    seq: int
    msg: Message
    flags: int = 0
    version: int = VERSION


# --------------------------------------------------------------------------- CRC


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: polynomial 0x1021, initial 0xFFFF, not reflected, no final xor."""
    crc = 0xFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[(crc >> 8) ^ byte]
    return crc


# --------------------------------------------------------------------------- units


def _steps(value: float, per_unit: int, rounding: str, what: str, lo: int, hi: int) -> int:
    """``value`` in whole steps of ``1/per_unit``, taken as the number is written (its shortest
    decimal form), so 6.3 A is 63 dA however the float stores it; ``lo..hi`` must hold it."""
    if not math.isfinite(value):
        raise WireError("range", f"{what}={value} is not a number")
    n = int((Decimal(repr(float(value))) * per_unit).to_integral_value(rounding))
    if not lo <= n <= hi:
        raise WireError("range", f"{what}={value} does not fit")
    return n


def _limit(value: float, per_unit: int, what: str, bits: int = 16) -> int:
    """A limit the host sends: floored, never above what was decided."""
    return _steps(value, per_unit, ROUND_FLOOR, what, 0, (1 << bits) - 1)


def _measured(value: float, per_unit: int, what: str, bits: int = 16) -> int:
    """A measurement: the nearest step (a tie to the even one)."""
    return _steps(value, per_unit, ROUND_HALF_EVEN, what, 0, (1 << bits) - 1)


def _text(value: str, limit: int, what: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > limit:
        raise WireError("range", f"{what} longer than {limit} bytes")
    return bytes([len(raw)]) + raw


# --------------------------------------------------------------------------- encoding


def encode_message(msg: Message) -> bytes:
    """The type byte and the payload."""
    try:
        return _encode(msg)
    except struct.error as exc:
        raise WireError("range", str(exc)) from exc


def _encode(msg: Message) -> bytes:
    match msg:
        case FwBegin() | FwChunk() | FwCommit() | FwConfirm():
            try:
                return firmware_wire.encode(msg)
            except (ValueError, OverflowError) as exc:
                raise WireError("range", str(exc)) from exc
        case Heartbeat():
            return struct.pack(">BI", Type.HEARTBEAT, msg.uptime_ms % (1 << 32))
        case SetOutput():
            current = _limit(msg.current_a, 10, "current_a")
            lease = _limit(msg.lease_s, 1000, "lease_s", 32)
            return struct.pack(">BHBHI", Type.SET_OUTPUT, msg.cmd_id, msg.relay_on, current, lease)
        case SetLock():
            return struct.pack(">BHB", Type.SET_LOCK, msg.cmd_id, msg.locked)
        case Configure():
            safe = _limit(msg.safe_current_a, 10, "safe_current_a")
            timeout = _limit(msg.host_timeout_s, 1000, "host_timeout_s", 32)
            period = _measured(msg.telemetry_period_s, 1000, "telemetry_period_s", 32)
            return struct.pack(">BHHII", Type.CONFIGURE, msg.cmd_id, safe, timeout, period)
        case Hello():
            return _encode_hello(msg)
        case Ack():
            return struct.pack(">BHB", Type.ACK, msg.cmd_id, msg.status)
        case Telemetry():
            return _encode_telemetry(msg)
        case Event():
            return struct.pack(">BB", Type.EVENT, EVENT_CODES[msg.kind]) + _text(
                msg.detail, _MAX_DETAIL, "detail"
            )
    raise WireError("type", f"not a message: {msg!r}")


def _encode_hello(msg: Hello) -> bytes:
    caps = 0
    for name in msg.capabilities:
        if name not in CAPABILITY_BITS:
            raise WireError("range", f"unknown capability {name!r}")
        caps |= 1 << CAPABILITY_BITS[name]
    out = struct.pack(">BBH", Type.HELLO, msg.protocol_version, caps)
    out += _text(msg.firmware, _MAX_FIRMWARE, "firmware")
    if msg.boot_id is None:
        if msg.serial is not None:
            raise WireError("range", "a serial is sent only with a boot id")
        return out
    return out + struct.pack(">I", msg.boot_id) + _text(msg.serial or "", _MAX_SERIAL, "serial")


def _encode_telemetry(t: Telemetry) -> bytes:
    flags = _RELAY if t.relay_on else 0
    if t.locked is not None:
        flags |= _HAS_LOCK | (_LOCKED if t.locked else 0)
    if t.door_closed is not None:
        flags |= _HAS_DOOR | (_DOOR_CLOSED if t.door_closed else 0)
    if t.temperature_c is None:
        temperature = _NO_TEMPERATURE
    else:
        # -32768 says "absent", so a reading ends one step above it.
        temperature = _steps(t.temperature_c, 10, ROUND_HALF_EVEN, "temperature_c", -32767, 32767)
    if t.soc_pct is not None and not 0 <= t.soc_pct <= 100:
        raise WireError("range", "soc_pct outside 0..100")
    if (t.plug_count is None) != (t.boot_id is None):
        raise WireError("range", "plug_count and boot_id are sent together")
    out = struct.pack(
        ">B3H3HIBHI",
        Type.TELEMETRY,
        *(_measured(i, 100, "current_a") for i in t.current_a),
        *(_measured(v, 10, "voltage_v") for v in t.voltage_v),
        t.energy_wh,
        flags,
        _measured(t.setpoint_a, 10, "setpoint_a"),
        _measured(t.lease_remaining_s, 1000, "lease_remaining_s", 32),
    )
    out += PILOT_BYTES[t.pilot] + struct.pack(
        ">hB", temperature, _NO_SOC if t.soc_pct is None else t.soc_pct
    )
    if t.boot_id is not None:
        out += struct.pack(">II", t.plug_count, t.boot_id)
    return out


def encode(frame: Frame) -> bytes:
    """One frame as it goes on the wire: COBS-encoded body and the 0x00 delimiter."""
    try:
        header = _HEADER.pack(
            frame.version, frame.flags, frame.dst, frame.src, frame.seq % (1 << 16)
        )
    except struct.error as exc:
        raise WireError("range", str(exc)) from exc
    body = header + encode_message(frame.msg)
    if len(body) + _CRC_LEN > MAX_BODY:
        raise WireError("range", "frame longer than 250 bytes")
    body += crc16(body).to_bytes(2, "big")
    return bytes(cobs.encode(body)) + b"\x00"


# --------------------------------------------------------------------------- decoding


def decode(data: bytes) -> Frame:
    """Exactly one frame (an MQTT message), with or without its delimiter."""
    if data.endswith(b"\x00"):
        data = data[:-1]
    if len(data) > MAX_ENCODED:
        raise WireError("oversize")
    try:
        body = bytes(cobs.decode(data))
    except cobs.DecodeError as exc:
        raise WireError("cobs", str(exc)) from None
    return _decode_body(body)


def _decode_body(body: bytes) -> Frame:
    if len(body) < _HEADER.size + 1 + _CRC_LEN:
        raise WireError("short")
    if len(body) > MAX_BODY:
        raise WireError("oversize")
    if crc16(body[:-_CRC_LEN]) != int.from_bytes(body[-_CRC_LEN:], "big"):
        raise WireError("crc")
    version, flags, dst, src, seq = _HEADER.unpack_from(body)
    if version != VERSION:
        raise WireError("version")
    msg = decode_message(body[_HEADER.size : -_CRC_LEN])
    return Frame(src, dst, seq, msg, flags, version)


def decode_message(data: bytes) -> Message:
    """Type byte and payload; bytes past the fields this version knows are ignored."""
    if not data:
        raise WireError("payload", "no type byte")
    try:
        kind = Type(data[0])
    except ValueError:
        raise WireError("unknown_type", f"0x{data[0]:02x}") from None
    reader = _Reader(data, 1)
    try:
        if kind in firmware_wire.TYPES:
            return firmware_wire.decode(kind, data[1:])
        return _decode(kind, reader)
    except (struct.error, UnicodeDecodeError, KeyError, ValueError) as exc:
        if isinstance(exc, WireError):
            raise
        raise WireError("payload", f"{kind.name}: {exc}") from exc


def _decode(kind: Type, r: _Reader) -> Message:
    match kind:
        case Type.HEARTBEAT:
            return Heartbeat(r.take(">I")[0])
        case Type.SET_OUTPUT:
            cmd_id, relay, current, lease = r.take(">HBHI")
            return SetOutput(cmd_id, _bool(relay), current / 10, lease / 1000)
        case Type.SET_LOCK:
            cmd_id, locked = r.take(">HB")
            return SetLock(cmd_id, _bool(locked))
        case Type.CONFIGURE:
            cmd_id, safe, timeout, period = r.take(">HHII")
            return Configure(cmd_id, safe / 10, timeout / 1000, period / 1000)
        case Type.HELLO:
            version, caps = r.take(">BH")
            firmware = r.text(_MAX_FIRMWARE, "firmware")
            names = frozenset(n for n, bit in CAPABILITY_BITS.items() if caps >> bit & 1)
            if r.at_end():
                return Hello(firmware, version, names)
            (boot_id,) = r.take(">I")
            serial = r.text(_MAX_SERIAL, "serial")
            return Hello(firmware, version, names, boot_id, serial or None)
        case Type.ACK:
            cmd_id, status = r.take(">HB")
            return Ack(cmd_id, AckStatus(status))
        case Type.TELEMETRY:
            return _decode_telemetry(r)
        case Type.EVENT:
            (code,) = r.take(">B")
            return Event(_KINDS[code], r.text(_MAX_DETAIL, "detail"))
    raise WireError("unknown_type", kind.name)  # pragma: no cover


def _decode_telemetry(r: _Reader) -> Telemetry:
    i1, i2, i3, v1, v2, v3, energy, flags, setpoint, lease = r.take(">3H3HIBHI")
    pilot = _PILOTS[r.raw(1)]
    temperature, soc = r.take(">hB")
    plug_count = boot_id = None
    if not r.at_end():  # the continuity fields: both of them, or a malformed frame
        plug_count, boot_id = r.take(">II")
    return Telemetry(
        current_a=(i1 / 100, i2 / 100, i3 / 100),
        voltage_v=(v1 / 10, v2 / 10, v3 / 10),
        energy_wh=energy,
        relay_on=bool(flags & _RELAY),
        setpoint_a=setpoint / 10,
        lease_remaining_s=lease / 1000,
        locked=bool(flags & _LOCKED) if flags & _HAS_LOCK else None,
        door_closed=bool(flags & _DOOR_CLOSED) if flags & _HAS_DOOR else None,
        pilot=pilot,
        temperature_c=None if temperature == _NO_TEMPERATURE else temperature / 10,
        soc_pct=None if soc == _NO_SOC else soc,
        plug_count=plug_count,
        boot_id=boot_id,
    )


def _bool(raw: int) -> bool:
    if raw not in (0, 1):
        raise WireError("payload", f"boolean byte {raw}")
    return raw == 1


class _Reader:
    def __init__(self, data: bytes, at: int) -> None:
        self._data = data
        self._at = at

    def take(self, fmt: str) -> tuple[int, ...]:
        values = struct.unpack_from(fmt, self._data, self._at)
        self._at += struct.calcsize(fmt)
        return values

    def raw(self, n: int) -> bytes:
        out = self._data[self._at : self._at + n]
        if len(out) != n:
            raise WireError("payload", "truncated")
        self._at += n
        return out

    def text(self, limit: int, what: str) -> str:
        (n,) = self.take(">B")
        if n > limit:
            raise WireError("payload", f"{what} longer than {limit} bytes")
        return self.raw(n).decode("utf-8")

    def at_end(self) -> bool:
        return self._at >= len(self._data)


class Splitter:
    """Frames out of a byte stream: split at 0x00, every bad chunk counted and dropped.

    The buffer stays bounded when no delimiter comes; an empty chunk is not an error.
    """

    def __init__(self) -> None:
        self.bad = 0
        self._buf = bytearray()
        self._overflow = False

    def reset(self) -> None:
        self._buf.clear()
        self._overflow = False

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while (end := self._buf.find(0)) >= 0:
            chunk, self._buf = bytes(self._buf[:end]), self._buf[end + 1 :]
            if self._overflow:
                self._overflow = False
                self.bad += 1
            elif chunk:
                try:
                    frames.append(decode(chunk))
                except WireError:
                    self.bad += 1
        if len(self._buf) > MAX_ENCODED:
            self._buf.clear()
            self._overflow = True
        return frames
