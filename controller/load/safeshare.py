"""The lease proof: safe shares fit the headroom guaranteed without a meter.

When the controller, its link or its meter dies, every node falls by itself to
its bay's safe share once its lease expires. The site stays within its limits
only if, on every circuit (and the main breaker) and every phase, the safe
shares of the bays below it add up to no more than the headroom the owner
guarantees there (0 A where nothing is guaranteed).
"""

from __future__ import annotations

from collections.abc import Sequence

from controller.load.model import MAIN_ID, PHASES, BayLoadConfig, SiteConfig


def check_safe_shares(site: SiteConfig, bays: Sequence[BayLoadConfig]) -> list[str]:
    """One message per circuit and phase where the safe shares do not fit; empty when proven."""
    errors: list[str] = []
    headroom = {MAIN_ID: site.main_guaranteed_headroom_a}
    headroom.update({c.id: c.guaranteed_headroom_a for c in site.circuits})
    # node id -> phase -> (sum of safe shares, contributing bays)
    load: dict[str, list[tuple[float, list[str]]]] = {
        node: [(0.0, []), (0.0, []), (0.0, [])] for node in headroom
    }
    for bay in bays:
        if bay.safe_current_a <= 0.0:
            continue
        try:
            path = site.path_to_main(bay.circuit_id)
        except KeyError:
            errors.append(
                f"bay {bay.id!r}: unknown circuit {bay.circuit_id!r}, its safe share "
                f"{bay.safe_current_a} A cannot be placed"
            )
            continue
        for node, _limit in path:
            for p in bay.loaded_phases():
                total, names = load[node][p]
                load[node][p] = (total + bay.safe_current_a, [*names, bay.id])
    for node, phases in load.items():
        for p, (total, names) in enumerate(phases):
            head = headroom[node][p]
            if total > head + 1e-9:
                what = "main breaker" if node == MAIN_ID else f"circuit {node!r}"
                errors.append(
                    f"{what} {PHASES[p]}: safe shares sum to {total:g} A "
                    f"({', '.join(names)}) but guaranteed headroom is {head:g} A"
                )
    return errors
