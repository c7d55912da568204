"""A replica frozen inside a transaction (SIGSTOP, a paused VM) holds its row locks only until
PostgreSQL's idle-in-transaction timeout ends its session: the lease row it read FOR SHARE
(its fence, ADR 0044) can then be taken over (`Settings.db_idle_in_transaction_s`)."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from locker_service.db import create_engine

pytestmark = pytest.mark.timeout(120)

IDLE_S = 1.0


async def test_a_frozen_transaction_loses_its_locks_after_the_idle_timeout(
    pg_database_url: str,
) -> None:
    frozen = create_engine(pg_database_url, idle_in_transaction_s=IDLE_S)
    other = create_engine(pg_database_url)
    try:
        async with other.begin() as conn:
            await conn.execute(text("CREATE TABLE probe_lease (kiosk text PRIMARY KEY, epoch int)"))
            await conn.execute(text("INSERT INTO probe_lease VALUES ('k1', 1)"))
        sleeper = await frozen.connect()
        await sleeper.begin()
        # Read before the statement: the server's idle timer starts when it ends there, and a
        # read after its answer came back through a busy machine would be later than that.
        held_at = time.monotonic()
        await sleeper.execute(text("SELECT epoch FROM probe_lease WHERE kiosk = 'k1' FOR SHARE"))
        # And now it sleeps, inside its transaction.

        async with other.begin() as conn:  # the takeover: waits for the lock, then gets it
            await asyncio.wait_for(
                conn.execute(text("UPDATE probe_lease SET epoch = epoch + 1 WHERE kiosk = 'k1'")),
                60,  # without the timeout the lock is held for good: this fails
            )
        assert time.monotonic() - held_at >= IDLE_S * 0.9  # not before the sleeper's timeout
        with pytest.raises(DBAPIError):  # the sleeper wakes up to a closed session
            await sleeper.execute(text("SELECT 1"))
        await sleeper.invalidate()
        async with other.connect() as conn:
            assert (await conn.scalar(text("SELECT epoch FROM probe_lease"))) == 2
    finally:
        await frozen.dispose()
        await other.dispose()
