"""A PostgreSQL database of a test's own on the shared server: created with a unique name,
dropped afterwards (other test runs use the same server at the same time)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from sqlalchemy.engine import make_url

from tests.conftest import PG_ADMIN_URL, unavailable


async def _admin(statement: str) -> None:
    url = make_url(PG_ADMIN_URL)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
        timeout=5,
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def pg_database() -> Iterator[str]:
    """Yields a `postgresql+asyncpg://` URL of a fresh empty database."""
    name = f"locker_stack_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN_URL} is not usable: {exc}")
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
