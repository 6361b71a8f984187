"""API: settings (by section), audit log, diagnostics, installer tests, user management."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import ValidationError

from controller.journal import JournalError
from controller.ports import DriverError
from local_ui.actions import bay_or_404
from local_ui.api_bays import _ERRORS
from local_ui.context import (
    Ctx,
    InstallerOnly,
    OwnerOnly,
    Reader,
    audit_actor,
    check_csrf,
)
from local_ui.errors import ApiError
from local_ui.schemas import InstallerTestRequest, NewUserRequest, UserOut
from local_ui.views import cloud_online, load_view

router = APIRouter(prefix="/api/v1", dependencies=[Depends(check_csrf)], responses=_ERRORS)


# ---------------------------------------------------------------------- settings


@router.get("/settings", tags=["settings"])
async def get_settings(ctx: Ctx, user: Reader) -> dict[str, Any]:
    """Every settings section: its values, its JSON schema and the roles that may change it."""
    return {"sections": {n: ctx.settings.describe(ctx.station, n) for n in ctx.settings.sections}}


@router.get("/settings/{section}", tags=["settings"])
async def get_section(section: str, ctx: Ctx, user: Reader) -> dict[str, Any]:
    if section not in ctx.settings.sections:
        raise ApiError(404, "unknown_section", f"There is no settings section {section!r}.")
    return ctx.settings.describe(ctx.station, section)


@router.patch("/settings/{section}", tags=["settings"])
async def patch_section(
    section: str,
    patch: Annotated[dict[str, Any], Body(description="fields to change; the rest stay")],
    ctx: Ctx,
    user: Reader,
) -> dict[str, Any]:
    """Validate, apply live, keep and audit a change to one section."""
    sec = ctx.settings.sections.get(section)
    if sec is None:
        raise ApiError(404, "unknown_section", f"There is no settings section {section!r}.")
    if user.role not in sec.roles:
        raise ApiError(403, "forbidden", f"The {user.role} role may not change {sec.title}.")
    old = sec.get(ctx.station).model_dump(mode="json")
    try:
        value = ctx.settings.validate(ctx.station, section, patch)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(p) for p in e["loc"])
        raise ApiError(
            422,
            "invalid_setting",
            f"{where}: {e['msg']}" if where else str(e["msg"]),
            extra={
                "details": [
                    {"loc": [str(p) for p in x["loc"]], "msg": x["msg"]} for x in err.errors()
                ]
            },
        ) from None
    await ctx.settings.apply(ctx.station, section, value)
    new = value.model_dump(mode="json")
    changed = {k: {"old": old.get(k), "new": v} for k, v in new.items() if old.get(k) != v}
    await ctx.station.audit(
        "settings_changed", audit_actor(user), {"section": section, "changes": changed}
    )
    ctx.station.publish({"type": "settings", "section": section, "values": new})
    return ctx.settings.describe(ctx.station, section)


# ---------------------------------------------------------------------- audit


@router.get("/audit", tags=["audit"])
async def audit_log(
    ctx: Ctx,
    user: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    kind: Annotated[str | None, Query(max_length=64)] = None,
) -> list[dict[str, Any]]:
    """The audit log, newest first: who changed what (settings, stops, holds, throttling)."""
    rows = await ctx.station.journal.audit_log(limit=limit, kind=kind)
    for r in rows:
        try:
            r["detail"] = json.loads(r["detail"])
        except (TypeError, ValueError):
            pass
    return rows


# ---------------------------------------------------------------------- diagnostics


@router.get("/diagnostics", tags=["diagnostics"])
async def diagnostics(ctx: Ctx, user: Reader) -> dict[str, Any]:
    """Nodes (heartbeat age, firmware, link counters), OCPP link, meters, journal, load."""
    st = ctx.station
    now_m = st.clock.monotonic()
    stats = st.link_stats()
    nodes = []
    for bay_id, rt in st.bays.items():
        ls = stats.get(bay_id)
        tel = rt.telemetry
        nodes.append(
            {
                "bay_id": bay_id,
                "node_id": rt.cfg.node_id,
                "bus": rt.cfg.bus,
                "online": rt.state.node_online,
                "heartbeat_age_s": round(now_m - tel.at, 2) if tel else None,
                "last_ack_age_s": round(now_m - rt.last_ack_at, 2) if rt.last_ack_at else None,
                "firmware": rt.firmware or (ls.firmware if ls else "") or None,
                "link": dataclasses.asdict(ls) if ls else None,
                "output_errors": rt.output_errors,
                "temperature_c": tel.temperature_c if tel else None,
                "voltage_v": list(tel.voltage_v) if tel else None,
                "fault": rt.state.fault,
            }
        )
    meters = _meters(st)
    try:
        depth: int | None = await st.journal.outbox_depth()
        version: int | None = await st.journal.schema_version()
    except (sqlite3.Error, JournalError):
        depth = version = None
    try:
        size = st.journal.path.stat().st_size
    except OSError:
        size = None
    return {
        "nodes": nodes,
        "ocpp": {"connected": cloud_online(st), "outbox_depth": depth},
        "meters": meters,
        "journal": {
            "path": str(st.journal.path),
            "schema_version": version,
            "writable": st.journal.writable,
            "size_bytes": size,
        },
        "station": {
            "blocked": dict(st.blockers),
            "dropped_updates": st.dropped_updates,
            "uptime_s": round(time.monotonic() - st.started_at, 1),
        },
        "load": load_view(st),
    }


def _meters(st: Any) -> dict[str, Any] | None:
    meters = getattr(st, "meters", None)
    if callable(meters):
        meters = meters()
    if not isinstance(meters, dict):
        return None
    out: dict[str, Any] = {}
    for name, reading in meters.items():
        if dataclasses.is_dataclass(reading) and not isinstance(reading, type):
            d = dataclasses.asdict(reading)
            out[str(name)] = json.loads(json.dumps(d, default=str))
        else:
            out[str(name)] = str(reading)
    return out


@router.post("/diagnostics/bays/{bay_id}/test", tags=["diagnostics"])
async def installer_test(
    bay_id: str,
    req: InstallerTestRequest,
    ctx: Ctx,
    user: InstallerOnly,
) -> dict[str, Any]:
    """Installer tests on an idle bay: lock/unlock, relay on/off, current ramp.

    Commands go straight to the node; the station's output loop re-asserts the
    bay's wanted output at its next lease renewal, so a relay test is a pulse.
    """
    st = ctx.station
    bay_or_404(st, bay_id)
    rt = st.bays[bay_id]
    node = rt.node
    if node is None or not rt.state.node_online:
        raise ApiError(409, "node_offline", "The bay's node is not connected.")
    if rt.state.session is not None:
        raise ApiError(409, "bay_in_use", "Stop the running session first.")
    lease = min(st.cfg.timers.lease_s, 5.0)
    steps: list[dict[str, Any]] = []

    async def step(name: str, coro: Any) -> None:
        t0 = time.perf_counter()
        await coro
        steps.append({"step": name, "ack_ms": round((time.perf_counter() - t0) * 1000, 1)})

    try:
        if req.action in ("lock", "unlock"):
            if rt.cfg.kind != "locker":
                raise ApiError(409, "not_supported", "This bay has no lock.")
            await step(req.action, node.set_lock(locked=req.action == "lock"))
        elif req.action == "relay_on":
            amps = req.current_a if req.current_a is not None else rt.cfg.min_current_a
            amps = min(amps, rt.cfg.max_current_a)
            await step(
                f"relay_on {amps} A", node.set_output(relay_on=True, current_a=amps, lease_s=lease)
            )
        elif req.action == "relay_off":
            await step("relay_off", node.set_output(relay_on=False, current_a=0.0, lease_s=lease))
        else:
            top = min(req.current_a or rt.cfg.max_current_a, rt.cfg.max_current_a)
            amps = rt.cfg.min_current_a
            while amps <= top + 1e-9:
                await step(
                    f"{amps:g} A", node.set_output(relay_on=True, current_a=amps, lease_s=lease)
                )
                amps += 2.0
            await step("relay_off", node.set_output(relay_on=False, current_a=0.0, lease_s=lease))
    except DriverError as err:
        await st.audit(
            "installer_test",
            audit_actor(user),
            {"bay_id": bay_id, "action": req.action, "error": str(err)},
        )
        raise ApiError(502, "node_error", f"The node did not confirm: {err}") from None
    rt.output_changed.set()  # let the output loop restore the wanted state now
    await st.audit("installer_test", audit_actor(user), {"bay_id": bay_id, "action": req.action})
    tel = rt.telemetry
    return {
        "ok": True,
        "bay_id": bay_id,
        "action": req.action,
        "steps": steps,
        "telemetry": {
            "relay_on": tel.relay_on,
            "current_a": list(tel.current_a),
            "locked": tel.locked,
            "door_closed": tel.door_closed,
        }
        if tel
        else None,
    }


# ---------------------------------------------------------------------- users


@router.get("/users", tags=["users"])
async def list_users(ctx: Ctx, user: OwnerOnly) -> list[dict[str, Any]]:
    return await ctx.accounts.list_users()


@router.post("/users", tags=["users"], status_code=201, response_model=UserOut)
async def create_user(req: NewUserRequest, ctx: Ctx, user: OwnerOnly) -> UserOut:
    if await ctx.accounts.get_user(req.username) is not None:
        raise ApiError(409, "user_exists", f"There is already a user {req.username!r}.")
    created = await ctx.accounts.create_user(req.username, req.password, req.role)
    await ctx.station.audit(
        "user_created", audit_actor(user), {"username": req.username, "role": req.role}
    )
    return UserOut(username=created.username, role=created.role)


@router.delete("/users/{username}", tags=["users"])
async def delete_user(username: str, ctx: Ctx, user: OwnerOnly) -> dict[str, Any]:
    if username == user.username:
        raise ApiError(409, "cannot_delete_self", "You cannot delete your own account.")
    if not await ctx.accounts.delete_user(username):
        raise ApiError(404, "unknown_user", f"There is no user {username!r}.")
    await ctx.station.audit("user_deleted", audit_actor(user), {"username": username})
    return {"ok": True}
