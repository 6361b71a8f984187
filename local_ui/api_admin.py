"""API: settings (by section), audit log, diagnostics, installer tests, user management."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import BaseModel, ValidationError

from controller.core.events import SettingsChanged
from controller.core.journal import JournalError
from controller.core.station import Station
from local_ui import i18n
from local_ui.accounts import User
from local_ui.actions import bay_or_404
from local_ui.api_bays import ERROR_RESPONSES
from local_ui.context import (
    Ctx,
    InstallerOnly,
    OwnerOnly,
    Reader,
    UiContext,
    audit_actor,
    check_csrf,
)
from local_ui.describe import (
    LOAD_KINDS,
    PEOPLE_PREFIX,
    SECURITY_KINDS,
    Category,
    audit_row,
)
from local_ui.errors import ApiError
from local_ui.installer import Refused
from local_ui.messages import not_allowed, validation_message
from local_ui.passwords import require_strong
from local_ui.schemas import InstallerTestRequest, NewUserRequest, UserOut
from local_ui.settings import Section, SettingRefused, dump
from local_ui.views import cloud_online, load_view

router = APIRouter(prefix="/api/v1", dependencies=[Depends(check_csrf)], responses=ERROR_RESPONSES)


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


def _invalid(err: ValidationError) -> ApiError:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"])
    return ApiError(
        422,
        "invalid_setting",
        validation_message(e),
        extra={
            "field": where,
            "details": [
                {"loc": [str(p) for p in x["loc"]], "msg": validation_message(x)}
                for x in err.errors()
            ],
        },
    )


def owner_lang(request: Request) -> str:
    """The person's language (as for invitations): the page's (``?lang=``), else their
    browser's, else the station's."""
    default = i18n.pick(request.app.state.ui.station.cfg.station.language)
    asked = request.query_params.get("lang", "")[:16]
    if asked:
        return i18n.pick(asked, default)
    return i18n.negotiate(request.headers.get("accept-language", "")[:200], default)


Lang = Annotated[str, Depends(owner_lang)]


def _validated(
    ctx: UiContext, section: str, patch: dict[str, Any], user: User, lang: str = i18n.SOURCE
) -> tuple[Section, BaseModel, list[dict[str, Any]]]:
    """The section, the merged and validated value, and its warnings (or an ApiError)."""
    sec = ctx.settings.sections.get(section)
    if sec is None:
        raise ApiError(404, "unknown_section", f"There is no settings section {section!r}.")
    if user.role not in sec.roles:
        raise ApiError(403, "forbidden", not_allowed(user.role, f"change {sec.title.lower()}"))
    note = ctx.settings.unavailable(ctx.station, section)
    if note is not None:
        raise ApiError(409, "unavailable", note)
    try:
        value = ctx.settings.validate(ctx.station, section, patch)
    except ValidationError as err:
        raise _invalid(err) from None
    try:
        warnings = ctx.settings.check(ctx.station, section, value)
    except SettingRefused as err:
        text = err.text(lang)
        raise ApiError(
            422,
            "invalid_setting",
            text,
            extra={"field": err.field, "details": [{"loc": [err.field], "msg": text}]},
        ) from None
    return sec, value, warnings


@router.post("/settings/{section}/check", tags=["settings"])
async def check_section(
    section: str,
    patch: Annotated[dict[str, Any], Body(description="fields to change; the rest stay")],
    ctx: Ctx,
    user: Reader,
    lang: Lang,
) -> dict[str, Any]:
    """Validate a change without applying it: the values it would give and its warnings."""
    _sec, value, warnings = _validated(ctx, section, patch, user, lang)
    return {"name": section, "values": dump(value), "warnings": warnings}


@router.patch("/settings/{section}", tags=["settings"])
async def patch_section(
    section: str,
    patch: Annotated[dict[str, Any], Body(description="fields to change; the rest stay")],
    ctx: Ctx,
    user: Reader,
    lang: Lang,
) -> dict[str, Any]:
    """Validate, apply live, keep and audit a change to one section.

    Warnings (rule conflicts) do not refuse the change; they come back with it. Refusals
    that have a translation come in the person's language (``?lang=`` or their browser's).
    """
    sec, value, warnings = _validated(ctx, section, patch, user, lang)
    old = dump(sec.get(ctx.station))
    await ctx.settings.apply(ctx.station, section, value)
    new = dump(value)
    changed = {k: {"old": old.get(k), "new": v} for k, v in new.items() if old.get(k) != v}
    detail: dict[str, Any] = {"section": section, "changes": changed}
    if warnings:
        detail["warnings"] = [w["message"] for w in warnings]
    await ctx.station.audit.record("settings_changed", audit_actor(user), detail)
    ctx.station.events.publish(SettingsChanged(section, new))
    out = ctx.settings.describe(ctx.station, section)
    out["warnings"] = warnings
    return out


# ---------------------------------------------------------------------- audit


@router.get("/audit", tags=["audit"])
async def audit_log(
    ctx: Ctx,
    user: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    category: Category | None = None,
) -> list[dict[str, Any]]:
    """The audit log, newest first, each entry as text: who did what, and its category.

    ``category``: ``owner`` (what people did), ``load`` (automatic load changes),
    ``security`` (logins and accounts) or ``faults`` (safe mode, refused readings...).
    """
    rows = await ctx.station.journal.audit_log(limit=limit, kind=kind, **_category_filter(category))
    return [audit_row(r) for r in rows]


def _category_filter(category: Category | None) -> dict[str, Any]:
    """The journal's filter for one category (the four split the log, see describe.category)."""
    if category == "load":
        return {"kinds": sorted(LOAD_KINDS)}
    if category == "security":
        return {"kinds": sorted(SECURITY_KINDS)}
    people = {"not_kinds": sorted(LOAD_KINDS | SECURITY_KINDS)}
    if category == "owner":
        return {**people, "actor_prefix": PEOPLE_PREFIX}
    if category == "faults":
        return {**people, "not_actor_prefix": PEOPLE_PREFIX}
    return {}


