"""What a scanner read is never stored: a scan's row keeps a keyed hash and the outcome.

On both backends: scans of a pickup token, a wrong 8-digit code and a line that is no code; and
migration 0004 rewriting the rows stored with their text before it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from firmware_bridge import contract
from locker_service.context import ServiceContext
from locker_service.db import create_engine
from locker_service.kiosks.handler import StoryHandler
from locker_service.kiosks.scans import scan_hash
from locker_service.models import KioskEvent, utcnow
from locker_service.runtime import Runtime
from migrations import upgrade_async
from tests.locker_service.world import World, make_ready, token_of
from tests.support.databases import create_pg_database, drop_pg_database


async def _stored(service: ServiceContext, event_id: str) -> dict[str, object]:
    async with service.sessionmaker() as session:
        row = await session.scalar(select(KioskEvent).where(KioskEvent.event_id == event_id))
    assert row is not None
    return dict(row.data)


async def test_scans_are_stored_as_a_keyed_hash_and_an_outcome(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, runtime: Runtime
) -> None:
    handler: StoryHandler = runtime.story
    order, _n = await make_ready(app_client, world, service)
    token = token_of(order)
    secret = service.settings.secret_key
    for read, outcome in [
        (token, "claimed"),
        ("12345678", "invalid_code"),
        ("hello", "invalid_code"),
    ]:
        scan = contract.Event(event_id=uuid.uuid4().hex, type="scan", data={"text": read})
        await handler.on_event(world.kiosk_code, scan)
        stored = await _stored(service, scan.event_id)
        assert stored == {"text_hmac": scan_hash(secret, read), "outcome": outcome}
        assert read not in repr(stored)
    # A replayed scan (stamped a minute ago) opens nothing and is stored as ignored.
    stale = contract.Event(
        event_id=uuid.uuid4().hex,
        type="scan",
        data={"text": "87654321"},
        ts=utcnow() - timedelta(seconds=60),
    )
    await handler.on_event(world.kiosk_code, stale)
    assert await _stored(service, stale.event_id) == {
        "text_hmac": scan_hash(secret, "87654321"),
        "outcome": "ignored",
    }
    async with service.sessionmaker() as session:
        everything = (await session.execute(text("SELECT data FROM kiosk_events"))).all()
    for read in (token, "12345678", "87654321", "hello"):
        assert read not in repr(everything)


def test_the_key_makes_the_hash() -> None:
    """Without the secret a stored hash cannot be matched against the 10**8 possible codes."""
    assert scan_hash("secret-a", "12345678") != scan_hash("secret-b", "12345678")
    assert scan_hash("secret-a", "12345678") == scan_hash("secret-a", "12345678")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migration_0004_replaces_stored_scan_texts(backend: str, tmp_path: Path) -> None:
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        if backend == "sqlite"
        else await asyncio.to_thread(create_pg_database)
    )
    try:
        await upgrade_async(url, "0002")
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                for i, data in enumerate(['{"text": "12345678"}', '{"occupied": true}']):
                    await connection.execute(
                        text(
                            "INSERT INTO kiosk_events (event_id, type, ts, data, received_at) "
                            "VALUES (:e, :t, CURRENT_TIMESTAMP, :d, CURRENT_TIMESTAMP)"
                        ),
                        {"e": f"old-{i}", "t": "scan" if i == 0 else "snapshot", "d": data},
                    )
            await upgrade_async(url, secret_key="the-service-secret")
            async with engine.connect() as connection:
                result = await connection.execute(text("SELECT event_id, data FROM kiosk_events"))
                rows = {str(event_id): data for event_id, data in result.all()}
        finally:
            await engine.dispose()
    finally:
        if backend == "postgres":
            await asyncio.to_thread(drop_pg_database, url)
    decoded = {k: v if isinstance(v, dict) else json.loads(v) for k, v in rows.items()}
    assert decoded["old-0"] == {
        "text_hmac": scan_hash("the-service-secret", "12345678"),
        "outcome": "unknown",
    }
    assert decoded["old-1"] == {"occupied": True}  # not a scan: untouched
