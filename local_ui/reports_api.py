"""API: the dashboard's figures and power chart, yearly statistics, the history PDF, the
installer's checklist and commissioning report (PDF, CSV)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from local_ui import dashboard, history
from local_ui.accounts import User
from local_ui.api_bays import ERROR_RESPONSES
from local_ui.api_sessions import Filter
from local_ui.charts import power_svg, yearly_svg
from local_ui.context import Ctx, Operator, Reader, UiContext, check_csrf
from local_ui.reports_commissioning import checklist, report_csv, report_pdf
from local_ui.reports_pdf import history_pdf

router = APIRouter(prefix="/api/v1", dependencies=[Depends(check_csrf)], responses=ERROR_RESPONSES)

Hours = Annotated[int, Query(ge=1, le=24 * 7, description="how many hours back from now")]


@router.get("/dashboard", tags=["dashboard"])
async def dashboard_now(ctx: Ctx, user: Reader) -> dict[str, Any]:
    """Site power now (kW, per phase), chargers and PV; energy today and this month."""
    return await dashboard.dashboard(ctx.station)


async def _history(ctx: UiContext, hours: int) -> dashboard.PowerHistory:
    st = ctx.station
    now = st.clock.wall()
    return await dashboard.power_history(
        st.journal,
        [rt.cfg.node_id for rt in st.bays.values()],
        now - hours * 3600,
        now,
        pv=st.meters.pv_available,
    )


@router.get("/dashboard/power", tags=["dashboard"])
async def dashboard_power(ctx: Ctx, user: Reader, hours: Hours = 24) -> dict[str, Any]:
    """Mean power per minute (W) of the site, the building, the chargers and PV."""
    return (await _history(ctx, hours)).view()


@router.get("/dashboard/power.svg", tags=["dashboard"], response_class=Response)
async def dashboard_power_svg(ctx: Ctx, user: Reader, hours: Hours = 24) -> Response:
    """The power chart of the last ``hours`` as SVG (lines with a legend)."""
    h = await _history(ctx, hours)
    view = h.view()
    return Response(
        power_svg(h.minutes, h.series, view["labels"]),
        media_type="image/svg+xml",
        headers={"Cache-Control": "no-store"},
    )


async def _yearly(ctx: UiContext, years: int) -> dict[str, Any]:
    rows = await history.yearly(ctx.station.journal, years)
    return {"years": rows, "trend_kwh": history.trend([r["energy_kwh"] for r in rows])}


Years = Annotated[int, Query(ge=1, le=20)]


@router.get("/stats/yearly", tags=["sessions"])
async def stats_yearly(ctx: Ctx, user: Reader, years: Years = 5) -> dict[str, Any]:
    """kWh, sessions and cost per calendar year (closed sessions by start), with a trend line."""
    return await _yearly(ctx, years)


@router.get("/stats/yearly.svg", tags=["sessions"], response_class=Response)
async def stats_yearly_svg(ctx: Ctx, user: Reader, years: Years = 5) -> Response:
    s = await _yearly(ctx, years)
    return Response(yearly_svg(s["years"], s["trend_kwh"]), media_type="image/svg+xml")


@router.get("/sessions.pdf", tags=["sessions"], response_class=Response)
async def sessions_pdf(f: Filter, ctx: Ctx, user: Reader) -> Response:
    """The filtered sessions as a paginated PDF with the filter, a legend and the totals."""
    st = ctx.station
    pdf, _ = await history_pdf(
        st.journal,
        f,
        station=st.cfg.station.name,
        currency=st.cfg.tariff.currency,
        now=st.clock.wall(),
    )
    name = f"sessions-{st.cfg.station.id}-{dt.date.today().isoformat()}.pdf"
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _who(user: User) -> str:
    return str(user.username)


@router.get("/installer/checklist", tags=["diagnostics"])
async def installer_checklist(ctx: Ctx, user: Operator) -> dict[str, Any]:
    """The installer's steps (Network, Limits, Tests, Connect, Report), each with its result."""
    return checklist(ctx.station, ctx.installer, _who(user)).view()


@router.get("/installer/report.pdf", tags=["diagnostics"], response_class=Response)
async def installer_report_pdf(ctx: Ctx, user: Operator) -> Response:
    """The commissioning report as PDF."""
    c = checklist(ctx.station, ctx.installer, _who(user))
    name = f"commissioning-{c.station_id}-{dt.date.today().isoformat()}.pdf"
    return Response(
        await report_pdf(c),
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/installer/report.csv", tags=["diagnostics"], response_class=Response)
async def installer_report_csv(ctx: Ctx, user: Operator) -> Response:
    """The commissioning report as CSV (section, item, value, result)."""
    c = checklist(ctx.station, ctx.installer, _who(user))
    name = f"commissioning-{c.station_id}-{dt.date.today().isoformat()}.csv"
    return Response(
        report_csv(c),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
