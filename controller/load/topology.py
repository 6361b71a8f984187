"""The site tree compiled once from :class:`LoadConfig` into flat index arrays.

``allocate`` runs on every grid-meter reading, so everything that depends only
on the configuration (tree order, which bays load which node and phase) is
computed here once and shared by every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.load.model import MAIN_ID, PHASES, Amps3, LoadConfig


@dataclass(frozen=True, slots=True)
class BaySpec:
    id: str
    index: int
    phases: tuple[int, ...]
    min_a: float
    max_a: float
    safe_a: float
    path: tuple[int, ...]
    """Node indices from the bay's circuit up to the main breaker (index 0)."""


@dataclass(frozen=True, slots=True)
class Topology:
    config: LoadConfig
    node_ids: tuple[str, ...]
    """Parents before children; index 0 is the main breaker."""
    node_parent: tuple[int, ...]
    node_limit: tuple[Amps3, ...]
    node_headroom: tuple[Amps3, ...]
    """Free current known without a meter; for the main breaker, the fallback budget."""
    bays: tuple[BaySpec, ...]
    bay_index: Mapping[str, int]
    tree_members: tuple[tuple[int, ...], ...]
    """For constraint ``node * 3 + phase``: indices of the bays that load it."""
    bay_tree_cons: tuple[tuple[int, ...], ...]
    """Per bay: the tree constraints (``node * 3 + phase``) it counts against."""
    labels: tuple[str, ...]
    """Per tree constraint: ``"<node id>:<phase>"``."""
    site_phases: tuple[int, ...]
    """The phases the site is supplied on: the grid meter must read each of them."""

    @classmethod
    def from_config(cls, config: LoadConfig) -> Topology:
        site = config.site
        order: list[str] = [MAIN_ID]
        parent_of = {c.id: c.parent for c in site.circuits}
        remaining = [c.id for c in site.circuits]
        while remaining:
            # Validated acyclic, so every pass places at least one circuit.
            placed = [c for c in remaining if parent_of[c] in order]
            order.extend(placed)
            remaining = [c for c in remaining if c not in placed]
        index = {nid: i for i, nid in enumerate(order)}
        limits: list[Amps3] = [site.main_limit_a]
        headroom: list[Amps3] = [site.effective_fallback_a]
        parents: list[int] = [-1]
        for nid in order[1:]:
            c = site.circuit(nid)
            assert c is not None
            limits.append(c.limit_a)
            headroom.append(c.guaranteed_headroom_a)
            parents.append(index[c.parent])

        members: list[list[int]] = [[] for _ in range(len(order) * 3)]
        specs: list[BaySpec] = []
        for i, b in enumerate(config.bays):
            path: list[int] = []
            node = index[b.circuit_id]
            while node >= 0:
                path.append(node)
                node = parents[node]
            phases = b.loaded_phases()
            for node in path:
                for p in phases:
                    members[node * 3 + p].append(i)
            specs.append(
                BaySpec(
                    id=b.id,
                    index=i,
                    phases=phases,
                    min_a=b.min_current_a,
                    max_a=b.max_current_a,
                    safe_a=b.safe_current_a,
                    path=tuple(path),
                )
            )
        return cls(
            config=config,
            node_ids=tuple(order),
            node_parent=tuple(parents),
            node_limit=tuple(limits),
            node_headroom=tuple(headroom),
            bays=tuple(specs),
            bay_index={s.id: s.index for s in specs},
            tree_members=tuple(tuple(m) for m in members),
            bay_tree_cons=tuple(
                tuple(node * 3 + p for node in s.path for p in s.phases) for s in specs
            ),
            labels=tuple(f"{nid}:{ph}" for nid in order for ph in PHASES),
            site_phases=site.phase_indices,
        )
