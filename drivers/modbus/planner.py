"""Pure block-read planner: group map fields into as few register reads as the meter allows.

:func:`plan_reads` covers fields with the fewest requests; :func:`plan_poll`
splits a meter's fields into what every poll reads (``fast``: what load
management needs) and what is refreshed one request per poll, in turn (``slow``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from .maps import MapField, Quantity


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers from ``address`` with ``function``."""

    function: int
    address: int
    count: int
    fields: tuple[MapField, ...]
    optional: bool = False

    @property
    def end(self) -> int:
        """One past the last register."""
        return self.address + self.count


def plan_reads(
    fields: Iterable[MapField], *, max_registers: int, max_gap: int | None = None
) -> tuple[ReadBlock, ...]:
    """Cover every field with the fewest reads of at most ``max_registers`` each.

    Fields are grouped by function code and by ``optional`` (an optional block
    that the meter rejects must not take required values down with it). Within
    a group, fields sorted by address are packed greedily, which is optimal for
    intervals on a line. A block reads through unused registers between fields
    unless the gap exceeds ``max_gap``. Overlapping fields share registers.
    """
    if max_registers < 1:
        raise ValueError("max_registers must be at least 1")
    groups: dict[tuple[int, bool], list[MapField]] = {}
    for f in fields:
        if f.count > max_registers:
            raise ValueError(
                f"{f.quantity} needs {f.count} registers but at most {max_registers} fit in a read"
            )
        groups.setdefault((f.function, f.optional), []).append(f)

    blocks: list[ReadBlock] = []
    for (function, optional), group in sorted(groups.items()):
        group.sort(key=lambda f: (f.address, f.count))
        start, end, members = group[0].address, group[0].address + group[0].count, [group[0]]
        for f in group[1:]:
            new_end = max(end, f.address + f.count)
            gap = f.address - end
            if new_end - start <= max_registers and (max_gap is None or gap <= max_gap):
                end = new_end
                members.append(f)
                continue
            blocks.append(ReadBlock(function, start, end - start, tuple(members), optional))
            start, end, members = f.address, f.address + f.count, [f]
        blocks.append(ReadBlock(function, start, end - start, tuple(members), optional))
    return tuple(sorted(blocks, key=lambda b: (b.optional, b.function, b.address)))


@dataclass(frozen=True, slots=True)
class PollPlan:
    """The requests of one meter: ``fast`` on every poll, one of ``slow`` per poll in turn."""

    fast: tuple[ReadBlock, ...]
    slow: tuple[ReadBlock, ...] = ()

    @property
    def blocks(self) -> tuple[ReadBlock, ...]:
        return self.fast + self.slow

    @property
    def reads_per_poll(self) -> int:
        """Requests of a steady-state poll: the fast ones plus one slow one."""
        return len(self.fast) + (1 if self.slow else 0)


def _gap(block: ReadBlock, f: MapField) -> int:
    if f.address >= block.end:
        return f.address - block.end
    if f.address + f.count <= block.address:
        return block.address - (f.address + f.count)
    return 0


def plan_poll(
    fields: Iterable[MapField],
    *,
    every_poll: Collection[Quantity] | None,
    max_registers: int,
    max_gap: int | None = None,
) -> PollPlan:
    """Plan the fields in ``every_poll`` (None: all) as fast reads, the others as slow ones.

    A slow field that fits into a fast request (within ``max_registers`` and
    ``max_gap``) rides along on every poll: it costs a few bytes on the wire and
    no request, and values read in one request are coherent (same instant), which
    the plausibility checks need. The rest is planned into slow requests.
    """
    fields = tuple(fields)
    fast_fields = [f for f in fields if every_poll is None or f.quantity in every_poll]
    if not fast_fields:  # the map has none of them: nothing to favour
        fast_fields = list(fields)
    rest = [f for f in fields if f not in fast_fields]
    fast = list(plan_reads(fast_fields, max_registers=max_registers, max_gap=max_gap))
    slow_fields: list[MapField] = []
    for f in sorted(rest, key=lambda f: (f.function, f.address)):
        for i, b in enumerate(fast):
            if b.function != f.function or b.optional != f.optional:
                continue
            start, end = min(b.address, f.address), max(b.end, f.address + f.count)
            if end - start > max_registers or (max_gap is not None and _gap(b, f) > max_gap):
                continue
            fast[i] = ReadBlock(b.function, start, end - start, (*b.fields, f), b.optional)
            break
        else:
            slow_fields.append(f)
    slow = (
        plan_reads(slow_fields, max_registers=max_registers, max_gap=max_gap) if slow_fields else ()
    )
    return PollPlan(tuple(sorted(fast, key=lambda b: (b.optional, b.function, b.address))), slow)
