"""The locker service's FastAPI application: `create_app()` and its `lifespan`.

Everything with a connection (database engine, MQTT link, background loops) is made in
`lifespan`, never at import, so tests can build as many apps as they need.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from locker_service import log_redaction
from locker_service.access.endpoints import admin_router as keys_admin_router
from locker_service.access.endpoints import merchant_router as keys_merchant_router
from locker_service.api.errors import install_error_handlers
from locker_service.api.metrics import router as metrics_router
from locker_service.api.openapi import install as install_openapi
from locker_service.api.routing import serve_routes
from locker_service.audit.endpoints import router as audit_router
from locker_service.config import Settings, get_settings
from locker_service.context import ServiceContext
from locker_service.db import create_engine, create_sessionmaker, is_sqlite
from locker_service.haccp.endpoints import router as haccp_router
from locker_service.kiosks.endpoints import router as kiosk_router
from locker_service.live import LiveHub
from locker_service.notifications.webhook_api import router as webhooks_router
from locker_service.operators.endpoints import router as operator_router
from locker_service.orders.endpoints import purchaser_router
from locker_service.orders.endpoints import router as orders_router
from locker_service.orders.writer import OrderWriter
from locker_service.runtime import Runtime, start_runtime
from locker_service.telemetry.endpoints import router as telemetry_router
from locker_service.web import install as install_web

log = logging.getLogger(__name__)

# Connections kept, and lent beyond those, for the work a person stands at the kiosk for (ADR
# 0094, 0096), and for the lease keeper: its takes (a batch and up to three kiosks on their
# own at once, ADR 0105), the renewal while a round runs long, and the releases of a
# rebalance (ADR 0097). With the main pool's (LOCKER_DB_POOL_SIZE, LOCKER_DB_MAX_OVERFLOW;
# 10 and 20 by default) and the HACCP sealing's one, a replica holds at most 45 connections.
ATTENDED_POOL = (4, 4)
LEASE_POOL = (4, 2)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.migrate_on_start:
        from migrations import upgrade_async

        await upgrade_async(settings.database_url, secret_key=settings.secret_key)
    pool = (
        {}  # SQLite: its own pool (one writer at a time, ADR 0033)
        if is_sqlite(settings.database_url)
        else {"pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow}
    )
    engine = create_engine(
        settings.database_url, idle_in_transaction_s=settings.db_idle_in_transaction_s, **pool
    )
    sessionmaker = create_sessionmaker(engine)
    attended_engine = lease_engine = None
    if engine.dialect.name == "postgresql":
        attended_engine, lease_engine = (
            create_engine(
                settings.database_url,
                idle_in_transaction_s=settings.db_idle_in_transaction_s,
                pool_size=size,
                max_overflow=overflow,
            )
            for size, overflow in (ATTENDED_POOL, LEASE_POOL)
        )
    ctx = ServiceContext(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        hub=LiveHub(),
        order_writer=OrderWriter(engine, sessionmaker),
        attended_sessionmaker=create_sessionmaker(attended_engine) if attended_engine else None,
        lease_sessionmaker=create_sessionmaker(lease_engine) if lease_engine else None,
    )
    app.state.ctx = ctx
    # The kiosk event handler, the telemetry ingest, and what the settings enable: the kiosk
    # link, the notification outbox worker, the timer loop.
    try:
        runtime = await start_runtime(ctx)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.stop()
    finally:
        await ctx.order_writer.close()
        for side in (attended_engine, lease_engine):
            if side is not None:
                await side.dispose()
        await engine.dispose()


# The API's routers, in the order their routes are matched (the screens' are web's).
API_ROUTERS = (
    orders_router,
    kiosk_router,
    operator_router,
    audit_router,
    purchaser_router,
    metrics_router,
    telemetry_router,
    haccp_router,
    webhooks_router,
    keys_admin_router,
    keys_merchant_router,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="Smart food locker service",
        version="1.0.0",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,  # served from the package, not a CDN (web/api_docs.py)
        redoc_url=None,
    )
    app.state.settings = settings or get_settings()
    log_redaction.install()  # before uvicorn logs its first request
    install_error_handlers(app)
    install_openapi(app)
    serve_routes(app, *API_ROUTERS)
    install_web(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up and serving."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=None)
    async def readyz() -> JSONResponse:
        """The database answers and, when the kiosk link is enabled, the broker is connected
        and the replica subscribed (`mqtt`) and its first lease round over (`leases`, ADR
        0099)."""
        ctx: ServiceContext = app.state.ctx
        checks: dict[str, bool] = {}
        try:
            async with ctx.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            checks["database"] = True
        except Exception:
            log.warning("readiness: database unreachable", exc_info=True)
            checks["database"] = False
        runtime: Runtime = app.state.runtime
        if runtime.link is not None:
            checks["mqtt"] = runtime.link.subscribed
        if runtime.leases is not None:
            # The first lease round, which runs while the service already serves (ADR 0099).
            checks["leases"] = runtime.leases.settled
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    return app
