"""API: the diagnostics bundle for the owner to download (the one GetDiagnostics uploads),
the station's software version and the nodes' firmware updates (progress, forcing a bay)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response

from controller.ops.diagnostics import build_bundle
from local_ui.actions import bay_or_404, refuse_if_failed
from local_ui.api_bays import ERROR_RESPONSES
from local_ui.context import Ctx, Operator, OwnerOnly, Reader, audit_actor, check_csrf

router = APIRouter(prefix="/api/v1", dependencies=[Depends(check_csrf)], responses=ERROR_RESPONSES)


@router.get(
    "/diagnostics/bundle",
    tags=["diagnostics"],
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
async def download_bundle(
    ctx: Ctx,
    user: OwnerOnly,
    hours: float = Query(24.0, gt=0, le=24 * 90, description="how far back the excerpt goes"),
) -> Response:
    """A zip of the journal excerpt, logs, configuration (secrets removed), versions, node
    states and health for the last ``hours``, for remote support."""
    st = ctx.station
    bundle = await build_bundle(st, since=st.clock.wall() - hours * 3600.0)
    await st.audit.record(
        "diagnostics_downloaded", audit_actor(user), {"file": bundle.name, "hours": hours}
    )
    return Response(
        bundle.data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{bundle.name}"'},
    )


@router.get("/firmware", tags=["diagnostics"])
async def firmware(ctx: Ctx, user: Reader) -> dict[str, Any]:
    """This station's software (version running and installed, what ran before), the node
    firmware update (its stage and, per node, state, percent sent, versions before and after,
    what went wrong) and every node's firmware version."""
    fw = ctx.station.firmware
    return {"software": fw.software.view(), "update": fw.view(), "nodes": fw.node_versions()}


@router.post("/firmware/bays/{bay_id}/force", tags=["diagnostics"])
async def force_firmware(bay_id: str, ctx: Ctx, user: Operator) -> dict[str, Any]:
    """Update a bay waiting for a firmware update now: a running session is stopped first
    (recorded), and the node is updated once it reports its relay off and no current."""
    bay_or_404(ctx.station, bay_id)
    out = refuse_if_failed(await ctx.station.firmware.force(bay_id, actor=audit_actor(user)))
    return {"ok": True, "message": out.message}
