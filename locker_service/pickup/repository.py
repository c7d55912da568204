"""Queries of a pickup: recent failures for throttling, the kill switch, the order a code names.

A pickup is on the purchaser's critical path (she stands at the kiosk), so each question is one
round trip: the failures of every throttled dimension come back in one `UNION ALL`, and the
order comes with its compartment. The statements are built once, with bound parameters: the
building, not the database, was most of a scan's time (as with order creation, ADR 0035).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    bindparam,
    insert,
    literal,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.models import Compartment, Order, PickupAttempt, Site, utcnow

MAX_FAILURES_READ = 200  # per dimension; far above any limit, so a lockout is never missed


@dataclass
class Failures:
    """Times of recent failed attempts, per throttled dimension."""

    by_source: list[datetime] = field(default_factory=list)
    by_kiosk: list[datetime] = field(default_factory=list)
    by_order: list[datetime] = field(default_factory=list)


def _failed_since(dimension: str, condition: ColumnElement[bool]) -> Select[tuple[datetime, str]]:
    query = (
        select(PickupAttempt.at, literal(dimension).label("dimension"))
        .where(PickupAttempt.ok.is_(False), PickupAttempt.at >= bindparam("since"), condition)
        .order_by(PickupAttempt.at.desc())
        .limit(MAX_FAILURES_READ)
        .subquery()
    )
    return select(query.c.at, query.c.dimension)


_AT_KIOSK = PickupAttempt.kiosk_id == bindparam("kiosk_id")
_BY_SOURCE_AND_KIOSK = (
    _failed_since("source", (PickupAttempt.source == bindparam("source")) & _AT_KIOSK),
    _failed_since("kiosk", _AT_KIOSK),
)
_FAILURES = {
    False: union_all(*_BY_SOURCE_AND_KIOSK),
    True: union_all(
        *_BY_SOURCE_AND_KIOSK,
        _failed_since("order", PickupAttempt.order_id == bindparam("order_id")),
    ),
}


async def failures(
    session: AsyncSession,
    since: datetime,
    *,
    kiosk_id: int,
    source: str,
    order_id: uuid.UUID | None = None,
) -> Failures:
    """Failed attempts since `since` by this source at this kiosk, at this kiosk, and for this
    order (when given), in one round trip."""
    params: dict[str, object] = {"since": since, "kiosk_id": kiosk_id, "source": source}
    if order_id is not None:
        params["order_id"] = order_id
    found = Failures()
    result = await session.execute(_FAILURES[order_id is not None], params)
    for row in result.mappings():
        getattr(found, f"by_{row['dimension']}").append(row["at"])
    return found


_SITE_FROZEN = select(Site.kill_switch_engaged).where(Site.id == bindparam("site_id"))


async def site_frozen(session: AsyncSession, site_id: int) -> bool:
    """True when the site's kill switch is engaged: no opening by code there."""
    return bool(await session.scalar(_SITE_FROZEN, {"site_id": site_id}))


_BY_TOKEN_HASH = (
    select(Order, Compartment)
    .outerjoin(Compartment, Compartment.id == Order.compartment_id)
    .where(Order.pickup_token_hash == bindparam("token_hash"))
)
_BY_CODE_HASH_AT_KIOSK = (
    select(Order, Compartment)
    .join(Compartment, Compartment.id == Order.compartment_id)
    .where(Order.code_hash == bindparam("code_hash"), Compartment.kiosk_id == bindparam("kiosk_id"))
    .order_by(Order.created_at.desc())
)


async def by_token_hash(
    session: AsyncSession, token_hash: str
) -> tuple[Order, Compartment | None] | None:
    """The order a QR token names, with its compartment (None before one is reserved)."""
    row = (await session.execute(_BY_TOKEN_HASH, {"token_hash": token_hash})).first()
    return (row[0], row[1]) if row is not None else None


async def by_code_hash_at_kiosk(
    session: AsyncSession, code_hash: str, kiosk_id: int
) -> Sequence[tuple[Order, Compartment]]:
    """Orders in this kiosk's compartments whose fallback code hashes to `code_hash`, newest
    first, each with its compartment."""
    params = {"code_hash": code_hash, "kiosk_id": kiosk_id}
    rows = (await session.execute(_BY_CODE_HASH_AT_KIOSK, params)).all()
    return [(row[0], row[1]) for row in rows]


_INSERT_ATTEMPT = insert(cast(Table, PickupAttempt.__table__))


async def record_attempt(
    session: AsyncSession, kiosk_id: int, source: str, order_id: uuid.UUID | None, ok: bool
) -> None:
    """One try to open, written at once (it counts toward throttling from its commit on)."""
    await session.execute(
        _INSERT_ATTEMPT,
        {"kiosk_id": kiosk_id, "source": source, "order_id": order_id, "at": utcnow(), "ok": ok},
    )
