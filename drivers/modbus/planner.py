"""Pure block-read planner: group map fields into as few register reads as the meter allows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .maps import MapField


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
