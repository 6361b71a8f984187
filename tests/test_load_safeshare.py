"""check_safe_shares: the lease proof used by check-config."""

from __future__ import annotations

from typing import Any

import pytest

from controller.load.model import BayLoadConfig, SiteConfig
from controller.load.safeshare import check_safe_shares

SITE = SiteConfig.model_validate(
    {
        "main_limit_a": 63,
        "main_guaranteed_headroom_a": [20, 20, 14],
        "circuits": [
            {"id": "garage", "limit_a": 32, "guaranteed_headroom_a": 12},
            {"id": "lockers", "limit_a": 16},
        ],
    }
)


def bays(*specs: tuple[str, str, float, dict[str, Any]]) -> list[BayLoadConfig]:
    return [
        BayLoadConfig(id=i, circuit_id=c, safe_current_a=s, max_current_a=16, **kw)
        for i, c, s, kw in specs
    ]


CASES = [
    ("all zero", bays(("a", "garage", 0, {}), ("b", "lockers", 0, {})), []),
    ("fits exactly", bays(("a", "garage", 6, {}), ("b", "garage", 6, {})), []),
    (
        "circuit over",
        bays(("a", "garage", 6, {}), ("b", "garage", 8, {})),
        ["circuit 'garage' L1: safe shares sum to 14 A (a, b) but guaranteed headroom is 12 A"],
    ),
    (
        "nothing guaranteed",
        bays(("a", "lockers", 6, {"phases": 1, "phase": "L2"})),
        ["circuit 'lockers' L2: safe shares sum to 6 A (a) but guaranteed headroom is 0 A"],
    ),
    (
        "main over on L3 only",
        bays(("a", "main", 6, {}), ("b", "main", 10, {"phases": 1, "phase": "L3"})),
        ["main breaker L3: safe shares sum to 16 A (a, b) but guaranteed headroom is 14 A"],
    ),
    (
        "unknown circuit",
        bays(("a", "nowhere", 6, {})),
        ["bay 'a': unknown circuit 'nowhere', its safe share 6.0 A cannot be placed"],
    ),
]


@pytest.mark.parametrize(("case", "bay_list", "want"), CASES, ids=[c[0] for c in CASES])
def test_check_safe_shares(case: str, bay_list: list[BayLoadConfig], want: list[str]) -> None:
    got = check_safe_shares(SITE, bay_list)
    if case == "circuit over":
        # Every phase of a 3-phase bay is checked; all three report.
        assert got[0] == want[0] and len(got) == 3
    else:
        assert got == want
