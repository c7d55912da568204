"""Queries on notification_outbox: claiming due messages, recording how sending went.

Claiming marks rows `sending` with a lease (`locked_until`) in a short transaction of its own;
the message is sent outside any transaction; the outcome is written with compare-and-set on
(status, attempts), so a worker whose lease ran out cannot overwrite the outcome of the worker
that took the row over. On PostgreSQL the claim uses FOR UPDATE SKIP LOCKED, so replicas never
claim the same row; on SQLite every write transaction is exclusive (BEGIN IMMEDIATE), which
gives the same guarantee for the one process that can use the file.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.models import Compartment, Kiosk, NotificationOutbox, Order, Site


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    attempts: int  # after this claim; the outcome is written only if it still matches


async def claim_due(
    session: AsyncSession, now: datetime, lease_s: float, limit: int
) -> Sequence[Claimed]:
    """Lease due messages to this worker. A row still `sending` whose lease ran out is one
    whose worker died mid-try: that try may have been handed over, so it may have reached her."""
    query = (
        select(NotificationOutbox.id, NotificationOutbox.attempts, NotificationOutbox.status)
        .where(
            NotificationOutbox.status.in_(("pending", "sending")),
            NotificationOutbox.next_attempt_at <= now,
            or_(NotificationOutbox.locked_until.is_(None), NotificationOutbox.locked_until <= now),
        )
        .order_by(NotificationOutbox.next_attempt_at, NotificationOutbox.id)
        .limit(limit)
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = (await session.execute(query)).all()
    claimed: list[Claimed] = []
    for row in rows:
        await session.execute(
            update(NotificationOutbox)
            .where(NotificationOutbox.id == row.id)
            .values(
                status="sending",
                attempts=row.attempts + 1,
                locked_until=now + timedelta(seconds=lease_s),
                **({"may_have_reached": True} if row.status == "sending" else {}),
            )
        )
        claimed.append(Claimed(row.id, row.attempts + 1))
    return claimed


async def finish(
    session: AsyncSession,
    claimed: Claimed,
    *,
    status: str,
    now: datetime,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
    handed_over: bool = False,
) -> bool:
    """Record the outcome; False if another worker took the row over meanwhile.
    `handed_over`: the try reached a provider, so the message may have reached her."""
    values: dict[str, object] = {"status": status, "locked_until": None, "last_error": error}
    if handed_over or status == "sent":
        values["may_have_reached"] = True
    if status == "sent":
        values["sent_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    result = await session.execute(
        update(NotificationOutbox)
        .where(
            NotificationOutbox.id == claimed.id,
            NotificationOutbox.status == "sending",
            NotificationOutbox.attempts == claimed.attempts,
        )
        .values(**values)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


@dataclass(frozen=True, slots=True)
class OrderPlace:
    order: Order
    site: Site
    kiosk: Kiosk | None
    compartment: Compartment | None


async def order_place(session: AsyncSession, order_id: uuid.UUID) -> OrderPlace | None:
    order = await session.get(Order, order_id)
    if order is None:
        return None
    site = await session.get(Site, order.site_id)
    assert site is not None  # foreign key
    compartment = (
        await session.get(Compartment, order.compartment_id) if order.compartment_id else None
    )
    kiosk = await session.get(Kiosk, compartment.kiosk_id) if compartment is not None else None
    return OrderPlace(order, site, kiosk, compartment)
