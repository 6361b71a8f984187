"""How bay states and transitions become journal rows (and back, at recovery).

Kept apart from the supervisor so the mapping from effects to rows is one
small, testable piece: the event, the bay snapshot, the session and hold rows
and the outbox messages of one transition all come from here.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, datetime
from typing import Any

from controller.core.accounting import Tariff, figures
from controller.core.bay import (
    BayKind,
    BayState,
    CloseSession,
    Effect,
    Event,
    Hold,
    HoldEnded,
    HoldPlaced,
    InterruptionEnded,
    MeterReanchored,
    ModeChanged,
    OpenSession,
    Phase,
    ReadingRejected,
    Refused,
    Session,
    StatusChanged,
    Telemetry,
    Tick,
    UpdateSession,
)
from controller.core.energy_gate import Doubt
from controller.core.journal import Commit, EventRow, OutboxRow
from controller.ports import PilotState


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def state_to_dict(s: BayState) -> dict[str, Any]:
    d: dict[str, Any] = _plain(s)
    return d


def state_from_dict(d: dict[str, Any]) -> BayState:
    """The saved state of a bay; ``max_power_w`` comes from the config, not from here."""
    sess = d.get("session")
    hold = d.get("hold")
    doubt = d.get("meter_doubt")
    return BayState(
        bay_id=d["bay_id"],
        kind=BayKind(d["kind"]),
        phase=Phase(d["phase"]),
        session=Session(**sess) if sess else None,
        hold=Hold(**hold) if hold else None,
        deadline=d.get("deadline"),
        node_online=False,  # unknown until the node speaks again
        fault=d.get("fault"),
        available=d.get("available", True),
        pending_unavailable=d.get("pending_unavailable", False),
        setpoint_a=0.0,
        door_closed=d.get("door_closed"),
        locked=d.get("locked"),
        pilot=PilotState(d.get("pilot", "-")),
        meter_wh=d.get("meter_wh"),
        meter_at=d.get("meter_at"),
        plug_count=d.get("plug_count"),
        boot_id=d.get("boot_id"),
        interrupted_since=d.get("interrupted_since"),
        interruption=d.get("interruption"),
        meter_doubt=Doubt(**doubt) if doubt else None,
        door_claim=d.get("door_claim"),
        lock_claim=d.get("lock_claim"),
        door_cycle=bool(d.get("door_cycle", False)),
    )


def event_name(ev: Event) -> str:
    name = type(ev).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def session_row_open(
    sess: Session, *, bay_id: str, connector: int, tariff: Tariff
) -> dict[str, Any]:
    return {
        "id": sess.session_id,
        "bay_id": bay_id,
        "connector": connector,
        "token": sess.token,
        "auth_source": sess.auth_source,
        "reservation_id": sess.reservation_id,
        "mode": sess.mode,
        "state": "open",
        "started_at": sess.started_at,
        "meter_start_wh": sess.meter_start_wh,
        "meter_wh": sess.meter_wh,
        "energy_wh": 0,
        "peak_power_w": 0.0,
        "tariff": tariff.model_dump(),
        "currency": tariff.currency,
        "quota_wh": sess.quota_wh,
        "quota_s": sess.quota_s,
        "plug_count": sess.plug_count,
        "node_boot_id": sess.boot_id,
    }


def session_row_progress(sess: Session) -> dict[str, Any]:
    return {
        "id": sess.session_id,
        "meter_wh": sess.meter_wh,
        "energy_wh": sess.energy_wh,
        "peak_power_w": sess.peak_power_w,
        "plug_count": sess.plug_count,
        "node_boot_id": sess.boot_id,
    }


def session_row_close(eff: CloseSession, tariff: Tariff) -> dict[str, Any]:
    sess = eff.session
    f = figures(
        meter_start_wh=sess.meter_start_wh,
        meter_stop_wh=sess.meter_wh,
        started_at=sess.started_at,
        stopped_at=eff.stopped_at,
        peak_power_w=sess.peak_power_w,
        tariff=tariff,
    )
    return {
        "id": sess.session_id,
        "state": "closed",
        "stopped_at": eff.stopped_at,
        "meter_stop_wh": sess.meter_wh,
        "meter_wh": sess.meter_wh,
        "energy_wh": f.energy_wh,
        "peak_power_w": f.peak_power_w,
        "avg_power_w": f.avg_power_w,
        "cost": f.cost,
        "currency": f.currency,
        "stop_reason": eff.reason.value,
        "plug_count": sess.plug_count,
        "node_boot_id": sess.boot_id,
    }


def _hold_row(h: Hold, bay_id: str, now: float, state: str) -> dict[str, Any]:
    return {
        "id": h.hold_id,
        "bay_id": bay_id,
        "token": h.token,
        "reservation_id": h.reservation_id,
        "created_at": now,
        "expires_at": h.expires_at,
        "state": state,
    }


def build_commit(
    *,
    bay_id: str,
    connector: int,
    event: Event,
    new: BayState,
    effects: list[Effect],
    now: float,
    tariff: Tariff,
    checkpoint: bool,
    actor: str | None = None,
) -> Commit | None:
    """The rows of one transition, or None when nothing durable changed."""
    c = Commit()
    quiet = isinstance(event, Telemetry | Tick)
    # A run of rejected readings is audited once (its first); the rest are only counted.
    durable = [
        e
        for e in effects
        if not isinstance(e, UpdateSession) and not (isinstance(e, ReadingRejected) and not e.first)
    ]
    if quiet and not durable and not checkpoint:
        return None
    sid = new.session.session_id if new.session else None
    data = _plain(event)
    if actor:
        data["actor"] = actor
    c.events.append(EventRow(event_name(event), now, bay_id, sid, data))
    c.bay_states[bay_id] = state_to_dict(new)
    if isinstance(event, HoldPlaced) and new.hold == event.hold:
        c.holds.append(_hold_row(event.hold, bay_id, now, "active"))
    for eff in effects:
        match eff:
            case OpenSession(session=sess):
                c.session_open.append(
                    session_row_open(sess, bay_id=bay_id, connector=connector, tariff=tariff)
                )
                c.outbox.append(
                    OutboxRow(
                        "StartTransaction",
                        {
                            "connectorId": connector,
                            "idTag": sess.token[:20],
                            "meterStart": sess.meter_start_wh,
                            "timestamp": iso(sess.started_at),
                            **(
                                {"reservationId": sess.reservation_id}
                                if sess.reservation_id is not None
                                else {}
                            ),
                        },
                        sess.session_id,
                    )
                )
            case UpdateSession(session=sess) if checkpoint or isinstance(event, ModeChanged):
                row = session_row_progress(sess)
                row["mode"] = sess.mode
                c.session_update.append(row)
            case CloseSession():
                c.session_update.append(session_row_close(eff, tariff))
                c.events.append(
                    EventRow(
                        "session_closed",
                        now,
                        bay_id,
                        eff.session.session_id,
                        {"reason": eff.reason.value, "energy_wh": eff.session.energy_wh},
                    )
                )
                c.outbox.append(
                    OutboxRow(
                        "StopTransaction",
                        {
                            "idTag": eff.session.token[:20],
                            "meterStop": eff.session.meter_wh,
                            "timestamp": iso(eff.stopped_at),
                            "reason": eff.reason.ocpp(),
                            "transactionData": [
                                {
                                    "timestamp": iso(eff.stopped_at),
                                    "sampledValue": [
                                        {
                                            "value": str(eff.session.meter_wh),
                                            "context": "Transaction.End",
                                            "measurand": "Energy.Active.Import.Register",
                                            "unit": "Wh",
                                        }
                                    ],
                                }
                            ],
                        },
                        eff.session.session_id,
                    )
                )
            case HoldEnded(hold=h, outcome=outcome):
                c.holds.append(_hold_row(h, bay_id, now, outcome))
            case ReadingRejected(first=True):
                c.audit.append(
                    (
                        "node",
                        "reading_rejected",
                        {
                            "bay_id": bay_id,
                            "what": "energy_wh",
                            "verdict": eff.verdict.value,
                            "value_wh": eff.value_wh,
                            "booked_wh": eff.booked_wh,
                            "allowed_wh": round(eff.allowed_wh, 1),
                        },
                    )
                )
            case MeterReanchored(old_wh=old_wh, new_wh=new_wh):
                c.audit.append(
                    (
                        "node",
                        "meter_reanchored",
                        {"bay_id": bay_id, "old_wh": old_wh, "new_wh": new_wh},
                    )
                )
            case InterruptionEnded():
                c.events.append(
                    EventRow(
                        "interruption",
                        now,
                        bay_id,
                        eff.session_id,
                        {
                            "start": eff.started_at,
                            "end": eff.ended_at,
                            "duration_s": round(eff.ended_at - eff.started_at, 3),
                            "cause": eff.cause,
                            "outcome": eff.outcome,
                        },
                    )
                )
            case StatusChanged(old=old, new=st):
                c.events.append(
                    EventRow("status", now, bay_id, sid, {"old": old.value, "new": st.value})
                )
            case Refused(code=code, message=msg):
                c.events.append(
                    EventRow("refused", now, bay_id, sid, {"code": code, "message": msg})
                )
            case _:
                pass
    return c
