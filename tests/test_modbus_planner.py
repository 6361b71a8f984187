"""Block-read planner: fewest reads, within the per-request limit, every field covered."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.maps import DataType, MapField, Quantity, load_map
from drivers.modbus.planner import PollPlan, ReadBlock, plan_poll, plan_reads


def blocks_for(name: str, max_registers: int | None = None) -> tuple[ReadBlock, ...]:
    m = load_map(name)
    return plan_reads(
        m.resolved(), max_registers=max_registers or m.max_registers, max_gap=m.max_gap
    )


def spans(blocks: tuple[ReadBlock, ...]) -> list[tuple[int, int, int, bool]]:
    return [(b.function, b.address, b.count, b.optional) for b in blocks]


def test_sdm630_is_one_read_of_at_most_80() -> None:
    assert spans(blocks_for("sdm630")) == [(4, 0x00, 0x4C, False)]
    assert all(b.count <= 80 for b in blocks_for("sdm630"))


def test_sdm630_with_small_limit_splits() -> None:
    blocks = blocks_for("sdm630", max_registers=10)
    assert all(b.count <= 10 for b in blocks)
    assert spans(blocks) == [
        (4, 0x00, 10, False),
        (4, 0x0A, 8, False),
        (4, 0x34, 2, False),
        (4, 0x46, 6, False),
    ]


def test_em24_respects_11_registers() -> None:
    blocks = blocks_for("em24")
    assert all(b.count <= 11 for b in blocks)
    assert spans(blocks) == [
        (3, 0x00, 6, False),
        (3, 0x0C, 10, False),
        (3, 0x16, 2, False),
        (3, 0x28, 2, False),
        (3, 0x37, 9, False),  # Hz 0x37 .. import 0x3E-0x3F
        (3, 0x5C, 2, False),
    ]


def test_sdm72d_keeps_optional_registers_apart_and_within_10() -> None:
    blocks = blocks_for("sdm72d")
    assert all(b.count <= 10 for b in blocks)
    assert spans(blocks) == [
        (4, 0x34, 2, False),
        (4, 0x48, 4, False),
        (4, 0x00, 10, True),
        (4, 0x0A, 8, True),
    ]
    assert spans(blocks_for("sdm72d", max_registers=80)) == [
        (4, 0x34, 24, False),
        (4, 0x00, 18, True),
    ]


def test_abb_two_distant_groups() -> None:
    assert spans(blocks_for("abb_b23")) == [(3, 0x5000, 8, False), (3, 0x5B00, 0x2D, False)]


def mf(
    address: int, dtype: DataType = DataType.FLOAT32, function: int = 4, q: str = "power_total"
) -> MapField:
    return MapField(Quantity(q), address, dtype, function, 1.0, False, frozenset(), "big", "big")


def test_max_gap_and_functions_and_overlap() -> None:
    fields = [mf(0), mf(4), mf(4, q="power_l1"), mf(100, function=3)]
    assert spans(plan_reads(fields, max_registers=125)) == [(3, 100, 2, False), (4, 0, 6, False)]
    assert spans(plan_reads(fields, max_registers=125, max_gap=1)) == [
        (3, 100, 2, False),
        (4, 0, 2, False),
        (4, 4, 2, False),
    ]


def test_field_larger_than_limit_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="needs 4 registers but at most 2"):
        plan_reads([mf(0, DataType.UINT64)], max_registers=2)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 300),
            st.sampled_from(list(DataType)),
            st.sampled_from([3, 4]),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    ),
    st.integers(4, 125),
    st.none() | st.integers(0, 20),
)
def test_plan_covers_every_field_within_limits(
    raw: list[tuple[int, DataType, int, bool]], limit: int, max_gap: int | None
) -> None:
    fields = [
        MapField(Quantity.POWER_TOTAL, a, t, fn, 1.0, opt, frozenset(), "big", "big")
        for a, t, fn, opt in raw
    ]
    blocks = plan_reads(fields, max_registers=limit, max_gap=max_gap)
    for b in blocks:
        assert 1 <= b.count <= limit
        for f in b.fields:
            assert b.address <= f.address and f.address + f.count <= b.end
            assert (f.function, f.optional) == (b.function, b.optional)
    assert sorted(id(f) for b in blocks for f in b.fields) == sorted(id(f) for f in fields)
    # Lower bound: within one group, two fields further apart than the limit need two reads.
    groups = {(f.function, f.optional) for f in fields}
    assert len(blocks) >= len(groups)


# --------------------------------------------------------------------------- plan_poll

CURRENTS = (Quantity.CURRENT_L1, Quantity.CURRENT_L2, Quantity.CURRENT_L3)


def poll_plan(
    name: str, every: tuple[Quantity, ...] | None, max_registers: int | None = None
) -> PollPlan:
    m = load_map(name)
    return plan_poll(
        m.resolved(),
        every_poll=every,
        max_registers=max_registers or m.max_registers,
        max_gap=m.max_gap,
    )


def test_em24_grid_reads_its_currents_in_one_request_and_the_rest_in_turn() -> None:
    plan = poll_plan("em24", CURRENTS)
    # The currents and the two phase powers that fit the same 11-register request.
    assert spans(plan.fast) == [(3, 0x0C, 10, False)]
    fast = {f.quantity for f in plan.fast[0].fields}
    assert fast == {*CURRENTS, Quantity.POWER_L1, Quantity.POWER_L2}
    assert spans(plan.slow) == [
        (3, 0x00, 6, False),
        (3, 0x16, 2, False),
        (3, 0x28, 2, False),
        (3, 0x37, 9, False),
        (3, 0x5C, 2, False),
    ]
    assert plan.reads_per_poll == 2  # was 6 with everything on every poll
    assert poll_plan("em24", None).reads_per_poll == 6
    with_pv = poll_plan("em24", (*CURRENTS, Quantity.POWER_TOTAL))
    assert spans(with_pv.fast) == [(3, 0x0C, 10, False), (3, 0x28, 2, False)]


def test_meters_that_answer_long_requests_keep_everything_coherent() -> None:
    plan = poll_plan("sdm630", CURRENTS)
    assert spans(plan.fast) == [(4, 0x00, 0x4C, False)] and plan.slow == ()
    abb = poll_plan("abb_b23", CURRENTS)
    assert [f.quantity for f in abb.slow[0].fields] == [
        Quantity.IMPORT_ENERGY,
        Quantity.EXPORT_ENERGY,
    ]
    assert len(abb.fast) == 1 and abb.reads_per_poll == 2


def test_a_map_without_the_asked_quantities_reads_everything_every_poll() -> None:
    plan = poll_plan("sdm72d", (Quantity.FREQUENCY,))
    assert plan.slow == () and plan.fast == blocks_for("sdm72d")


@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.sampled_from([DataType.UINT16, DataType.FLOAT32])),
        min_size=1,
        max_size=13,
        unique_by=lambda t: t[0],
    ),
    st.integers(2, 40),
    st.sets(st.sampled_from(list(Quantity))),
)
def test_plan_poll_covers_every_field_once_within_the_limit(
    spec: list[tuple[int, DataType]], max_registers: int, every: set[Quantity]
) -> None:
    fields = [
        MapField(q, addr, dt, 4, 1.0, False, frozenset(), "big", "big")
        for q, (addr, dt) in zip(Quantity, spec, strict=False)
    ]
    plan = plan_poll(fields, every_poll=every, max_registers=max_registers)
    placed = [f for b in plan.blocks for f in b.fields]
    assert sorted(placed, key=id) == sorted(fields, key=id) and len(placed) == len(fields)
    for b in plan.blocks:
        assert b.count <= max_registers
        for f in b.fields:
            assert b.address <= f.address and f.address + f.count <= b.end
    wanted = {f.quantity for f in fields} & every
    in_fast = {f.quantity for b in plan.fast for f in b.fields}
    assert wanted <= in_fast
    # Riding along costs no request: as many fast requests as the asked fields alone need.
    asked = [f for f in fields if f.quantity in every] or fields
    assert len(plan.fast) == len(plan_reads(asked, max_registers=max_registers))
