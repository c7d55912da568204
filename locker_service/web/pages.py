"""HTML pages: dashboard (and its fleet view), kiosk screen, purchaser page (and its QR
image), demo panel.

Pages carry no secrets: the dashboard and the kiosk screen ask for their token in the browser
and call the JSON API with it; the purchaser page's token is its own address. Every page is sent
with a Content-Security-Policy that allows only this origin (plus the simulator's control API on
the demo panel), so a kiosk screen cannot be made to load anything from elsewhere.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from locker_service.api.deps import SessionDep, SettingsDep
from locker_service.errors import NotFound
from locker_service.foodsafety import profiles
from locker_service.kiosks import exceptions
from locker_service.operators.notes import REASON_MAX_LENGTH
from locker_service.orders import service as orders
from locker_service.telemetry.record import Kept
from locker_service.telemetry.schemas import TemperaturePoint
from locker_service.web import TEMPLATES_DIR, i18n, repository

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=TEMPLATES_DIR)

KIOSK_IDLE_S = 60  # a person who walked away: the next one must not see their half-typed code
KIOSK_RESULT_S = 20  # "Compartment 7 is open" stays long enough to read and walk to the door
FLEET_PAGE_SIZE = 50  # rows a screen shows without scrolling far; 10,000 kiosks are 200 pages
FLEET_REFRESH_S = 30  # faults and temperatures are not pushed per kiosk: re-read the page
DEFAULT_SIM_URL = "http://127.0.0.1:8001"  # `lockerctl sim`'s control API (README.md defaults)
MAX_SIM_URL_LENGTH = 300  # a host name (253) with scheme and port
SIM_HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")  # a name or IPv4 address
IPV6_HOST_RE = re.compile(r"[0-9A-Fa-f:.]+")  # what urlsplit leaves of `[...]`


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
    settings = request.app.state.settings
    return page(
        request,
        "dashboard.html",
        {
            "lang": "en",
            "floor_c": settings.hold_floor_c,
            "time_scale": settings.time_scale,
            "reason_max": REASON_MAX_LENGTH,  # what the API takes, so the form never sends more
        },
    )


@router.get("/dashboard/fleet", response_class=HTMLResponse)
async def fleet(request: Request) -> HTMLResponse:
    """Every kiosk in scope, troubled first, a page of rows at a time (ADR 0051)."""
    context = {"lang": "en", "page_size": FLEET_PAGE_SIZE, "refresh_s": FLEET_REFRESH_S}
    return page(request, "fleet.html", context)


@router.get("/kiosk", response_class=HTMLResponse)
async def kiosk_screen(
    request: Request,
    lang: str | None = None,
    idle_s: Annotated[int, Query(ge=5, le=600)] = KIOSK_IDLE_S,
    result_s: Annotated[int, Query(ge=3, le=120)] = KIOSK_RESULT_S,
    offline_screen: str | None = None,
) -> HTMLResponse:
    """The kiosk's touch screen. `offline_screen` is the bridge's own screen on the kiosk PC
    (`BRIDGE_SCREEN_PORT`, docs/adr/0077): the page goes there while the kiosk is cut off."""
    language = i18n.pick_language(lang, request.headers.get("accept-language"))
    origin = None
    if offline_screen is not None:
        origin = offline_screen_origin(offline_screen)
        if origin is None:
            return page(
                request,
                "message.html",
                {
                    "lang": "en",
                    "title": "Bad offline screen address",
                    "text": "offline_screen= must be the kiosk PC's own http address with a "
                    "port, such as http://127.0.0.1:8002",
                },
                status_code=400,
            )
    context = {
        "lang": language,
        "t": i18n.catalogue(language),
        "catalogues": i18n.CATALOGUES,
        "languages": i18n.LANGUAGE_NAMES,
        "idle_s": idle_s,
        "result_s": result_s,
        "offline_screen": origin,
    }
    return page(request, "kiosk.html", context, connect_extra=origin or "")


def simulator_origin(sim: str) -> str | None:
    """`scheme://host:port` of the simulator's control API, rebuilt from checked parts; None
    unless `sim` is an http(s) URL with a plain host name or IP and a port. The origin goes into
    the page's CSP header, so nothing else may pass: no `;`, space or quote could add a
    directive, and no character outside ASCII could reach the header at all."""
    if len(sim) > MAX_SIM_URL_LENGTH or not sim.isascii():
        return None
    try:
        parts = urlsplit(sim)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    host = parts.hostname
    if parts.scheme not in ("http", "https") or host is None or port is None:
        return None
    if parts.username is not None or parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    if SIM_HOST_RE.fullmatch(host):
        return f"{parts.scheme}://{host}:{port}"
    if IPV6_HOST_RE.fullmatch(host):
        return f"{parts.scheme}://[{host}]:{port}"
    return None


def offline_screen_origin(url: str) -> str | None:
    """The origin of a bridge's offline screen: an http address on the kiosk PC itself
    (loopback) with a port, checked as `simulator_origin` checks; None otherwise."""
    origin = simulator_origin(url)
    if origin is None or not origin.startswith("http://"):
        return None
    host = urlsplit(origin).hostname
    return origin if host in ("127.0.0.1", "localhost", "::1") else None


@router.get("/demo", response_class=HTMLResponse)
async def demo_panel(request: Request, sim: str = DEFAULT_SIM_URL) -> HTMLResponse:
    origin = simulator_origin(sim)
    if origin is None:
        return page(
            request,
            "message.html",
            {
                "lang": "en",
                "title": "Bad simulator address",
                "text": "sim= must be an http(s) address with a host and a port, "
                "such as http://127.0.0.1:8001",
            },
            status_code=400,
        )
    return page(request, "demo.html", {"lang": "en", "sim_url": origin}, connect_extra=origin)


def not_found_page(request: Request, language: str) -> Response:
    context = {
        "lang": language,
        "title": i18n.translate(language, "purchaser.not_found_title"),
        "text": i18n.translate(language, "purchaser.not_found"),
    }
    return page(request, "message.html", context, status_code=404)


@router.get("/p/{token}", response_class=HTMLResponse)
async def purchaser_page(
    token: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    lang: str | None = None,
) -> Response:
    """The purchaser's page: status, and while ready the QR code and the fallback code."""
    language = i18n.pick_language(lang, request.headers.get("accept-language"))
    try:
        status = await orders.purchaser_status(session, settings, token)
    except NotFound:
        return not_found_page(request, language)
    extras = await repository.purchaser_extras(session, token)
    zone = _zone(extras.site_timezone if extras else "UTC")
    situation = exceptions.purchaser_status(
        status.state,
        deposited=status.deposited,
        compartment_fault=status.fault_code,
        kiosk_online=status.kiosk_online is not False,
        food_unsafe=status.food_unsafe,
        after_fault=status.ended_after_fault,
        discarded=status.discarded,
        taken_out=status.taken_out,
    )
    if situation == "status.kiosk_offline" and settings.offline_supply_refresh_s <= 0:
        situation = "status.kiosk_offline_closed"  # no offline pickups: say nothing opens
    minutes_left = None
    if situation == "status.disinfecting" and extras and extras.cycle_ends_at:
        seconds = (extras.cycle_ends_at - datetime.now(UTC)).total_seconds()
        minutes_left = max(1, math.ceil(seconds / 60))  # "about 1 min" until the cycle reports
    view = {
        "state": status.state,
        "order_ref": status.external_ref,
        "site_name": status.site_name,
        "kiosk_name": status.kiosk_name,
        "compartment": status.compartment_number,
        "fallback_code": status.fallback_code,
        "show_codes": status.qr_url is not None,  # ready, and not behind a fault
        "minutes_left": minutes_left,
        "fault": status.fault,
        "kiosk_online": status.kiosk_online is not False,
    }
    context = {
        "lang": language,
        "t": i18n.catalogue(language),
        "languages": i18n.LANGUAGE_NAMES,
        "view": view,
        "status_text": i18n.translate(language, situation),
        "situation": situation,
        "minutes_text": (
            i18n.translate(language, "status.minutes_left", m=minutes_left)
            if minutes_left is not None
            else None
        ),
        "deadline_text": (
            _deadline(status.hold_until, zone) if status.qr_url is not None else None
        ),
        "kept_text": _kept(language, extras.kept if extras else None),
        "trace": (
            _trace(extras.trace, profiles.for_site(settings, extras.food_profile).floor_c)
            if extras
            else None
        ),
        "minutes_template": i18n.catalogue(language)["status.minutes_left"],
        "cycle_ends_at": (
            extras.cycle_ends_at.isoformat() if extras and extras.cycle_ends_at else ""
        ),
        "qr_url": f"/p/{token}/qr.png",
        "status_url": f"/api/v1/p/{token}",
    }
    response = page(request, "purchaser.html", context)
    response.headers["Cache-Control"] = "no-store"  # it shows a code that opens a door
    return response


