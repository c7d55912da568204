"""The screens people meet: operator dashboard, kiosk touch screen, purchaser page, demo panel.

Server-rendered pages (Jinja2) with small plain scripts and styles served from the package
itself (no CDN, no front-end build: a kiosk may be offline), plus the operators' live stream
(SSE). `install(app)` mounts all of it on the service's application.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"
TEMPLATES_DIR = WEB_DIR / "templates"


def install(app: FastAPI) -> None:
    """Mount the pages, the live stream and the static files on the service's app."""
    from locker_service.api.routing import serve_routes
    from locker_service.web import api_docs, audit_page, pages, stream_endpoint

    api_docs.install(app)
    serve_routes(app, pages.router, audit_page.router, stream_endpoint.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
