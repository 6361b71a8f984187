"""The driver's codec against the node simulator's own (written apart, from PROTOCOL.md).

Both sides must read what the other writes, every message type both ways, and
both must agree byte for byte with the examples of the document. A bug planted
in the driver's codec, one its own round trip cannot see, shows up here as a
disagreement.
"""

from __future__ import annotations

import ast
import binascii
import dataclasses
import enum
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cobs import cobs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.esp32 import codec
from drivers.esp32 import messages as drv
from simulators.esp32_node import wire as sim
from tests.test_esp32_codec import FIXTURES, frames

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = REPO / "drivers" / "esp32" / "PROTOCOL.md"

Neutral = tuple[Any, ...]


def neutral(frame: drv.Frame | sim.Frame) -> Neutral:
    """A frame of either implementation as plain values (enums of their own become ints)."""

    def plain(v: object) -> object:
        if isinstance(v, enum.IntEnum):
            return int(v)
        return v

    msg = frame.msg
    fields = tuple((f.name, plain(getattr(msg, f.name))) for f in dataclasses.fields(msg))
    return (frame.src, frame.dst, frame.seq, frame.flags, frame.version, type(msg).__name__, fields)


def to_sim(frame: drv.Frame) -> sim.Frame:
    """The same frame built from the simulator's own message classes."""
    msg = frame.msg
    values = {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}
    if isinstance(msg, drv.Ack):
        values["status"] = sim.AckStatus(int(msg.status))
    sim_msg = getattr(sim, type(msg).__name__)(**values)
    return sim.Frame(frame.src, frame.dst, frame.seq, sim_msg, frame.flags, frame.version)


def check_agree(frame: drv.Frame, *, on_grid: bool = True) -> None:
    """Both encoders give the same bytes, each side reads the other's bytes as it reads its own,
    and (values on the wire's grid) what was sent is what is read."""
    mine, theirs = to_sim(frame), frame
    drv_bytes, sim_bytes = codec.encode(theirs), sim.encode(mine)
    assert drv_bytes == sim_bytes, (frame, drv_bytes.hex(" "), sim_bytes.hex(" "))
    read_by_sim, read_by_driver = neutral(sim.decode(drv_bytes)), neutral(codec.decode(sim_bytes))
    assert read_by_sim == read_by_driver
    if on_grid:
        assert read_by_sim == neutral(theirs) == neutral(mine)


def test_the_node_simulator_imports_nothing_of_the_driver() -> None:
    """Or a codec bug would be shared instead of caught (ast, so a lazy import counts too)."""
    found = []
    for path in sorted((REPO / "simulators" / "esp32_node").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "drivers"]
    assert found == []


# --------------------------------------------------------------------------- the document


def doc_examples() -> list[tuple[str, bytes, bytes]]:
    """Every (name, body, wire) byte example of PROTOCOL.md §4, read from the document itself."""
    text = PROTOCOL.read_text(encoding="utf-8").split("## 4. Byte examples", 1)[1]
    out = []
    for i, block in enumerate(re.findall(r"```\n(body .*?)```", text, re.S)):
        body_part, wire_part = block.split("\nwire ")
        hexes = [
            re.sub(r"[^0-9a-f ]", " ", part.removeprefix("body "))
            for part in (body_part, wire_part)
        ]
        body, raw = (bytes.fromhex("".join(h.split())) for h in hexes)
        out.append((f"example{i + 1}", body, raw))
    return out


EXAMPLES = doc_examples()


def test_the_document_has_an_example_of_every_message_type() -> None:
    assert len(EXAMPLES) == 14
    types = {body[6] for _, body, _ in EXAMPLES}
    assert types == {t.value for t in drv.MsgType} == {t.value for t in sim.Type}


