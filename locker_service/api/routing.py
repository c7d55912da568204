"""Routers served as they were built (ADR 0102).

Every router of the service declares on itself whatever its routes share (a prefix, tags), and
FastAPI builds each of its routes (path, dependencies, body and response models) once, when the
router's module is imported. `serve_routes` hands those routes to an app as they are. Since
FastAPI 0.137, `app.include_router` instead keeps a node per router and builds every route's
handling again, for each app, on the app's first request: about 44 ms here, paid by the first
request a replica serves and by each of the test suite's apps (one per test).

The routes keep their routers' `dependency_overrides_provider` (none), so
`app.dependency_overrides` does not reach them: nothing in the service uses it.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI


def serve_routes(app: FastAPI, *routers: APIRouter) -> None:
    """Serve the routers' routes on `app`, in order, each exactly as its router built it."""
    for router in routers:
        app.router.routes.extend(router.routes)
