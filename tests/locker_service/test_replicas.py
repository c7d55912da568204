"""Two service replicas on one database and one broker: events are shared ($share), timers are
claimed by whichever replica sees them due, and every step of the story still happens once."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from locker_service.context import ServiceContext
from locker_service.main import create_app
from locker_service.models import Compartment, NotificationOutbox, Order, OrderEvent
from tests.locker_service.conftest import make_settings
from tests.locker_service.world import seed
from tests.support.mosquitto import MosquittoProcess
from tests.support.scripted_kiosk import ScriptedKiosk

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow, pytest.mark.timeout(120)]


async def until(predicate: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_two_replicas_run_the_story_once(
    database_url: str, private_mosquitto: MosquittoProcess
) -> None:
    kiosk_code = f"rep-{uuid.uuid4().hex[:8]}"
    group = f"g{uuid.uuid4().hex[:6]}"

    def app(name: str) -> FastAPI:
        return create_app(
            make_settings(
                database_url,
                kiosk_link_enabled=True,
                timers_enabled=True,
                mqtt_url=private_mosquitto.url,
                mqtt_share_group=group,
                replica_id=f"{name}-{uuid.uuid4().hex[:6]}",
                disinfection_s=2.0,
                cleaning_s=1.0,
                timer_poll_s=0.1,
            )
        )

    first, second = app("a"), app("b")
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(first.router.lifespan_context(first))
        await stack.enter_async_context(second.router.lifespan_context(second))
        ctx_a: ServiceContext = first.state.ctx
        ctx_b: ServiceContext = second.state.ctx
        world = await seed(ctx_a.sessionmaker, ctx_a.settings, kiosk_code=kiosk_code)
        kiosk = ScriptedKiosk(
            private_mosquitto.host, private_mosquitto.port, kiosk_code, compartments=4
        ).start()
        stack.callback(kiosk.stop)
        for ctx in (ctx_a, ctx_b):
            await until(lambda c=ctx: c.components["kiosk_link"].ready, 10, "both links")
        client_a = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://a")
        )
        client_b = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://b")
        )

        order = (
            await client_a.post(
                "/api/v1/orders", json=world.order_body("two"), headers=world.merchant()
            )
        ).json()
        dropped = await client_b.post(
            "/api/v1/kiosk/dropoff",
            json={"courier_code": world.courier_code, "pin": world.courier_pin, "order_ref": "two"},
            headers=world.kiosk(),
        )
        assert dropped.status_code == 200, dropped.text
        n = dropped.json()["compartment"]
        kiosk.open_door(n)
        kiosk.place_item(n)
        kiosk.close_door(n)

        async def state() -> str:
            async with ctx_a.sessionmaker() as session:
                found = await session.get(Order, uuid.UUID(order["id"]))
                return found.state if found else "missing"

        await until(lambda: state_is(state, "ready"), 30, "ready")
        code = (
            await client_a.get(f"/api/v1/p/{order['purchaser_url'].rsplit('/p/', 1)[1]}")
        ).json()["fallback_code"]
        picked = await client_a.post(
            "/api/v1/kiosk/pickup", json={"code": code}, headers=world.kiosk()
        )
        assert picked.status_code == 200, picked.text
        kiosk.open_door(n)
        kiosk.remove_item(n)
        kiosk.close_door(n)
        await until(lambda: state_is(state, "picked_up"), 20, "picked up")

        async def free_again() -> bool:
            async with ctx_b.sessionmaker() as session:
                found = await session.scalar(
                    select(Compartment.state).where(
                        Compartment.kiosk_id == world.kiosk_id, Compartment.number == n
                    )
                )
                return found == "available"

        await until(free_again, 20, "the compartment cleaned and free")

        async with ctx_b.sessionmaker() as session:
            trail = Counter(
                (
                    await session.scalars(
                        select(OrderEvent.action).where(
                            OrderEvent.order_id == uuid.UUID(order["id"])
                        )
                    )
                ).all()
            )
            outbox = (await session.scalars(select(NotificationOutbox.kind))).all()
        for step in ("create", "assign", "deposit", "start_cycle", "complete_cycle", "pick_up"):
            assert trail[step] == 1, trail
        assert outbox == ["ready"]
        cycles = [c for c in kiosk.received if c.command.action == "start_disinfection"]
        # one holding cycle (2 s), one cleaning cycle (1 s): neither started twice
        assert [c.command.args["duration_s"] for c in cycles if not c.duplicate] == [2, 1]
        # both replicas took part: each handled some of the kiosk's events
        handled = [
            sum(ctx.components["kiosk_link"].counters.received.values()) for ctx in (ctx_a, ctx_b)
        ]
        assert all(h > 0 for h in handled), handled


async def state_is(state: Callable[[], Any], wanted: str) -> bool:
    return bool(await state() == wanted)
