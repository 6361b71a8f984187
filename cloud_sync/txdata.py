"""StopTransaction's ``transactionData``: a bounded summary of the session's own meter samples.

Built when the message is sent (not when the session closes), from the samples
the journal holds for the session: the begin value, at most :data:`MAX_SAMPLES`
periodic values (the last sample of each equal slice of the session, so a long
session gives as many as a short one) and the end value already in the
payload. A sample whose energy lies outside [meterStart, meterStop] or runs
backwards (a meter re-anchored mid-session) is left out: the data must never
contradict the transaction's own start and stop values.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import structlog

from cloud_sync.smart import parse_time
from controller.core.journal import Journal, JournalError
from controller.core.persist import iso

log = structlog.get_logger(__name__)

MAX_SAMPLES = 12
ENERGY = "Energy.Active.Import.Register"
PHASES = ("L1", "L2", "L3")


def _sv(
    value: str, measurand: str, unit: str, context: str, phase: str | None = None
) -> dict[str, Any]:
    v = {"value": value, "context": context, "measurand": measurand, "unit": unit}
    if phase:
        v["phase"] = phase
    return v


def sample_values(
    sample: dict[str, Any], measurands: list[str], phases: int
) -> list[dict[str, Any]]:
    """One stored sample as sampledValues (Sample.Periodic) of the measurands asked for."""
    ctx = "Sample.Periodic"
    out = [_sv(str(int(sample["energy_wh"])), ENERGY, "Wh", ctx)]
    if "Power.Active.Import" in measurands and sample["power_w"] is not None:
        out.append(_sv(f"{float(sample['power_w']):.1f}", "Power.Active.Import", "W", ctx))
    if "Current.Import" in measurands and sample["current_a"]:
        currents = json.loads(sample["current_a"])
        for phase, amps in zip(PHASES[:phases], currents, strict=False):
            out.append(_sv(f"{float(amps):.1f}", "Current.Import", "A", ctx, phase))
    return out


async def with_transaction_data(
    journal: Journal,
    session_id: str,
    payload: dict[str, Any],
    *,
    source_of: Callable[[str], tuple[str | None, int]],
    measurands: list[str],
) -> dict[str, Any]:
    """``payload`` (a StopTransaction) with the session's samples around its end value;
    ``source_of(bay_id)`` names the bay's sample source and its phase count."""
    try:
        row = await journal.session(session_id)
        if row is None:
            return payload
        started = float(row["started_at"])
        stopped = parse_time(str(payload["timestamp"]))
        start_wh, stop_wh = int(row["meter_start_wh"]), int(payload["meterStop"])
        source, phases = source_of(str(row["bay_id"]))
        samples = (
            await journal.session_samples(source, session_id, started, stopped, MAX_SAMPLES)
            if source is not None
            else []
        )
    except (JournalError, sqlite3.Error, KeyError, ValueError, TypeError) as err:
        log.warning("ocpp.transaction_data_failed", session_id=session_id, error=str(err))
        return payload
    data: list[dict[str, Any]] = [
        {
            "timestamp": iso(started),
            "sampledValue": [_sv(str(start_wh), ENERGY, "Wh", "Transaction.Begin")],
        }
    ]
    last = start_wh
    for s in samples:
        at, energy = float(s["at"]), s["energy_wh"]
        if energy is None or not started < at < stopped:
            continue
        if not last <= int(energy) <= stop_wh:
            continue
        last = int(energy)
        data.append({"timestamp": iso(at), "sampledValue": sample_values(s, measurands, phases)})
    data.extend(payload.get("transactionData") or [])
    return {**payload, "transactionData": data}
