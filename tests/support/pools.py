"""A service's main database pool taken whole, as a takeover's handlers take it: what must not
wait for it (a person at the kiosk, ADR 0094 and 0096; the lease keeper, ADR 0097) is shown
going on meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncConnection

from locker_service.context import ServiceContext


@contextlib.asynccontextmanager
async def main_pool_taken(service: ServiceContext) -> AsyncIterator[None]:
    """Every connection of the main pool held, as the story's handlers hold them in a takeover:
    a taker waits in the pool's queue all along, so a connection the running service gives
    back (its loops come and go) is taken again before anything asking after it gets one."""
    engine, pool = service.engine, service.engine.pool
    size = pool.size() + pool._max_overflow  # type: ignore[attr-defined]
    held: list[AsyncConnection] = []
    full = asyncio.Event()

    async def take_every_one() -> None:
        while True:
            held.append(await engine.connect())
            if pool.checkedout() >= size:  # type: ignore[attr-defined]
                full.set()

    taker = asyncio.get_running_loop().create_task(take_every_one())
    try:
        await full.wait()
        yield
    finally:
        taker.cancel()
        with contextlib.suppress(asyncio.CancelledError, sqlalchemy.exc.TimeoutError):
            await taker  # on a slow test the taker's own wait for the full pool times out
        for conn in held:
            await conn.close()
