"""Waiting on lease keepers' own clocks: their rounds. A starved host runs fewer rounds, never
more per handover, so a bound counted in rounds holds on a busy machine where a wall-clock one
does not. A handover between two keepers needs both to act: it is bounded by the rounds each of
them has made (the fewer counts), so one keeper starved while the other runs fails nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from locker_service.kiosk_link.lease_keeper import LeaseKeeper

STALL_S = 60.0  # keepers that make no round at all for this long are stuck, not slow


async def within_rounds(
    keeper: LeaseKeeper | tuple[LeaseKeeper, ...],
    bound: int,
    predicate: Callable[[], bool],
    what: str,
) -> int:
    """Rounds until `predicate` held (counted for the keeper, or for the slowest of several);
    fails once every keeper made more than `bound` rounds without it, or if they stop."""
    keepers = keeper if isinstance(keeper, tuple) else (keeper,)
    starts = [k.rounds for k in keepers]
    last, last_change = sum(starts), time.monotonic()
    names = ", ".join(k.replica_id for k in keepers)
    while True:
        made = min(k.rounds - s for k, s in zip(keepers, starts, strict=True))  # before the look
        if predicate():
            return made
        assert made <= bound, f"{what}: not within {bound} rounds of {names}"
        total = sum(k.rounds for k in keepers)
        if total != last:
            last, last_change = total, time.monotonic()
        assert time.monotonic() - last_change < STALL_S, (
            f"{what}: {names} made no round in {STALL_S:g} s"
        )
        await asyncio.sleep(0.05)
