"""New orders are group-committed by the order writer: one batch, one transaction, and still
exactly one order per reference, a bad order failing alone, and a dropped database connection
costing no order."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from locker_service.context import ServiceContext
from locker_service.errors import ServiceError, ServiceUnavailable
from locker_service.models import Merchant, Order, OrderEvent, Timer, utcnow
from locker_service.orders import service as orders
from locker_service.orders.schemas import OrderCreate, OrderCreated
from locker_service.orders.writer import (
    EVENT_COLUMNS,
    TIMER_COLUMNS,
    OrderWriter,
    follow_up_rows,
)
from tests.locker_service.world import World, create_order

# Both backends in the everyday selection too (tests/conftest.py, ADR 0127): the subject is
# SQL written per backend, the order writer's batch statement and the orders' insert-if-new.
POSTGRES_EVERY_DAY = True


@pytest.fixture
async def writer(service: ServiceContext) -> AsyncIterator[OrderWriter]:
    writer = OrderWriter(service.engine, service.sessionmaker)
    try:
        yield writer
    finally:
        await writer.close()


def new_row(ctx: ServiceContext, world: World, ref: str, **overrides: Any) -> dict[str, Any]:
    body = OrderCreate.model_validate(world.order_body(ref))
    merchant = Merchant(id=world.merchant_id, name="Kitchen")
    row, _token = orders.new_order_row(
        ctx.settings, merchant, body, world.site_id, orders.request_hash(body)
    )
    return {**row, **overrides}


async def counts(ctx: ServiceContext) -> tuple[int, int, int]:
    async with ctx.sessionmaker() as session:
        return (
            await session.scalar(select(func.count()).select_from(Order)) or 0,
            await session.scalar(select(func.count()).select_from(OrderEvent)) or 0,
            await session.scalar(select(func.count()).select_from(Timer)) or 0,
        )


async def test_a_bad_order_in_a_batch_fails_alone(
    service: ServiceContext, world: World, writer: OrderWriter
) -> None:
    rows = [
        new_row(service, world, "W-1"),
        new_row(service, world, "W-2", site_id=world.site_id + 1000),  # no such site
        new_row(service, world, "W-3"),
    ]
    # Queued together, the three make one batch; the foreign key fails it as a whole.
    results = await asyncio.gather(
        *(writer.write(row, world.site_code) for row in rows), return_exceptions=True
    )
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], Exception)
    assert await counts(service) == (2, 2, 2)
    async with service.sessionmaker() as session:
        refs = set((await session.scalars(select(Order.external_ref))).all())
    assert refs == {"W-1", "W-3"}


async def test_one_reference_twice_in_a_batch_is_one_order(
    service: ServiceContext, world: World, writer: OrderWriter
) -> None:
    first, second = new_row(service, world, "W-dup"), new_row(service, world, "W-dup")
    results = await asyncio.gather(
        writer.write(first, world.site_code), writer.write(second, world.site_code)
    )
    assert sorted(results) == [False, True]
    assert await counts(service) == (1, 1, 1)
    async with service.sessionmaker() as session:
        stored = await session.scalar(select(Order))
        event = await session.scalar(select(OrderEvent))
        timer = await session.scalar(select(Timer))
    assert stored is not None and event is not None and timer is not None
    winner = first if results[0] else second
    assert stored.id == winner["id"]
    assert stored.created_at == winner["created_at"]
    assert (event.order_id, event.action, event.detail) == (
        winner["id"],
        "create",
        {"site": world.site_code},
    )
    assert (timer.order_id, timer.kind, timer.due_at) == (
        winner["id"],
        "order_expiry",
        winner["expires_at"],
    )
    # Both write paths (one PostgreSQL statement, SQLite through the repository) write what
    # `follow_up_rows` built: the same actor, the same stamps, on either database.
    assert (event.actor_type, event.actor_id, event.at) == (
        "merchant",
        str(winner["merchant_id"]),
        winner["created_at"],
    )
    assert (timer.state, timer.attempts, timer.created_at) == ("pending", 0, winner["created_at"])


def test_the_batch_statement_carries_every_column_the_follow_up_rows_have() -> None:
    row = {"id": uuid.uuid4(), "merchant_id": 7, "created_at": utcnow(), "expires_at": utcnow()}
    event, timer = follow_up_rows(row, "tower-a")
    assert set(event) == {"order_id", *EVENT_COLUMNS}
    assert set(timer) == {"order_id", *TIMER_COLUMNS}
    assert event["order_id"] == timer["order_id"] == row["id"]


async def test_the_new_order_answer_is_the_order_read_back(
    app_client: httpx.AsyncClient, world: World
) -> None:
    body = world.order_body("W-answer")
    first = await app_client.post("/api/v1/orders", json=body, headers=world.merchant())
    again = await app_client.post("/api/v1/orders", json=body, headers=world.merchant())
    assert (first.status_code, again.status_code) == (201, 200)
    # The first answer is built from the values written, the retry's from the stored row
    # through the response model: the same document.
    assert first.json() == again.json()
    assert OrderCreated.model_validate(first.json()).model_dump(mode="json") == first.json()


async def test_a_new_order_reaches_the_live_hub(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    with service.hub.subscription() as subscription:
        order = await create_order(app_client, world, ref="W-live")
        message = await subscription.next(timeout_s=2.0)
    assert message is not None
    assert (message.kind, message.site_id) == ("order", world.site_id)
    assert message.data["id"] == order["id"]
    assert message.data["state"] == "created"


async def test_the_order_routes_document_the_merchant_key(app_client: httpx.AsyncClient) -> None:
    spec = (await app_client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["merchantKey"]["name"] == "X-API-Key"
    for path, method in (
        ("/api/v1/orders", "post"),
        ("/api/v1/orders", "get"),
        ("/api/v1/orders/{order_id}", "get"),
        ("/api/v1/orders/{order_id}/cancel", "post"),
    ):
        assert spec["paths"][path][method]["security"] == [{"merchantKey": []}], (path, method)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_an_order_survives_the_writers_connection_being_dropped(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """PostgreSQL drops every connection (a restart, a failover) while the writer holds one:
    the next order is written on a fresh connection, not answered 500."""
    client = app_client
    await create_order(client, world, ref="W-before")
    url = make_url(service.settings.database_url)
    admin = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    try:
        dropped = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    assert dropped >= 1  # the writer's connection among them
    after = await create_order(client, world, ref="W-after")
    assert after["external_ref"] == "W-after"
    answer = await client.post(
        "/api/v1/orders", json=world.order_body("W-after"), headers=world.merchant()
    )
    assert answer.status_code == 200
    assert answer.json()["id"] == after["id"]


class UnreachableDatabase:
    """An engine whose every connection attempt is refused (the database is down)."""

    def __init__(self, dialect: Any) -> None:
        self.dialect = dialect
        self.attempts = 0

    def connect(self) -> Any:
        self.attempts += 1
        raise ConnectionRefusedError("connection refused")


async def test_with_the_database_unreachable_orders_fail_at_once_and_nothing_spins(
    service: ServiceContext, world: World
) -> None:
    """The waiting requests are answered 503 at once instead of hanging, and no lane keeps
    reconnecting in a loop."""
    engine = UnreachableDatabase(service.engine.dialect)
    writer = OrderWriter(engine, service.sessionmaker)  # type: ignore[arg-type]
    rows = [new_row(service, world, f"down-{i}") for i in range(5)]
    results = await asyncio.wait_for(
        asyncio.gather(*(writer.write(r, world.site_code) for r in rows), return_exceptions=True),
        timeout=10,
    )
    assert all(isinstance(r, ServiceUnavailable) for r in results), results
    assert all(r.code == "database_unavailable" for r in results if isinstance(r, ServiceError))
    await asyncio.sleep(0.2)
    assert engine.attempts <= 2  # one per lane started, no retry loop
    assert not writer._tasks
    await writer.close()


def test_the_request_hash_is_unchanged() -> None:
    """Stored orders keep their fingerprints: a retry of an order created before any change
    here must still match it."""
    body = OrderCreate(
        external_ref="R-1", site="S1", purchaser_name="Mia", purchaser_contact="mailto://m@x.y"
    )
    canonical = (
        '{"external_ref":"R-1","purchaser_contact":"mailto://m@x.y","purchaser_name":"Mia",'
        '"site":"S1","size":"M","temperature_class":"hot"}'
    )
    assert orders.request_hash(body) == hashlib.sha256(canonical.encode()).hexdigest()
