"""HTML pages: dashboard, kiosk screen, purchaser page (and its QR image), demo panel.

Pages carry no secrets: the dashboard and the kiosk screen ask for their token in the browser
and call the JSON API with it; the purchaser page's token is its own address. Every page is sent
with a Content-Security-Policy that allows only this origin (plus the simulator's control API on
the demo panel), so a kiosk screen cannot be made to load anything from elsewhere.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from locker_service.web import TEMPLATES_DIR, i18n

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=TEMPLATES_DIR)

KIOSK_IDLE_S = 60  # a person who walked away: the next one must not see their half-typed code
KIOSK_RESULT_S = 20  # "Compartment 7 is open" stays long enough to read and walk to the door
DEFAULT_SIM_URL = "http://127.0.0.1:8001"  # `lockerctl sim`'s control API (DESIGN.md defaults)


def csp(connect_extra: str = "") -> str:
    connect = f"'self' {connect_extra}".strip()
    return (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        f"script-src 'self'; connect-src {connect}; frame-src 'self'; frame-ancestors 'self'; "
        "base-uri 'none'; form-action 'self'"
    )


def page(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    connect_extra: str = "",
) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers["Content-Security-Policy"] = csp(connect_extra)
    response.headers["Referrer-Policy"] = "no-referrer"  # the purchaser page's URL is a secret
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/dashboard")


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request) -> HTMLResponse:
    return page(request, "dashboard.html", {"lang": "en"})


@router.get("/kiosk", response_class=HTMLResponse)
async def kiosk_screen(
    request: Request,
    lang: str | None = None,
    idle_s: Annotated[int, Query(ge=5, le=600)] = KIOSK_IDLE_S,
    result_s: Annotated[int, Query(ge=3, le=120)] = KIOSK_RESULT_S,
) -> HTMLResponse:
    language = i18n.pick_language(lang, request.headers.get("accept-language"))
    context = {
        "lang": language,
        "t": i18n.catalogue(language),
        "catalogues": i18n.CATALOGUES,
        "languages": i18n.LANGUAGE_NAMES,
        "idle_s": idle_s,
        "result_s": result_s,
    }
    return page(request, "kiosk.html", context)


@router.get("/demo", response_class=HTMLResponse)
async def demo_panel(request: Request, sim: str = DEFAULT_SIM_URL) -> HTMLResponse:
    parts = urlsplit(sim)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return page(
            request,
            "message.html",
            {"lang": "en", "title": "Bad simulator address", "text": f"not an http URL: {sim}"},
            status_code=400,
        )
    origin = f"{parts.scheme}://{parts.netloc}"
    return page(request, "demo.html", {"lang": "en", "sim_url": origin}, connect_extra=origin)


def not_found_page(request: Request, language: str) -> Response:
    context = {
        "lang": language,
        "title": i18n.translate(language, "purchaser.not_found_title"),
        "text": i18n.translate(language, "purchaser.not_found"),
    }
    return page(request, "message.html", context, status_code=404)
