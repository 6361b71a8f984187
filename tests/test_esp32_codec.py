"""ESP32 node protocol codec: byte fixtures (the same as in PROTOCOL.md) and fuzzing."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.ports import NodeEventKind, PilotState
from drivers.esp32.codec import (
    CodecError,
    Decoder,
    cobs_decode,
    cobs_encode,
    crc16,
    decode,
    decode_message,
    encode,
    encode_message,
)
from drivers.esp32.firmware_messages import FwBegin, FwChunk, FwCommit, FwConfirm
from drivers.esp32.messages import (
    CAPABILITIES,
    FLAG_MORE,
    Ack,
    AckStatus,
    Configure,
    Event,
    Frame,
    Heartbeat,
    Hello,
    Message,
    SetLock,
    SetOutput,
    Telemetry,
)

FIXTURES: list[tuple[str, Frame, str]] = [
    ("heartbeat", Frame(0, 1, 1, Heartbeat(1000)), "02 01 02 01 01 03 01 01 01 05 03 e8 21 e1 00"),
    (
        "set_output",
        Frame(0, 1, 0x0102, SetOutput(0x1234, True, 16.0, 5.0)),
        "02 01 02 01 07 01 02 10 12 34 01 02 a0 01 05 13 88 86 92 00",
    ),
    (
        "set_lock",
        Frame(0, 3, 7, SetLock(0x0042, False)),
        "02 01 02 03 01 03 07 11 02 42 03 27 60 00",
    ),
    (
        "configure",
        Frame(0, 2, 3, Configure(0x0001, 6.0, 5.0, 1.0)),
        "02 01 02 02 01 03 03 12 02 01 02 3c 01 03 13 88 01 05 03 e8 19 dc 00",
    ),
    (
        "hello",
        Frame(
            1,
            0,
            1,
            Hello("esp32/1.2.0", 1, frozenset({"evse", "three_phase", "pilot", "energy_meter"})),
            flags=FLAG_MORE,
        ),
        "03 01 01 02 01 14 01 20 01 01 25 0b 65 73 70 33 32 2f 31 2e 32 2e 30 67 53 00",
    ),
    (
        "hello_continuity",
        Frame(
            1,
            0,
            1,
            Hello(
                "esp32/1.3.0",
                1,
                frozenset({"evse", "three_phase", "pilot", "energy_meter", "continuity"}),
                boot_id=42,
                serial="A4CF12E8",
            ),
            flags=FLAG_MORE,
        ),
        "03 01 01 02 01 12 01 20 01 03 25 0b 65 73 70 33 32 2f 31 2e 33 2e 30 01 01 0d 2a"
        " 08 41 34 43 46 31 32 45 38 b1 4b 00",
    ),
    ("ack", Frame(1, 0, 2, Ack(0x1234, AckStatus.OK)), "02 01 01 02 01 05 02 21 12 34 03 d7 36 00"),
    (
        "telemetry",
        Frame(
            1,
            0,
            3,
            Telemetry(
                (16.0, 15.5, 16.02),
                (230.0, 231.5, 229.8),
                123456,
                True,
                16.0,
                4.5,
                None,
                None,
                PilotState.C,
                31.5,
                80,
            ),
        ),
        "02 01 01 02 01 0f 03 22 06 40 06 0e 06 42 08 fc 09 0b 08 fa 05 01 e2 40 01 02 a0 01 09 11 94 43 01 3b 50 dd 88 00",
    ),
    (
        "telemetry_continuity",
        Frame(
            1,
            0,
            3,
            Telemetry(
                (16.0, 15.5, 16.02),
                (230.0, 231.5, 229.8),
                123456,
                True,
                16.0,
                4.5,
                None,
                None,
                PilotState.C,
                31.5,
                80,
                plug_count=7,
                boot_id=42,
            ),
        ),
        "02 01 01 02 01 0f 03 22 06 40 06 0e 06 42 08 fc 09 0b 08 fa 05 01 e2 40 01 02 a0"
        " 01 07 11 94 43 01 3b 50 01 01 02 07 01 01 04 2a ba 29 00",
    ),
    (
        "event",
        Frame(4, 0, 9, Event(NodeEventKind.DOOR_OPENED, "forced")),
        "02 01 01 02 04 0d 09 23 01 06 66 6f 72 63 65 64 bf ac 00",
    ),
    (
        "fw_begin",
        Frame(
            0,
            1,
            0x20,
            FwBegin(0x0100, 1 << 20, hashlib.sha256(bytes(1 << 20)).digest(), "esp32/1.4.0"),
        ),
        "02 01 02 01 01 04 20 13 01 01 02 10 01 2f 30 e1 49 55 eb f1 35 22 66 dc 2f f8 06 7e 68 10"
        " 46 07 e7 50 ab b9 d3 b3 65 82 b8 af 90 9f cb 58 0b 65 73 70 33 32 2f 31 2e 34 2e 30 5f 22 00",
    ),
    (
        "fw_chunk",
        Frame(0, 1, 0x21, FwChunk(0x0101, 512, bytes.fromhex("deadbeef"), 0x7C9CA35A)),
        "02 01 02 01 01 05 21 14 01 01 01 02 02 0c 7c 9c a3 5a 04 de ad be ef 54 ca 00",
    ),
    (
        "fw_commit",
        Frame(0, 1, 0x22, FwCommit(0x0102, 60)),
        "02 01 02 01 01 05 22 15 01 02 04 3c 91 2b 00",
    ),
    (
        "fw_confirm",
        Frame(0, 1, 0x23, FwConfirm(0x0103)),
        "02 01 02 01 01 07 23 16 01 03 15 33 00",
    ),
]


@pytest.mark.parametrize(("name", "frame", "wire"), FIXTURES, ids=[f[0] for f in FIXTURES])
def test_fixture_encodes_to_exact_bytes_and_back(name: str, frame: Frame, wire: str) -> None:
    raw = bytes.fromhex(wire)
    assert encode(frame) == raw
    assert decode(raw) == frame
    assert Decoder().feed(raw) == [frame]


def test_crc_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize(
    ("data", "encoded"),
    [
        (b"", b"\x01"),
        (b"\x00", b"\x01\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255)) + b"\x01"),
    ],
)
def test_cobs_reference_vectors(data: bytes, encoded: bytes) -> None:
    assert cobs_encode(data) == encoded
    assert cobs_decode(encoded) == data


def _cobs_byte_by_byte(data: bytes) -> bytes:
    """COBS as the protocol document spells it, one byte at a time (the reference)."""
    out, block = bytearray(), bytearray()
    for byte in data:
        if byte == 0:
            out += bytes([len(block) + 1]) + block
            block.clear()
            continue
        block.append(byte)
        if len(block) == 254:
            out += b"\xff" + block
            block.clear()
    return bytes(out + bytes([len(block) + 1]) + block)


@pytest.mark.parametrize("size", [0, 1, 253, 254, 255, 507, 508, 509, 600])
@pytest.mark.parametrize("zeros", ["none", "some", "at_blocks"])
def test_cobs_matches_the_byte_by_byte_reference(size: int, zeros: str) -> None:
    data = bytearray((i % 255) + 1 for i in range(size))
    if zeros == "some":
        for i in range(0, size, 7):
            data[i] = 0
    elif zeros == "at_blocks":
        for i in (253, 254, 255, 508):
            if i < size:
                data[i] = 0
    assert cobs_encode(bytes(data)) == _cobs_byte_by_byte(bytes(data))
    assert cobs_decode(cobs_encode(bytes(data))) == bytes(data)


def test_corrupted_crc_is_rejected_and_counted() -> None:
    raw = bytearray(encode(FIXTURES[1][1]))
    raw[8] ^= 0x01
    with pytest.raises(CodecError) as info:
        decode(bytes(raw))
    assert info.value.reason == "crc"
    dec = Decoder()
    assert dec.feed(bytes(raw)) == []
    assert dec.stats.bad_frames == 1
    assert dec.stats.by_reason == {"crc": 1}


def test_wrong_version_unknown_type_and_bad_payload_are_counted() -> None:
    dec = Decoder()
    for body in (
        bytes([2, 0, 0, 1, 0, 1, 0x01, 0, 0, 0, 0]),  # version 2
        bytes([1, 0, 0, 1, 0, 1, 0x7F]),  # unknown type
        bytes([1, 0, 0, 1, 0, 1, 0x21, 0x12]),  # ACK cut short
        bytes([1, 0, 0, 1, 0, 1, 0x21, 0x12, 0x34, 0x09]),  # ACK with an unknown status
    ):
        body += crc16(body).to_bytes(2, "big")
        assert dec.feed(cobs_encode(body) + b"\x00") == []
    assert dec.stats.bad_frames == 4
    assert dec.stats.by_reason == {"version": 1, "unknown_type": 1, "payload": 2}


def test_stream_split_anywhere_and_garbage_between_frames() -> None:
    frames = [f for _, f, _ in FIXTURES]
    stream = b"\x13\x37garbage\x00" + b"".join(encode(f) for f in frames) + b"\xff\xfe"
    for step in (1, 3, 7, len(stream)):
        dec = Decoder()
        out: list[Frame] = []
        for i in range(0, len(stream), step):
            out += dec.feed(stream[i : i + step])
        assert out == frames
        assert dec.stats.bad_frames == 1


def test_endless_garbage_is_bounded_and_counted_once() -> None:
    dec = Decoder()
    for _ in range(100):
        assert dec.feed(b"\x55" * 100) == []
    assert len(dec._buf) <= 300
    good = encode(FIXTURES[0][1])
    assert dec.feed(b"\x00" + good) == [FIXTURES[0][1]]
    assert dec.stats.by_reason == {"oversize": 1}


def test_encode_rejects_out_of_range_values() -> None:
    with pytest.raises(CodecError):
        encode_message(SetOutput(1, True, -1.0, 5.0))
    with pytest.raises(CodecError):
        encode_message(SetOutput(1, True, 16.0, 5_000_000.0))
    with pytest.raises(CodecError):
        encode_message(Hello("x" * 40, 1))
    with pytest.raises(CodecError):
        encode(Frame(0, 300, 1, Heartbeat(0)))


def test_message_payload_without_framing_round_trips() -> None:
    msg = SetOutput(7, False, 0.0, 1.5)
    payload = encode_message(msg)
    assert payload[0] == 0x10
    assert decode_message(payload) == msg
    assert decode_message(payload + b"\x99") == msg  # additive extensions are ignored


# --------------------------------------------------------------------------- properties

_deci = st.integers(0, 65535).map(lambda n: n / 10)
_milli = st.integers(0, 2**32 - 1).map(lambda n: n / 1000)
_centi = st.integers(0, 65535).map(lambda n: n / 100)
_u16 = st.integers(0, 0xFFFF)
_text = st.text(st.characters(codec="utf-8"), max_size=8)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Heartbeat, st.integers(0, 2**32 - 1)),
    st.builds(SetOutput, _u16, st.booleans(), _deci, _milli),
    st.builds(SetLock, _u16, st.booleans()),
    st.builds(Configure, _u16, _deci, _milli, _milli),
    st.builds(Hello, _text, st.integers(0, 255), st.frozensets(st.sampled_from(CAPABILITIES))),
    st.builds(
        Hello,
        _text,
        st.integers(0, 255),
        st.frozensets(st.sampled_from(CAPABILITIES)),
        st.integers(0, 2**32 - 1),
        st.none() | _text.filter(bool),
    ),
    st.builds(Ack, _u16, st.sampled_from(AckStatus)),
    st.builds(
        FwBegin,
        _u16,
        st.integers(0, 2**32 - 1),
        st.binary(min_size=32, max_size=32),
        st.text(st.characters(codec="utf-8"), max_size=8),
    ),
    st.builds(
        FwChunk, _u16, st.integers(0, 2**32 - 1), st.binary(max_size=200), st.integers(0, 2**32 - 1)
    ),
    st.builds(FwCommit, _u16, _u16),
    st.builds(FwConfirm, _u16),
    st.builds(
        Telemetry,
        st.tuples(_centi, _centi, _centi),
        st.tuples(_deci, _deci, _deci),
        st.integers(0, 2**32 - 1),
        st.booleans(),
        _deci,
        _milli,
        st.none() | st.booleans(),
        st.none() | st.booleans(),
        st.sampled_from(PilotState),
        st.none() | st.integers(-32767, 32767).map(lambda n: n / 10),
        st.none() | st.integers(0, 100),
        *(2 * [st.integers(0, 2**32 - 1)]),
    )
    | st.builds(
        Telemetry,
        st.tuples(_centi, _centi, _centi),
        st.tuples(_deci, _deci, _deci),
        st.integers(0, 2**32 - 1),
        st.booleans(),
        _deci,
        _milli,
    ),
    st.builds(Event, st.sampled_from(NodeEventKind), _text),
)
frames = st.builds(
    Frame,
    st.integers(0, 255),
    st.integers(0, 255),
    _u16,
    messages,
    st.integers(0, 255),
)


@given(frames)
def test_every_frame_round_trips(frame: Frame) -> None:
    assert decode(encode(frame)) == frame


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.lists(st.integers(1, 64), max_size=20))
def test_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    dec = Decoder()
    i = 0
    for cut in [*cuts, len(data)]:
        dec.feed(data[i : i + cut])
        i += cut
    assert dec.stats.bad_frames <= data.count(0) + 1


@given(st.lists(frames, min_size=1, max_size=5), st.data())
def test_corruption_is_counted_and_the_stream_resyncs(
    frame_list: list[Frame], data: st.DataObject
) -> None:
    victim = encode(frame_list[0])
    pos = data.draw(st.integers(0, len(victim) - 2), label="pos")  # not the delimiter
    flip = data.draw(st.integers(1, 255), label="flip")
    corrupted = bytearray(victim)
    corrupted[pos] ^= flip
    prefix = data.draw(st.binary(max_size=20), label="noise")
    tail = frame_list[1:]
    dec = Decoder()
    out = dec.feed(prefix + bytes(corrupted) + b"\x00" + b"".join(encode(f) for f in tail))
    # The corrupted frame (and the noise glued to it) is dropped and counted; the rest survives.
    assert out == tail
    assert dec.stats.bad_frames >= 1


def test_continuity_fields_are_an_additive_extension() -> None:
    base = Telemetry((1.0, 0, 0), (230.0, 0, 0), 5, True, 6.0, 1.0)
    ext = Telemetry((1.0, 0, 0), (230.0, 0, 0), 5, True, 6.0, 1.0, plug_count=3, boot_id=9)
    old, new = encode_message(base), encode_message(ext)
    assert new[: len(old)] == old and len(new) == len(old) + 8
    assert decode_message(old) == base  # a node without the capability
    with pytest.raises(CodecError):
        decode_message(new[:-3])  # half an extension is a malformed frame, not a guess
    with pytest.raises(CodecError):
        encode_message(Telemetry((0, 0, 0), (0, 0, 0), 0, False, 0, 0, plug_count=1))
    with pytest.raises(CodecError):
        encode_message(Hello("fw", 1, serial="A4CF12E8"))  # a serial needs its boot id
    with pytest.raises(CodecError):
        encode_message(Hello("fw", 1, boot_id=1, serial="x" * 33))
    hello = Hello("fw", 1, frozenset({"continuity"}), boot_id=1)
    assert decode_message(encode_message(hello)) == hello  # no serial: length 0 on the wire


# --------------------------------------------------------------------------- limits are floored

# A 6.06 A safe share must not go out as 6.1 A: the proof sums what the nodes obey.
FLOORED: list[tuple[str, Message, str]] = [
    ("set_output 6.06 A", SetOutput(0x0001, True, 6.06, 5.0), "10 00 01 01 00 3c 00 00 13 88"),
    ("set_output 15.99 A", SetOutput(0x0001, True, 15.99, 5.0), "10 00 01 01 00 9f 00 00 13 88"),
    ("set_output 4.35 A", SetOutput(0x0001, True, 4.35, 5.0), "10 00 01 01 00 2b 00 00 13 88"),
    ("set_output lease 2.9996 s", SetOutput(1, True, 6.0, 2.9996), "10 00 01 01 00 3c 00 00 0b b7"),
    (
        "configure 6.06 A",
        Configure(0x0001, 6.06, 5.0, 1.0),
        "12 00 01 00 3c 00 00 13 88 00 00 03 e8",
    ),
    (
        "configure host timeout 4.9999 s",
        Configure(0x0001, 0.0, 4.9999, 1.0),
        "12 00 01 00 00 00 00 13 87 00 00 03 e8",
    ),
]


@pytest.mark.parametrize(("name", "msg", "wire"), FLOORED, ids=[f[0] for f in FLOORED])
def test_limits_are_floored_on_the_wire(name: str, msg: Message, wire: str) -> None:
    assert encode_message(msg).hex(" ") == wire


_limit = st.floats(0.0, 6553.5, allow_nan=False, allow_infinity=False)


@given(_limit, _limit)
def test_a_current_limit_never_goes_out_above_its_value(current: float, safe: float) -> None:
    out = decode_message(encode_message(SetOutput(1, True, current, 5.0)))
    assert isinstance(out, SetOutput)
    assert out.current_a <= current < out.current_a + 0.1 + 1e-9
    cfg = decode_message(encode_message(Configure(1, safe, 5.0, 1.0)))
    assert isinstance(cfg, Configure)
    assert cfg.safe_current_a <= safe < cfg.safe_current_a + 0.1 + 1e-9


# --------------------------------------------------------------------------- documented maxima


def _framed(payload: bytes) -> bytes:
    body = bytes([1, 0, 0, 1, 0, 1]) + payload
    return cobs_encode(body + crc16(body).to_bytes(2, "big")) + b"\x00"


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("firmware of 33 bytes", bytes([0x20, 1, 0, 1, 33]) + b"f" * 33),
        (
            "serial of 33 bytes",
            bytes([0x20, 1, 2, 0, 2]) + b"fw" + bytes([0, 0, 0, 1, 33]) + b"s" * 33,
        ),
        ("detail of 65 bytes", bytes([0x23, 5, 65]) + b"d" * 65),
        ("body of 251 bytes", bytes([0x01, 0, 0, 0, 1]) + bytes(238)),
    ],
)
def test_what_the_document_bounds_is_a_malformed_frame_beyond(name: str, payload: bytes) -> None:
    """PROTOCOL.md: firmware and serial at most 32 bytes, a detail 64, a body 250 (CRC included);
    a frame past them is counted and dropped, on a stream and alone (an MQTT message)."""
    raw = _framed(payload)
    with pytest.raises(CodecError):
        decode(raw)
    dec = Decoder()
    assert dec.feed(raw) == [] and dec.stats.bad_frames == 1


def test_the_longest_documented_fields_still_pass() -> None:
    hello = Hello("f" * 32, 1, frozenset({"continuity"}), boot_id=1, serial="s" * 32)
    event = Event(NodeEventKind.FAULT, "d" * 64)
    for msg in (hello, event):
        raw = encode(Frame(1, 0, 1, msg))
        assert decode(raw).msg == msg
    body = bytes([1, 0, 0, 1, 0, 1, 0x01, 0, 0, 0, 1]) + bytes(237)  # 248 + CRC = 250 bytes
    raw = cobs_encode(body + crc16(body).to_bytes(2, "big")) + b"\x00"
    assert decode(raw).msg == Heartbeat(1)
    assert Decoder().feed(raw) == [Frame(1, 0, 1, Heartbeat(1))]
