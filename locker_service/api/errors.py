"""The one handler that turns the service's errors into JSON answers.

Every error answer is `{"error": code, "message": text}`, with an error's `details` beside
them. Domain code raises the plain errors of `locker_service.errors`; this module alone knows
which HTTP status each class means, so a wrong lifecycle step (`InvalidTransition`) is 409,
never 500. FastAPI's own refusals (validation, an unknown route) and anything unexpected get the
same body shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from locker_service.db import database_unreachable
from locker_service.errors import (
    Conflict,
    Forbidden,
    NoAnswerInTime,
    NotFound,
    ServiceError,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
)

log = logging.getLogger(__name__)

# The first class in an error's MRO found here gives its status, so a subclass that mixes in a
# more precise kind (a kiosk command with no answer: unavailable and no answer in time) is
# answered by the kind it names first.
STATUS_BY_ERROR: dict[type[ServiceError], int] = {
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Unprocessable: 422,
    TooManyRequests: 429,
    NoAnswerInTime: 504,
    ServiceUnavailable: 503,
    ServiceError: 400,
}


def status_of(exc: ServiceError) -> int:
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 400  # unreachable: every ServiceError has ServiceError in its MRO


def headers_of(exc: ServiceError) -> dict[str, str] | None:
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, TooManyRequests):
        return {"Retry-After": str(max(1, int(exc.retry_after_s + 0.999)))}
    return None


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": code, "message": message}


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse(
        {**exc.details, **error_body(exc.code, exc.message)},
        status_code=status_of(exc),
        headers=headers_of(exc),
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg")))
    return JSONResponse(error_body("validation_error", "; ".join(parts)), status_code=422)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}
    code = codes.get(exc.status_code, f"http_{exc.status_code}")
    return JSONResponse(
        error_body(code, str(exc.detail)),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


DATABASE_RETRY_AFTER_S = 2  # a failover or a restart of the database: try again shortly


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if database_unreachable(exc):
        log.error(
            "database unreachable on %s %s: %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
            exc,
        )
        return JSONResponse(
            error_body("database_unavailable", "the database cannot be reached now: try again"),
            status_code=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


# The classes a database out of reach comes through (`database_unreachable`). Handled by these
# classes, not only by `Exception`'s handler: Starlette answers an `Exception` handler's response
# and then raises the error again for the server to log, and uvicorn then closes the client's
# kept-alive connection, so a merchant's next request on it, sent meanwhile, got no answer at
# all during a failover. Handled here, the 503 is the whole answer and the connection stays.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    DBAPIError,
    PoolTimeoutError,
    DisconnectionError,
)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for database_error in DATABASE_ERRORS:
        app.add_exception_handler(database_error, _unexpected_error)
    app.add_exception_handler(Exception, _unexpected_error)
