"""Fencing: a transaction that handles a kiosk's message proves, inside itself, that this
replica still holds the kiosk's lease at the epoch it took it with (ADR 0044).

The kiosk link sets `CURRENT_FENCE` around each handler call (a context variable, so it follows
the handler's awaits and nothing else); the handler calls `check_fence` first in its
transaction. On PostgreSQL the lease row is read `FOR KEY SHARE`. A take and a release lock
that row `FOR UPDATE` before they change it, and change it only if they locked it: that waits
until every such transaction has committed or rolled back, and once the take or the release has
committed the check finds no row. The keeper's renewals and standby marks change the row
without `FOR UPDATE`, and neither they nor the fence checks wait for each other (ADR 0100): a
renewal of hundreds of leases in one statement used to wait for the slowest handler's
transaction, holding the rows it had updated before it, and every fence check of those kiosks
waited behind it. On SQLite every transaction is `BEGIN IMMEDIATE` (ADR 0033),
so the check and the takeover cannot interleave either.

Expiry plays no part here: a lease past its expiry that nobody has taken yet still belongs to
its holder alone, and the epoch alone decides. A replica that slept through a takeover (SIGSTOP,
a long GC pause) wakes up with an old epoch and can change nothing.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class Fence:
    """This replica's lease on one kiosk as it took it."""

    kiosk_id: str
    replica_id: str
    epoch: int
    # Local monotonic time until which the lease is surely ours: measured from before the
    # renewal was sent, so it ends no later than the database's `expires_at`.
    valid_until: float

    def valid_now(self) -> bool:
        return time.monotonic() < self.valid_until


class LeaseLost(Exception):
    """The replica no longer holds the kiosk's lease at this epoch: the message changes nothing."""

    def __init__(self, fence: Fence) -> None:
        super().__init__(
            f"replica {fence.replica_id} no longer holds kiosk {fence.kiosk_id} at epoch "
            f"{fence.epoch}"
        )
        self.fence = fence


CURRENT_FENCE: ContextVar[Fence | None] = ContextVar("kiosk_lease_fence", default=None)

_HELD = """SELECT epoch FROM kiosk_leases
WHERE kiosk_code = :kiosk AND holder = :holder AND epoch = :epoch"""


async def check_fence(session: AsyncSession, kiosk_id: str) -> None:
    """Raise `LeaseLost` unless this replica holds `kiosk_id`'s lease at its fence's epoch.

    Call it first in the transaction that handles the kiosk's message. Without a fence (the
    link runs without leases, or the caller is not the link) there is nothing to check.
    """
    fence = CURRENT_FENCE.get()
    if fence is None:
        return
    if fence.kiosk_id != kiosk_id:
        raise LeaseLost(fence)  # a message handled under another kiosk's lease: never ours
    lock = "" if session.get_bind().dialect.name == "sqlite" else " FOR KEY SHARE"
    held = await session.scalar(
        text(_HELD + lock),
        {"kiosk": fence.kiosk_id, "holder": fence.replica_id, "epoch": fence.epoch},
    )
    if held is None:
        raise LeaseLost(fence)
