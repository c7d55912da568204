"""Whether a task waits for a row lock, as PostgreSQL says: the wait is an event of the
database's own, so a test needs no time budget to tell waiting from done."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def first_of(engine: AsyncEngine, task: asyncio.Task[Any]) -> str:
    """ "done" once `task` has ended, or "waiting" as soon as a session of the engine's
    database waits for a lock: whichever comes first."""
    while not task.done():
        async with engine.connect() as connection:
            waiting = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return "waiting"
        await asyncio.sleep(0.01)
    return "done"
