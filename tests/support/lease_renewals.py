"""When each replica last began renewing its kiosk leases. A lease runs out a TTL after its
last renewal, so a takeover is timed from there: a replica's death read by the test after it
stopped is later than that on a busy machine, and the TTL would seem cut short."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.kiosk_link import lease_keeper


def record_renewals(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """Replica id -> `time.monotonic()` as its last renewal began (its rows' new expiry is
    computed by the database after that)."""
    real = lease_keeper.renew
    began: dict[str, float] = {}

    async def renew(
        session: AsyncSession, replica_id: str, held: Iterable[str], ttl_s: float
    ) -> dict[str, int]:
        began[replica_id] = time.monotonic()
        return await real(session, replica_id, held, ttl_s)

    monkeypatch.setattr(lease_keeper, "renew", renew)
    return began
