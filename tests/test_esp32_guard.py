"""One device per node address: sequence lines, probation after a restart, identities."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.ports import ConflictReason, NodeConflict, NodeHello, NodeTelemetry
from drivers.esp32.guard import FrameGuard, StepKind
from drivers.esp32.link import NodeConfig, NodeState
from drivers.esp32.messages import Heartbeat, Hello, Telemetry

TEL = Telemetry((0.0, 0.0, 0.0), (230.0, 230.0, 230.0), 5, False, 0.0, 0.0)


def hello(serial: str | None = None) -> Hello:
    return Hello("fw", 1, frozenset({"continuity"}), 1, serial)


def test_a_restart_is_held_on_probation_then_delivered() -> None:
    st = NodeState(NodeConfig("bay1", 1, 0.0))
    assert len(st.accept(500, TEL, 0.0)) == 1
    assert st.accept(1, hello("A"), 1.0) == []  # a new line: the node says it restarted
    assert st.accept(2, TEL, 1.2) == []
    out = st.accept(3, TEL, 1.0 + 2.6)  # the old line stayed silent: a real restart
    assert [type(u) for u in out] == [NodeHello, NodeTelemetry, NodeTelemetry]
    assert st.stats.extra["held_frames"] == 2 and "conflicts" not in st.stats.extra


def test_two_senders_on_one_address_are_named_and_their_reports_dropped() -> None:
    st = NodeState(NodeConfig("bay2", 2, 0.0))
    st.accept(1000, TEL, 0.0)
    assert st.accept(1, Hello("other/9.9", 1), 0.1) == []  # "restart": held
    assert st.accept(2, TEL, 0.15) == []  # the intruder's telemetry: held, never delivered
    out = st.accept(1001, TEL, 0.2)  # the real node goes on counting
    assert isinstance(out[0], NodeConflict) and out[0].reason is ConflictReason.TWO_SENDERS
    assert [type(u) for u in out] == [NodeConflict, NodeTelemetry]
    # It goes on: counted every time, reported again only every few seconds.
    assert all(not isinstance(u, NodeConflict) for u in st.accept(1002, TEL, 1.0))
    st.accept(3, TEL, 1.1)
    st.accept(1003, TEL, 1.2)
    assert st.stats.extra["conflicts"] >= 2
    later = st.accept(4, TEL, 7.0) + st.accept(1004, TEL, 7.1)
    assert any(isinstance(u, NodeConflict) for u in later)


def test_identity_is_checked_against_the_config_and_what_was_heard() -> None:
    configured = NodeState(NodeConfig("bay1", 1, 0.0, serial="A4CF12E8"))
    out = configured.accept(1, hello("DEADBEEF"), 0.0)
    assert [u.reason for u in out if isinstance(u, NodeConflict)] == [
        ConflictReason.IDENTITY_MISMATCH
    ]
    assert not any(isinstance(u, NodeConflict) for u in configured.accept(2, hello("A4CF12E8"), 9))
    free = NodeState(NodeConfig("bay1", 1, 0.0))
    free.accept(1, hello("A4CF12E8"), 0.0)
    free.accept(2, hello("A4CF12E8"), 1.0)  # said again (a restarted host): same node
    out = free.accept(3, hello("DEADBEEF"), 2.0)
    assert [u.reason for u in out if isinstance(u, NodeConflict)] == [ConflictReason.TWO_IDENTITIES]


def test_repeats_redeliveries_wraparound_and_silence() -> None:
    g = FrameGuard()
    assert g.sequence(65534, 0.0).kind is StepKind.OK
    assert g.sequence(65535, 0.1).kind is StepKind.OK
    step = g.sequence(3, 0.2)  # wrapped, two lost
    assert step.kind is StepKind.OK and step.gaps == 3
    assert g.sequence(3, 0.3).kind is StepKind.REPEAT
    assert g.sequence(1, 0.4, redelivery_window=64).kind is StepKind.REPEAT  # broker redelivery
    assert g.sequence(1, 0.5).kind is StepKind.NEW_LINE  # on a serial bus: another line
    g.forget_sequence()  # the node was offline: its next count starts afresh
    assert g.sequence(40_000, 9.0).kind is StepKind.OK and not g.on_probation


# One node: frames lost (gaps up to the window), restarts (a new count from 1, HELLO first).
one_node = st.lists(
    st.one_of(st.integers(1, 64).map(lambda g: ("gap", g)), st.just(("restart", 0))),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(one_node)
def test_one_node_that_loses_frames_and_restarts_is_never_a_conflict(
    steps: list[tuple[str, int]],
) -> None:
    st_ = NodeState(NodeConfig("bay1", 1, 0.0, serial="S1"))
    seq, now, delivered, sent = 1, 0.0, 0, 0
    for what, n in steps:
        now += 0.2
        if what == "restart":
            seq = 1
            out = st_.accept(seq, Hello("fw", 1, frozenset(), 1, "S1"), now)
        else:
            seq = (seq + n) & 0xFFFF
            out = st_.accept(seq, Heartbeat(0) if n % 2 else TEL, now)
        sent += 1
        assert not any(isinstance(u, NodeConflict) for u in out), (what, seq)
        delivered += len(out)
    assert "conflicts" not in st_.stats.extra


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(2, 20))
def test_two_nodes_counting_on_one_address_are_found(a: int, b: int, frames: int) -> None:
    st_ = NodeState(NodeConfig("bay1", 1, 0.0))
    found = False
    now = 0.0
    for i in range(frames):
        for start in (a, b):
            now += 0.1
            out = st_.accept((start + i) & 0xFFFF, TEL, now)
            found = found or any(isinstance(u, NodeConflict) for u in out)
    # Two counts far apart interleave: found within a couple of frames of each.
    if min((a - b) & 0xFFFF, (b - a) & 0xFFFF) > 64 + frames:
        assert found


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(3, 12))
def test_hello_and_telemetry_pairs_from_a_second_device_are_found(legit: int, rounds: int) -> None:
    """The attack as reported: another device on the address says HELLO (other firmware) and
    TELEMETRY in turn, numbering from 1, while the real node goes on answering."""
    st_ = NodeState(NodeConfig("bay2", 2, 0.0))
    st_.accept(legit, Hello("sim-esp32/1.0.0", 1), 0.0)
    now, mine, found = 0.0, 0, False
    for _ in range(rounds):
        out: list[object] = []
        for msg in (Hello("clone/6.6.6", 1), TEL):
            mine += 1
            now += 0.05
            out += st_.accept(mine, msg, now)
        legit = (legit + 1) & 0xFFFF
        now += 0.1
        out += st_.accept(legit, TEL, now)
        found = found or any(isinstance(u, NodeConflict) for u in out)
    assert found
