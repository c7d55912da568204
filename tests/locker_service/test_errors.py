"""One error root, one handler: every service error answers with its code, status and headers.

The table below is the wire contract the clients (merchants, the kiosk screen, the dashboard)
depend on: each row raises a real error from a real route and reads the answer.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from locker_service import errors
from locker_service.api.errors import DATABASE_ERRORS, install_error_handlers
from locker_service.compartments.lifecycle import CompartmentTrigger, IllegalCompartmentTransition
from locker_service.compartments.service import UnlockFailed
from locker_service.dropoff.service import (
    DropoffInProgress,
    DropoffUnconfirmed,
    NoFreeCompartment,
)
from locker_service.kiosk_link.errors import CommandTimeout, InvalidCommand, KioskUnreachable
from locker_service.models import Order
from locker_service.orders.lifecycle import IllegalOrderTransition, OrderTrigger
from locker_service.pickup.service import InvalidCode, KillSwitchEngaged
from tests.support.threaded_server import ThreadedServer

CASES: list[tuple[errors.ServiceError, int, str]] = [
    (errors.BadRequest("bad"), 400, "bad_request"),
    (errors.Unauthorized("who"), 401, "unauthorized"),
    (errors.Forbidden("no"), 403, "forbidden"),
    (InvalidCode("no"), 403, "invalid_code"),
    (KillSwitchEngaged("no"), 403, "kill_switch_engaged"),
    (errors.NotFound("gone"), 404, "not_found"),
    (errors.Conflict("used", code="code_used"), 409, "code_used"),
    (
        NoFreeCompartment("full", Order(external_ref="R-1", size="L", temperature_class="hot")),
        409,
        "no_free_compartment",
    ),
    (DropoffInProgress("R-1", "Lobby", 3), 409, "dropoff_in_progress"),
    (IllegalOrderTransition("ready", OrderTrigger.DEPOSIT.value), 409, "invalid_transition"),
    (
        IllegalCompartmentTransition("cleaning", CompartmentTrigger.OCCUPY.value),
        409,
        "invalid_transition",
    ),
    (errors.Unprocessable("odd"), 422, "unprocessable"),
    (InvalidCommand("odd"), 422, "invalid_kiosk_command"),
    (errors.TooManyRequests("slow down", retry_after_s=2.2), 429, "too_many_requests"),
    (errors.ServiceUnavailable("down"), 503, "unavailable"),
    (UnlockFailed("stuck"), 503, "unlock_failed"),
    (KioskUnreachable("away"), 503, "kiosk_unreachable"),
    (CommandTimeout("late"), 504, "kiosk_command_timeout"),
    (DropoffUnconfirmed(3), 504, "dropoff_unconfirmed"),
]


@pytest.fixture
async def client() -> httpx.AsyncClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{index}")
    async def raise_case(index: int) -> None:
        raise CASES[index][0]

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[2] + str(c[1]) for c in CASES])
async def test_each_error_answers_with_its_status_and_code(
    client: httpx.AsyncClient, index: int
) -> None:
    error, status, code = CASES[index]
    async with client:
        answer = await client.get(f"/raise/{index}")
    assert answer.status_code == status
    # With what a person must act on beside them (the compartment to look at), if anything.
    assert answer.json() == {"error": code, "message": error.message, **error.details}


def test_a_refusal_names_the_compartment_to_look_at() -> None:
    assert DropoffUnconfirmed(3).details == {"compartment": 3}
    assert DropoffInProgress("R-1", "Lobby", 3).details == {"kiosk": "Lobby", "compartment": 3}


async def test_refusals_carry_their_headers(client: httpx.AsyncClient) -> None:
    codes = [c[2] for c in CASES]
    async with client:
        unauthorized = await client.get(f"/raise/{codes.index('unauthorized')}")
        throttled = await client.get(f"/raise/{codes.index('too_many_requests')}")
    assert unauthorized.headers["www-authenticate"] == "Bearer"
    assert throttled.headers["retry-after"] == "3"  # 2.2 s rounded up: never ask back too soon


def test_every_error_of_the_service_shares_the_one_root() -> None:
    for error, _status, _code in CASES:
        assert isinstance(error, errors.ServiceError)


@pytest.mark.parametrize(
    "raised, status, code",
    [
        (ConnectionRefusedError(111, "Connection refused"), 503, "database_unavailable"),
        (OperationalError("SELECT 1", {}, ConnectionRefusedError()), 503, "database_unavailable"),
        (
            InterfaceError("SELECT 1", {}, Exception("connection is closed")),
            503,
            "database_unavailable",
        ),
        (PoolTimeoutError("QueuePool limit reached"), 503, "database_unavailable"),  # ADR 0085
        (IntegrityError("INSERT", {}, Exception("duplicate key")), 500, "internal_error"),
        (RuntimeError("a bug"), 500, "internal_error"),
    ],
)
async def test_a_database_out_of_reach_is_a_503_to_retry_and_a_bug_a_500(
    raised: Exception, status: int, code: str
) -> None:
    """A failover or a database restart (the connection refused or cut) is not a fault of the
    service: the caller is told to try again, and nothing was stored."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/db")
    async def fail() -> None:
        raise raised

    # Every error of the classes a database comes through is answered and done with; only an
    # error of another kind is raised again after its 500, for the server to log.
    raised_again = not isinstance(raised, DATABASE_ERRORS)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=not raised_again)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.get("/db")
    assert answer.status_code == status
    assert answer.json()["error"] == code
    assert ("retry-after" in answer.headers) == (status == 503)


def test_a_database_out_of_reach_keeps_the_client_s_connection() -> None:
    """Served by uvicorn, kept alive: the 503 of a database out of reach is the whole answer,
    and the merchant's next request goes on the same connection (uvicorn closed it after an
    error raised again, and a request sent meanwhile got no answer at all)."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/db")
    async def fail() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    @app.get("/port")
    async def port(request: Request) -> int:
        assert request.client is not None
        return request.client.port

    with ThreadedServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        first = client.get("/port").json()
        refused = client.get("/db")
        assert refused.status_code == 503 and refused.json()["error"] == "database_unavailable"
        assert client.get("/port").json() == first  # the same connection
