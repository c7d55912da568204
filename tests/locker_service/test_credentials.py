"""Merchant API keys are cached for a short time: a revoked key stops working within the TTL."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import update

from locker_service.cache import TtlCache
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.models import Merchant
from tests.locker_service.conftest import make_settings
from tests.locker_service.world import World

CACHE_S = 0.5


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, credential_cache_s=CACHE_S)


async def test_a_revoked_key_stops_working_within_the_cache_time(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    async def status() -> int:
        return (
            await app_client.post(
                "/api/v1/orders", json=world.order_body(), headers=world.merchant()
            )
        ).status_code

    assert await status() == 201  # looked up and cached
    async with service.sessionmaker() as session, session.begin():
        await session.execute(
            update(Merchant).where(Merchant.id == world.merchant_id).values(api_key_hash="revoked")
        )
    await asyncio.sleep(CACHE_S + 0.2)
    refused = await app_client.post(
        "/api/v1/orders", json=world.order_body(), headers=world.merchant()
    )
    assert refused.status_code == 401
    assert refused.json()["error"] == "unauthorized"


async def test_the_cache_keeps_hits_only_and_for_its_ttl() -> None:
    now = [100.0]
    cache: TtlCache[str] = TtlCache(5.0, clock=lambda: now[0])
    calls: list[str] = []
    answer: str | None = None

    async def load() -> str | None:
        calls.append("db")
        return answer

    assert await cache.get("k", load) is None  # a miss is not remembered...
    answer = "merchant"
    assert await cache.get("k", load) == "merchant"  # ...so a new key works at once
    answer = None  # revoked in the database
    now[0] += 4.9
    assert await cache.get("k", load) == "merchant"  # still within the TTL
    now[0] += 0.2
    assert await cache.get("k", load) is None
    assert calls == ["db", "db", "db"]
    assert await cache.get("k", load) is None and len(calls) == 4


async def test_no_cache_when_the_ttl_is_zero() -> None:
    cache: TtlCache[str] = TtlCache(0.0)
    calls: list[int] = []

    async def load() -> str | None:
        calls.append(1)
        return "merchant"

    for _ in range(3):
        assert await cache.get("k", load) == "merchant"
    assert len(calls) == 3