# ---------------------------------------------------------------------- diagnostics


@router.get("/diagnostics", tags=["diagnostics"])
async def diagnostics(ctx: Ctx, user: Reader) -> dict[str, Any]:
    """Nodes (heartbeat age, firmware, link counters), OCPP link, meters, journal, load."""
    st = ctx.station
    now_m = st.clock.monotonic()
    stats = st.bays.link_stats()
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
            "blocked": dict(st.safety.blockers),
            "dropped_updates": st.nodes.dropped,
            "uptime_s": round(time.monotonic() - st.started_at, 1),
        },
        "load": load_view(st),
    }


def _meters(st: Station) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, reading in st.meters.inputs.items():
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
    response: Response,
) -> dict[str, Any]:
    """Installer tests on an idle bay: lock/unlock, relay on/off, current ramp.

    Refused while a session runs (or in safe mode, or with the node offline).
    Lock, relay on and relay off answer with their result (a relay test output
    is held by the station for ``hold_s``); a ramp (minimum → ``current_a`` or
    the bay's maximum in ``step_a`` steps, each held ``hold_s``) answers 202 at
    once: read its progress at ``/diagnostics/tests/{id}``. ``relay_off`` stops
    a running ramp.
    """
    st = ctx.station
    bay_or_404(st, bay_id)
    try:
        run = await ctx.installer.start(
            st,
            bay_id,
            req.action,
            actor=audit_actor(user),
            current_a=req.current_a,
            hold_s=req.hold_s,
            step_a=req.step_a,
        )
    except Refused as err:
        raise ApiError(err.status, err.code, err.message) from None
    if run.state == "running":
        response.status_code = 202
    return {"ok": run.state in ("running", "passed"), **run.view()}


@router.get("/diagnostics/tests", tags=["diagnostics"])
async def installer_tests(ctx: Ctx, user: Reader) -> list[dict[str, Any]]:
    """Recent installer tests, newest first."""
    return [r.view() for r in ctx.installer.recent()]


@router.get("/diagnostics/tests/{run_id}", tags=["diagnostics"])
async def installer_test_result(run_id: str, ctx: Ctx, user: Reader) -> dict[str, Any]:
    run = ctx.installer.get(run_id)
    if run is None:
        raise ApiError(404, "unknown_test", f"There is no installer test {run_id!r}.")
    return run.view()


# ---------------------------------------------------------------------- users


@router.get("/users", tags=["users"])
async def list_users(ctx: Ctx, user: OwnerOnly) -> list[dict[str, Any]]:
    return await ctx.accounts.list_users()


@router.post("/users", tags=["users"], status_code=201, response_model=UserOut)
async def create_user(req: NewUserRequest, ctx: Ctx, user: OwnerOnly) -> UserOut:
    if await ctx.accounts.get_user(req.username) is not None:
        raise ApiError(409, "user_exists", f"There is already a user {req.username!r}.")
    await require_strong(ctx, req.password, req.username)
    created = await ctx.accounts.create_user(req.username, req.password, req.role)
    await ctx.station.audit.record(
        "user_created", audit_actor(user), {"username": req.username, "role": req.role}
    )
    return UserOut(username=created.username, role=created.role)


@router.delete("/users/{username}", tags=["users"])
async def delete_user(username: str, ctx: Ctx, user: OwnerOnly) -> dict[str, Any]:
    if username == user.username:
        raise ApiError(409, "cannot_delete_self", "You cannot delete your own account.")
    if not await ctx.accounts.delete_user(username):
        raise ApiError(404, "unknown_user", f"There is no user {username!r}.")
    await ctx.station.audit.record("user_deleted", audit_actor(user), {"username": username})
    return {"ok": True}
