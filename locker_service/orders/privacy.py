"""A purchaser's name and contact are kept only while her order needs them (ADR 0067).

`purchaser_data_retention_days` after an order ended (picked up, cancelled, expired, failed:
its last change), its `purchaser_name` and `purchaser_contact` are blanked, and so are the
channel (her contact), body (her name, her code) and last error (which may quote the channel)
of every message queued for it. What the order was, where and when stays: the merchant's
reference, the states and their times, the door openings and the food's record. An order still
in progress is never touched, however old.

Runs hourly in every replica; the rounds only share the work (an erased order matches no more).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from locker_service.alerts.catalogue import UNDELIVERABLE_ALERT
from locker_service.background import BackgroundLoop
from locker_service.models import Alert, NotificationOutbox, Order, utcnow
from locker_service.orders.lifecycle import OrderState

log = logging.getLogger(__name__)

ERASED = ""
ERASED_ALERT_MESSAGE = "the purchaser was not reached (the details went with her data)"
ENDED = (OrderState.PICKED_UP, OrderState.CANCELLED, OrderState.EXPIRED, OrderState.FAILED)
CHUNK_ORDERS = 1_000
ERASE_EVERY_S = 3600.0


async def erase_ended_before(engine: AsyncEngine, cutoff: datetime) -> int:
    """Blank the purchaser data of orders that ended before `cutoff`; returns how many."""
    total = 0
    while True:
        async with engine.begin() as connection:
            ids = (
                await connection.scalars(
                    select(Order.id)
                    .where(
                        Order.state.in_([s.value for s in ENDED]),
                        Order.updated_at < cutoff,
                        or_(Order.purchaser_name != ERASED, Order.purchaser_contact != ERASED),
                    )
                    .limit(CHUNK_ORDERS)
                )
            ).all()
            if ids:
                await _erase(connection, ids)
        total += len(ids)
        if len(ids) < CHUNK_ORDERS:
            return total
        await asyncio.sleep(0)


async def _erase(connection: AsyncConnection, ids: Sequence[uuid.UUID]) -> None:
    """Blank the purchaser data of these orders, their messages and the alerts quoting them."""
    await connection.execute(
        update(Order)
        .where(Order.id.in_(ids))
        .values(purchaser_name=ERASED, purchaser_contact=ERASED)
    )
    await connection.execute(
        update(NotificationOutbox)
        .where(NotificationOutbox.order_id.in_(ids))
        .values(channel=ERASED, body=ERASED, last_error=None)
    )
    # "The purchaser was not reached" quotes the delivery error, which may quote her contact:
    # the alert keeps what happened, without the error.
    messages = select(NotificationOutbox.id).where(NotificationOutbox.order_id.in_(ids))
    await connection.execute(
        update(Alert)
        .where(
            Alert.kind == UNDELIVERABLE_ALERT,
            Alert.notification_id.in_(messages.scalar_subquery()),
        )
        .values(message=ERASED_ALERT_MESSAGE)
    )


@dataclass(frozen=True)
class Erasure:
    erased: list[uuid.UUID]  # ended orders: erased now
    in_progress: list[uuid.UUID]  # she may still be told of them: erased after they end


async def erase_purchaser(
    engine: AsyncEngine, *, contact: str | None = None, order_id: uuid.UUID | None = None
) -> Erasure:
    """A person's request to be forgotten: her orders, found by her exact contact or by one
    order's id. Those that ended are erased at once; one still in progress keeps the contact
    it needs to tell her of her food, and the retention erases it after it ends."""
    if (contact is None) == (order_id is None):
        raise ValueError("give her contact or one order's id")
    found = Order.purchaser_contact == contact if contact is not None else Order.id == order_id
    async with engine.begin() as connection:
        rows = (
            await connection.execute(
                select(Order.id, Order.state).where(
                    found, or_(Order.purchaser_name != ERASED, Order.purchaser_contact != ERASED)
                )
            )
        ).all()
        ended = {s.value for s in ENDED}
        erased = [row.id for row in rows if row.state in ended]
        for start in range(0, len(erased), CHUNK_ORDERS):
            await _erase(connection, erased[start : start + CHUNK_ORDERS])
    return Erasure(erased, [row.id for row in rows if row.state not in ended])


class PrivacyLoop:
    """Erases, every hour, the purchaser data its retention no longer covers."""

    def __init__(self, engine: AsyncEngine, retention_days: float) -> None:
        self._engine = engine
        self._retention = timedelta(days=retention_days)
        self._loop = BackgroundLoop(
            "purchaser-data-retention",
            self._round,
            period_s=ERASE_EVERY_S,
            log=log,
            failure="erasing purchaser data failed",
        )

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def run_once(self, now: datetime) -> int:
        erased = await erase_ended_before(self._engine, now - self._retention)
        if erased:
            log.info("erased the purchaser data of %d ended orders", erased)
        return erased

    async def _round(self) -> bool:
        await self.run_once(utcnow())
        return False  # the rest ended too recently: look again next period
