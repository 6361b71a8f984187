"""The heap is frozen once the station is ready (controller/ops/heap.py)."""

from __future__ import annotations

import gc

from controller.ops import heap


def test_settle_freezes_what_exists_so_a_full_collection_no_longer_walks_it() -> None:
    keep = [{"n": i, "peer": [i]} for i in range(10_000)]  # long-lived, like a station's state
    try:
        gc.collect()
        assert any(o is keep for o in gc.get_objects(generation=2))
        frozen = heap.settle()
        assert frozen >= 20_000  # the dicts and lists above, at least
        walked = {id(o) for o in gc.get_objects(generation=2)}
        assert id(keep) not in walked and id(keep[0]) not in walked
        made_later = [[1], [2]]
        gc.collect()
        assert any(o is made_later for o in gc.get_objects(generation=2))
    finally:
        gc.unfreeze()
        del keep
