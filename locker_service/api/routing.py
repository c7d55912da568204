"""Routers served as they were built.

Every router of the service carries its own prefix and tags (`APIRouter(prefix=..., tags=...)`),
and FastAPI builds each of its routes (path, dependencies, body and response models) once, when
the router's module is imported. `serve_routes` hands those routes to an app as they are.
`app.include_router` would instead wrap each router in an app of its own and build every route's
handling again, for each app, on the app's first request: about 50 ms, paid by the first
request a replica serves and by each of the test suite's apps (one per test).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI


def serve_routes(app: FastAPI, *routers: APIRouter) -> None:
    """Serve the routers' routes on `app`, in order, each exactly as its router built it."""
    for router in routers:
        app.router.routes.extend(router.routes)
