"""Driver and owner commands shared by the API and the kiosk, mapped to HTTP answers.

Refusals are 409 with the station's own code and message (fit for a
touchscreen); an unknown bay or session is 404.
"""

from __future__ import annotations

from controller.core.bays import UnknownBay
from controller.core.outcome import Outcome
from controller.core.station import Station
from local_ui.errors import ApiError
from local_ui.messages import sentence
from local_ui.schemas import TokenRequest
from local_ui.views import pv_available

BOOST_WARNING = (
    "Boost charges at the highest current the site allows and puts this bay first. "
    "It raises the site's peak demand, which can raise the electricity bill. Confirm to continue."
)


def bay_or_404(station: Station, bay_id: str) -> None:
    if bay_id not in station.bays:
        raise ApiError(404, "unknown_bay", f"There is no bay {bay_id!r}.")


def refuse_if_failed(out: Outcome) -> Outcome:
    if not out.ok:
        # The station's refusals are written for logs too: shown, they are sentences.
        raise ApiError(409, out.code, sentence(out.message), extra={"session_id": out.session_id})
    return out


def check_mode(station: Station, mode: str, boost_confirmed: bool) -> None:
    if mode == "solar" and not pv_available(station):
        raise ApiError(
            409, "solar_unavailable", "Solar charging needs a PV meter; this site has none."
        )
    if mode == "boost" and not boost_confirmed:
        raise ApiError(409, "confirm_boost", BOOST_WARNING)


async def present_token(station: Station, bay_id: str, req: TokenRequest, source: str) -> Outcome:
    bay_or_404(station, bay_id)
    sess = station.bays[bay_id].state.session
    stopping = sess is not None and sess.token == req.token
    if not stopping:
        check_mode(station, req.mode, req.boost_confirmed)
    try:
        out = await station.commands.present_token(
            bay_id,
            req.token,
            source=source,
            mode=req.mode,
            quota_wh=req.quota_wh,
            quota_s=req.quota_s,
        )
    except UnknownBay:
        raise ApiError(404, "unknown_bay", f"There is no bay {bay_id!r}.") from None
    return refuse_if_failed(out)
