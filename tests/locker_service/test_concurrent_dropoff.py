"""50 couriers drop off at once at a kiosk with 10 free compartments: exactly 10 succeed, and no
compartment is handed to two orders (the must-show runs on PostgreSQL; SQLite is checked too)."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from locker_service.context import ServiceContext
from locker_service.models import Compartment, Order
from tests.locker_service.world import FakeKiosk, create_order, seed

pytestmark = pytest.mark.slow  # fifty drop-offs at once

COMPARTMENTS = 10
COURIERS = 50


async def test_fifty_drop_offs_for_ten_compartments(
    service: ServiceContext, service_app: FastAPI, fake_kiosk: FakeKiosk
) -> None:
    world = await seed(service.sessionmaker, service.settings, layout=f"M:{COMPARTMENTS}")
    transport = httpx.ASGITransport(app=service_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as client:
        refs = [f"rush-{i}" for i in range(COURIERS)]
        for ref in refs:
            await create_order(client, world, ref=ref)

        async def drop(ref: str) -> httpx.Response:
            return await client.post(
                "/api/v1/kiosk/dropoff",
                json={
                    "courier_code": world.courier_code,
                    "pin": world.courier_pin,
                    "order_ref": ref,
                },
                headers=world.kiosk(),
            )

        answers = await asyncio.gather(*(drop(ref) for ref in refs))

    statuses = Counter(a.status_code for a in answers)
    assert statuses == {200: COMPARTMENTS, 409: COURIERS - COMPARTMENTS}, statuses
    assert {a.json()["error"] for a in answers if a.status_code == 409} == {"no_free_compartment"}
    numbers = [a.json()["compartment"] for a in answers if a.status_code == 200]
    assert sorted(numbers) == list(range(1, COMPARTMENTS + 1))  # each one once
    assert sorted(fake_kiosk.unlocks()) == list(range(1, COMPARTMENTS + 1))

    async with service.sessionmaker() as session:
        assigned = (await session.scalars(select(Order).where(Order.state == "assigned"))).all()
        waiting = (await session.scalars(select(Order).where(Order.state == "created"))).all()
        compartments = (
            await session.scalars(select(Compartment).where(Compartment.kiosk_id == world.kiosk_id))
        ).all()
    assert len(assigned) == COMPARTMENTS and len(waiting) == COURIERS - COMPARTMENTS
    assert len({o.compartment_id for o in assigned}) == COMPARTMENTS
    assert all(o.compartment_id is None for o in waiting)
    assert {c.state for c in compartments} == {"reserved"}