@pytest.mark.parametrize(("name", "body", "raw"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_document_examples_are_read_and_written_alike_by_both(
    name: str, body: bytes, raw: bytes
) -> None:
    crc = int.from_bytes(body[-2:], "big")
    assert codec.crc16(body[:-2]) == sim.crc16(body[:-2]) == crc
    assert codec.cobs_encode(body) + b"\x00" == bytes(cobs.encode(body)) + b"\x00" == raw
    theirs, mine = codec.decode(raw), sim.decode(raw)
    assert neutral(theirs) == neutral(mine)
    assert codec.encode(theirs) == sim.encode(mine) == raw
    # What the document's prose says each example is (the driver's fixtures hold it).
    expected = {bytes.fromhex(w): f for _, f, w in FIXTURES}[raw]
    assert neutral(mine) == neutral(expected)


def test_the_crc_check_value_of_the_document() -> None:
    assert sim.crc16(b"123456789") == codec.crc16(b"123456789") == 0x29B1


# --------------------------------------------------------------------------- both ways


@settings(max_examples=300)
@given(frames)
def test_every_message_both_ways_through_both(frame: drv.Frame) -> None:
    check_agree(frame)


_limit = st.floats(0.0, 6553.5, allow_nan=False, allow_infinity=False)
_seconds = st.floats(0.0, 4_294_967.295, allow_nan=False, allow_infinity=False)


@settings(max_examples=300)
@given(_limit, _seconds, _limit, _seconds)
def test_limits_are_floored_alike(
    current: float, lease: float, safe: float, timeout: float
) -> None:
    """Off the 0.1 A / 1 ms grid the two floor the same way, never above the value."""
    check_agree(drv.Frame(0, 1, 1, drv.SetOutput(1, True, current, lease)), on_grid=False)
    check_agree(drv.Frame(0, 1, 1, drv.Configure(1, safe, timeout, 1.0)), on_grid=False)
    out = sim.decode_message(sim.encode_message(sim.SetOutput(1, True, current, lease)))
    assert isinstance(out, sim.SetOutput)
    assert out.current_a <= current < out.current_a + 0.1 + 1e-9
    assert out.lease_s <= lease < out.lease_s + 0.001 + 1e-9


_amps = st.floats(0.0, 655.35, allow_nan=False, allow_infinity=False)
_celsius = st.floats(-3276.7, 3276.7, allow_nan=False, allow_infinity=False)


@given(_amps, _celsius)
def test_measurements_go_to_the_nearest_step_on_both(amps: float, celsius: float) -> None:
    """Ties are where the two may differ (a float just under 2.675 A); both stay within half a step."""
    theirs = drv.Telemetry((amps, 0, 0), (230.0, 0, 0), 0, True, 0.0, 0.0, temperature_c=celsius)
    mine = to_sim(drv.Frame(1, 0, 1, theirs)).msg
    for decoded in (
        codec.decode_message(codec.encode_message(theirs)),
        codec.decode_message(sim.encode_message(mine)),
    ):
        assert isinstance(decoded, drv.Telemetry) and decoded.temperature_c is not None
        assert abs(decoded.current_a[0] - amps) <= 0.005 + 1e-9
        assert abs(decoded.temperature_c - celsius) <= 0.05 + 1e-9


# --------------------------------------------------------------------------- what either rejects


def framed(payload: bytes) -> bytes:
    """``payload`` (type byte first) in a frame with a good header and CRC."""
    body = bytes([1, 0, 0, 1, 0, 1]) + payload
    body += binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "big")
    return bytes(cobs.encode(body)) + b"\x00"


def outcome(decode: Callable[[bytes], drv.Frame | sim.Frame], raw: bytes) -> Neutral | str:
    try:
        return neutral(decode(raw))
    except (codec.CodecError, sim.WireError):
        return "rejected"


_types = st.sampled_from([t.value for t in drv.MsgType]) | st.integers(0, 255)


@st.composite
def near_messages(draw: st.DrawFn) -> bytes:
    """A good message (type byte and payload) cut short, with a byte changed, or lengthened."""
    msg = codec.encode_message(draw(frames).msg)
    match draw(st.sampled_from(["cut", "change", "append"])):
        case "cut":
            return msg[: draw(st.integers(1, len(msg)))]
        case "change":
            at = draw(st.integers(0, len(msg) - 1))
            return msg[:at] + bytes([draw(st.integers(0, 255))]) + msg[at + 1 :]
    return msg + draw(st.binary(min_size=1, max_size=40))


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(st.builds(lambda k, p: bytes([k]) + p, _types, st.binary(max_size=90)) | near_messages())
def test_both_accept_and_reject_the_same_payloads(message: bytes) -> None:
    raw = framed(message)
    assert outcome(codec.decode, raw) == outcome(sim.decode, raw)


def test_documented_lengths_are_enforced_by_both() -> None:
    """PROTOCOL.md: firmware and serial at most 32 bytes, an EVENT's detail at most 64, a body 250."""
    long_fw = bytes([0x20, 1, 0, 1, 33]) + b"f" * 33
    long_serial = bytes([0x20, 1, 2, 0, 2]) + b"fw" + bytes([0, 0, 0, 1, 33]) + b"s" * 33
    long_detail = bytes([0x23, 5, 65]) + b"d" * 65
    oversize = bytes([0x01, 0, 0, 0, 1]) + bytes(250)  # a heartbeat padded past 250 bytes
    for payload in (long_fw, long_serial, long_detail, oversize):
        raw = framed(payload)
        assert outcome(codec.decode, raw) == outcome(sim.decode, raw) == "rejected", payload[:1]


@given(st.lists(frames, max_size=6), st.lists(st.binary(max_size=12), max_size=6), st.data())
def test_a_stream_splits_alike(
    frame_list: list[drv.Frame], noise: list[bytes], data: st.DataObject
) -> None:
    """Frames with garbage between them, cut anywhere: the same frames come out of both."""
    parts = [codec.encode(f) for f in frame_list]
    stream = b"".join(n + b"\x00" + p for n, p in zip(noise, parts, strict=False))
    stream += b"".join(parts[len(noise) :])
    step = data.draw(st.integers(1, max(1, len(stream))), label="step")
    theirs, mine = codec.Decoder(), sim.Splitter()
    out_t: list[drv.Frame] = []
    out_m: list[sim.Frame] = []
    for i in range(0, len(stream), step):
        out_t += theirs.feed(stream[i : i + step])
        out_m += mine.feed(stream[i : i + step])
    assert [neutral(f) for f in out_t] == [neutral(f) for f in out_m]
    assert theirs.stats.bad_frames == mine.bad


# --------------------------------------------------------------------------- a planted bug


def check_all() -> None:
    """One frame of each message type (with and without continuity fields), limits off the
    grid, and the document's examples."""
    for _, frame, _ in FIXTURES:
        check_agree(frame)
    check_agree(drv.Frame(0, 1, 2, drv.SetOutput(9, True, 6.06, 2.9996)), on_grid=False)
    check_agree(drv.Frame(0, 1, 3, drv.Configure(9, 6.06, 4.9999, 1.0)), on_grid=False)
    for _, _, raw in EXAMPLES:
        assert neutral(codec.decode(raw)) == neutral(sim.decode(raw))


def crc_without_init(data: bytes) -> int:
    return binascii.crc_hqx(data, 0)  # CRC-16/XMODEM: the classic wrong initial value


PLANTED: dict[str, tuple[str, object]] = {
    "crc initial value 0": ("crc16", crc_without_init),
    "limits rounded, not floored": ("floor_steps", lambda value, per_unit: round(value * per_unit)),
    "sequence number little-endian": ("_HEADER", struct.Struct("<BBBBHB")),
    "continuity fields swapped": ("_TELEMETRY_CONTINUITY", struct.Struct("<II")),
}


def test_the_check_passes_on_the_real_codec() -> None:
    check_all()  # so the failures below are the planted bugs' doing


@pytest.mark.parametrize("bug", list(PLANTED))
def test_a_planted_codec_bug_is_caught(bug: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name, value = PLANTED[bug]
    monkeypatch.setattr(codec, name, value)
    for _, frame, _ in FIXTURES:  # the driver alone is blind to it: its own round trip still works
        assert codec.decode(codec.encode(frame)) == frame
    with pytest.raises(AssertionError):
        check_all()