def _kept(language: str, kept: Kept | None) -> str | None:
    """ "Kept at about 65 °C, never below 63 °C, for 42 minutes since it arrived"."""
    if kept is None or kept.mean_c is None or kept.min_c is None:
        return None
    return i18n.translate(
        language,
        "status.kept",
        c=f"{kept.mean_c:.0f}",
        low=f"{kept.min_c:.0f}",
        m=kept.minutes,
    )


TRACE_W, TRACE_H = 300, 80


def _trace(points: list[TemperaturePoint], floor_c: float) -> dict[str, Any] | None:
    """The food's temperatures as an SVG line, with the site's floor: drawn on the server, so
    the page needs no chart library."""
    temps = [p.temp_c for p in points if p.temp_c is not None]
    if len(temps) < 2:
        return None
    low, high = min(*temps, floor_c) - 2.0, max(*temps, floor_c) + 2.0

    def y(t: float) -> float:
        return round(TRACE_H - (t - low) / (high - low) * TRACE_H, 1)

    step = TRACE_W / (len(temps) - 1)
    line = " ".join(f"{round(i * step, 1)},{y(t)}" for i, t in enumerate(temps))
    return {
        "points": line,
        "floor_y": y(floor_c),
        "temps": ",".join(f"{t:.1f}" for t in temps),
        # When each point was read (Unix seconds): what the line is can be checked against the
        # compartment's own record.
        "times": ",".join(f"{p.ts.timestamp():.1f}" for p in points if p.temp_c is not None),
        "width": TRACE_W,
        "height": TRACE_H,
    }


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _deadline(at: datetime | None, zone: ZoneInfo) -> str | None:
    if at is None:
        return None
    local = at.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} ({zone.key})"
