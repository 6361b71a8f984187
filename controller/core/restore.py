"""Recovery at start: the bays rebuilt from the journal, open sessions waiting for their node.

A session open at the restart is suspended by the outage since the station was
last seen alive; its node's first report decides whether it continues (see the
bay machine's ``Reconcile`` and :mod:`controller.core.nodeintake`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog

from controller.core.accounting import Tariff
from controller.core.bay import BayKind, BayState
from controller.core.bays import BayRuntime, Bays
from controller.core.config import BayConfig, StationConfig
from controller.core.energy_gate import bay_max_power_w
from controller.core.journal import Journal, JournalError, minute_id
from controller.core.persist import state_from_dict
from controller.ports import Clock, NodeHub

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Restored:
    clean_restart: bool  # the previous run stopped cleanly (a journal flag)


async def restore_bays(
    cfg: StationConfig,
    journal: Journal,
    hubs: dict[str, NodeHub],
    clock: Clock,
    bays: Bays,
    *,
    on_write_failure: Callable[[], None],
) -> Restored:
    """Fill ``bays`` from the journal and the config; attach each bay's node."""
    saved = await journal.bay_states()
    open_sessions = {s["bay_id"]: s for s in await journal.open_sessions()}
    clean = bool(await journal.kv_get("clean_shutdown", False))
    try:
        await journal.kv_set("clean_shutdown", False)
    except JournalError:
        # A full disk at start: run (blocked) rather than not at all; the guard retries.
        on_write_failure()
    for bcfg in cfg.bays:
        kind = BayKind(bcfg.kind)
        if bcfg.id in saved:
            state = state_from_dict(saved[bcfg.id])
            if state.kind is not kind:
                log.warning("bay.kind_changed", bay_id=bcfg.id)
                state = BayState(bcfg.id, kind)
        else:
            state = BayState(bcfg.id, kind)
        state = replace(state, max_power_w=bay_max_power_w(bcfg.max_current_a, bcfg.phases))
        rt = BayRuntime(cfg=bcfg, state=state)
        row = open_sessions.pop(bcfg.id, None)
        if row is not None:
            with contextlib.suppress(ValueError, TypeError):
                rt.tariff = Tariff.model_validate(json.loads(row["tariff"]))
        if state.session is not None or row is not None:
            rt.reconciled = False
            rt.want_relay = True
            if state.session is None or (row and row["id"] != state.session.session_id):
                log.error("recovery.mismatch", bay_id=bcfg.id, session=row and row["id"])
        if state.session is not None and row is not None and row["id"] == state.session.session_id:
            row = await _with_minutes(journal, bcfg, row)
            state = _with_checkpoint(state, row)
        if state.session is not None:
            since = state.interrupted_since or await _last_seen_alive(
                journal, bcfg, clock, row.get("checkpoint_at") if row else None
            )
            rt.state = replace(
                state,
                interrupted_since=since,
                interruption=state.interruption or "controller_restart",
                awaiting_node=True,
            )
        bays[bcfg.id] = rt
    for bay_id, row in open_sessions.items():
        log.error("recovery.orphan_session", bay_id=bay_id, session_id=row["id"])
    for bus_id, hub in hubs.items():
        for rt in bays.values():
            if rt.cfg.bus == bus_id:
                rt.node = hub.node(rt.cfg.node_id)
    log.info(
        "station.restored",
        bays=len(bays),
        open_sessions=sum(1 for b in bays.values() if b.state.session),
        clean=clean,
    )
    return Restored(clean)


async def _with_minutes(journal: Journal, bcfg: BayConfig, row: dict[str, Any]) -> dict[str, Any]:
    """The session's row with the checkpoint its node's minute rows carry, when they are newer.

    Each minute row names the session its node charged and holds the register at the
    minute's last sample (controller.core.samples): the session's own row is rewritten only
    every few minutes. Only minutes since the row's own checkpoint are read.
    """
    since = row.get("checkpoint_at") or row.get("started_at") or 0.0
    found = await journal.query(
        "SELECT max(energy_wh) AS meter, max(power_max_w) AS peak, max(last_at) AS at"
        " FROM meter_minutes WHERE id >= ? AND source = ? AND session_id = ?",
        (minute_id(float(since) - 60.0), f"node:{bcfg.node_id}", row["id"]),
    )
    got = found[0] if found else {}
    if got.get("meter") is None or got.get("at") is None:
        return row
    out = dict(row)
    if out.get("meter_wh") is None or float(got["meter"]) > float(out["meter_wh"]):
        out["meter_wh"] = int(got["meter"])
        out["checkpoint_at"] = max(float(got["at"]), float(out.get("checkpoint_at") or 0.0))
    out["peak_power_w"] = max(float(out.get("peak_power_w") or 0.0), float(got["peak"] or 0.0))
    return out


def _with_checkpoint(state: BayState, row: dict[str, Any]) -> BayState:
    """The bay's saved state moved on to its session's last energy checkpoint, if newer.

    The bay's state is saved at every transition; between them, the session's energy is
    checkpointed in its own row (controller.core.samples). The counter only goes up, so
    the higher reading is the later one.
    """
    sess = state.session
    assert sess is not None
    meter = row.get("meter_wh")
    if meter is None or row.get("checkpoint_at") is None or int(meter) <= sess.meter_wh:
        return state
    sess = replace(
        sess,
        meter_wh=int(meter),
        peak_power_w=max(sess.peak_power_w, float(row.get("peak_power_w") or 0.0)),
    )
    at = float(row["checkpoint_at"])
    if state.meter_wh is None or state.meter_wh < sess.meter_wh:
        state = replace(state, meter_wh=sess.meter_wh, meter_at=at)
    return replace(state, session=sess)


async def _last_seen_alive(
    journal: Journal, bcfg: BayConfig, clock: Clock, checkpoint_at: float | None
) -> float:
    """When the previous run last recorded anything of this bay (samples, state, checkpoint)."""
    rows: list[dict[str, Any]] = [{"at": checkpoint_at}]
    rows += await journal.query(
        "SELECT max(at) AS at FROM meter_samples WHERE source = ?", (f"node:{bcfg.node_id}",)
    )
    if checkpoint_at is not None:  # minute rows since (ids are ordered by minute)
        rows += await journal.query(
            "SELECT max(last_at) AS at FROM meter_minutes WHERE id >= ? AND source = ?",
            (minute_id(checkpoint_at - 60.0), f"node:{bcfg.node_id}"),
        )
    rows += await journal.query(
        "SELECT updated_at AS at FROM bay_state WHERE bay_id = ?", (bcfg.id,)
    )
    seen = [float(r["at"]) for r in rows if r["at"] is not None]
    return max(seen) if seen else clock.wall()


__all__ = ["Restored", "restore_bays"]
