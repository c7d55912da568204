"""Waiting on a lease keeper's own clock: its rounds. A starved host runs fewer rounds, never
more per handover, so a bound counted in rounds holds on a busy machine where a wall-clock one
does not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from locker_service.kiosk_link.lease_keeper import LeaseKeeper

STALL_S = 60.0  # a keeper that makes no round at all for this long is stuck, not slow


async def within_rounds(
    keeper: LeaseKeeper, bound: int, predicate: Callable[[], bool], what: str
) -> int:
    """The keeper's rounds until `predicate` held; fails once more than `bound` of them ran
    without it, or if the keeper stops making rounds."""
    start = last = keeper.rounds
    last_change = time.monotonic()
    while True:
        rounds = keeper.rounds  # read before the predicate: a round sets it, then counts
        if predicate():
            return rounds - start
        assert rounds - start <= bound, f"{what}: not within {bound} rounds of {keeper.replica_id}"
        if rounds != last:
            last, last_change = rounds, time.monotonic()
        assert time.monotonic() - last_change < STALL_S, (
            f"{what}: {keeper.replica_id} made no round in {STALL_S:g} s"
        )
        await asyncio.sleep(0.05)
