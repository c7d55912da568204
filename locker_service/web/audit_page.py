"""The dashboard's record pages: the openings audit (search every door opening, read why,
download CSV) and the HACCP records (a site's sealed days as PDF or CSV).

The pages carry no data and no secret: their scripts ask the operator API with the token the
dashboard keeps for this browser tab (or asks for one), like the dashboard itself.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from locker_service.compartments.openings import OpeningKind, OpenPurpose
from locker_service.web.pages import page

router = APIRouter(include_in_schema=False)

# The words an operator reads for each kind of opening and each way it was asked for.
KIND_NAMES = {
    OpeningKind.DROPOFF: "Courier drop-off",
    OpeningKind.PICKUP: "Purchaser pickup",
    OpeningKind.REMOTE_OPEN: "Remote open",
    OpeningKind.UNEXPLAINED: "Unexplained",
    OpeningKind.OTHER: "Other",
}
HOW_NAMES = {
    "courier_pin": "courier ID and PIN",
    "qr": "QR code at the scanner",
    "keypad": "code typed on the screen",
    "scanner": "code read by the scanner",
    "qr_offline": "QR code, checked by the kiosk offline",
    "keypad_offline": "code typed on the screen, checked by the kiosk offline",
    "code": "pickup code",
    "remote": "from the dashboard or API",
    "none": "no command behind it",
    "unknown": "unknown",
}
# What an operator's opening was for (ADR 0120), as the dashboard's choice says it.
PURPOSE_NAMES = {
    OpenPurpose.HANDOVER: "to hand the food to the purchaser",
    OpenPurpose.DISCARD: "to discard the food",
    OpenPurpose.INSPECT: "to look in: the food stays in",
}


@router.get("/dashboard/haccp", response_class=HTMLResponse)
async def haccp_page(request: Request) -> HTMLResponse:
    """A site's sealed HACCP days, downloaded as PDF or CSV."""
    return page(request, "haccp.html", {"lang": "en"})


@router.get("/dashboard/openings", response_class=HTMLResponse)
async def openings_page(request: Request) -> HTMLResponse:
    context = {
        "lang": "en",
        "kinds": {k.value: name for k, name in KIND_NAMES.items()},
        "hows": HOW_NAMES,
        "purposes": {p.value: name for p, name in PURPOSE_NAMES.items()},
    }
    return page(request, "openings.html", context)
