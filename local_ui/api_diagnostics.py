"""API: the diagnostics bundle for the owner to download (the one GetDiagnostics uploads)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Response

from controller.ops.diagnostics import build_bundle
from local_ui.api_bays import ERROR_RESPONSES
from local_ui.context import Ctx, OwnerOnly, audit_actor, check_csrf

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
