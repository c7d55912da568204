"""Queries of a pickup: recent failures for throttling, the kill switch, the order a code names.

A pickup is on the purchaser's critical path (she stands at the kiosk), so each question is one
round trip: the failures of every throttled dimension come back in one `UNION ALL` of counts
(with the newest of each), and the
order comes with its compartment. The statements are built once, with bound parameters: the
building, not the database, was most of a scan's time (as with order creation, ADR 0035).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    Table,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.models import (
    Alert,
    Compartment,
    DoorOpening,
    Order,
    PickupAttempt,
    Site,
    utcnow,
)
from locker_service.pickup import throttle

# How a try's source names its kind. Typed and scanned 8-digit codes can be guessed and are
# throttled per source and per kiosk; QR tokens (256 bits) cannot and are only recorded; courier
# logins are throttled among themselves (dropoff.service).
SCREEN_SOURCE = "screen:"  # + the client's address: a code typed on the kiosk screen
SCANNER_SOURCE = "scanner:"  # + the kiosk code: an 8-digit code held to the scanner
QR_SOURCE = "qr:"  # + the kiosk code: a QR token held to the scanner
COURIER_SOURCE = "courier:"  # + the courier id: a courier login (PIN)
# A wrong code the kiosk's keypad refused while cut off, reported once back (ADR 0077).
KEYPAD_OFFLINE_SOURCE = "keypad_offline:"  # + the kiosk code
_GUESSED_ONLINE = (SCREEN_SOURCE, SCANNER_SOURCE)  # those the keypad does not count (ADR 0116)
_GUESSABLE = (*_GUESSED_ONLINE, KEYPAD_OFFLINE_SOURCE)


@dataclass(frozen=True)
class RecentFailures:
    """Failures of each throttled dimension within its rule's window."""

    source: throttle.Recent = throttle.NONE
    kiosk: throttle.Recent = throttle.NONE
    order: throttle.Recent = throttle.NONE
    courier: throttle.Recent = throttle.NONE


def _failed_since(
    dimension: str, since: str, *where: ColumnElement[bool]
) -> Select[str, int, datetime]:
    return select(
        literal(dimension).label("dimension"),
        func.count().label("n"),
        func.max(PickupAttempt.at).label("newest"),
    ).where(PickupAttempt.ok.is_(False), PickupAttempt.at >= bindparam(since), *where)


_AT_KIOSK = PickupAttempt.kiosk_id == bindparam("kiosk_id")


def _source_is(kinds: tuple[str, ...]) -> ColumnElement[bool]:
    return or_(*(PickupAttempt.source.startswith(kind) for kind in kinds))


_GUESSES_AT_KIOSK = _source_is(_GUESSABLE)
_GUESSES_ONLINE = _source_is(_GUESSED_ONLINE)
_DIMENSIONS: dict[str, Select[str, int, datetime]] = {
    "source": _failed_since(
        "source", "source_since", PickupAttempt.source == bindparam("source"), _AT_KIOSK
    ),
    "kiosk": _failed_since("kiosk", "kiosk_since", _AT_KIOSK, _GUESSES_AT_KIOSK),
    "order": _failed_since("order", "order_since", PickupAttempt.order_id == bindparam("order_id")),
    "courier": _failed_since(
        "courier", "source_since", PickupAttempt.source == bindparam("source")
    ),
    "courier_kiosk": _failed_since(
        "kiosk",
        "kiosk_since",
        _AT_KIOSK,
        PickupAttempt.source.startswith(COURIER_SOURCE),
    ),
}
_STATEMENTS: dict[tuple[str, ...], CompoundSelect[str, int, datetime]] = {}


def _statement(dimensions: tuple[str, ...]) -> CompoundSelect[str, int, datetime]:
    """One `UNION ALL` of the dimensions asked, built once per combination."""
    statement = _STATEMENTS.get(dimensions)
    if statement is None:
        statement = _STATEMENTS[dimensions] = union_all(*(_DIMENSIONS[d] for d in dimensions))
    return statement


async def recent_failures(
    session: AsyncSession,
    now: datetime,
    rules: throttle.Rules,
    *,
    kiosk_id: int,
    source: str | None,
    order_id: uuid.UUID | None = None,
) -> RecentFailures:
    """Failures of a pickup's dimensions in one round trip: of this source at this kiosk and of
    8-digit codes at this kiosk (when `source` is given: a guessable code), and of this order
    (when given)."""
    dimensions: tuple[str, ...] = ("source", "kiosk") if source is not None else ()
    if order_id is not None:
        dimensions += ("order",)
    if not dimensions:
        return RecentFailures()
    params: dict[str, object] = {
        "source_since": now - rules.source.window,
        "kiosk_since": now - rules.kiosk.window,
        "order_since": now - rules.order.window,
        "kiosk_id": kiosk_id,
        "source": source,
        "order_id": order_id,
    }
    return await _read(session, _statement(dimensions), params)


async def courier_failures(
    session: AsyncSession,
    now: datetime,
    rules: throttle.Rules,
    *,
    kiosk_id: int,
    source: str,
    lifted_at: datetime | None = None,
) -> RecentFailures:
    """Failed logins of this courier id anywhere (`rules.source`) since an operator last lifted
    his lockout, and of every courier login at this kiosk (`rules.kiosk`), in one round trip."""
    since = now - rules.source.window
    params: dict[str, object] = {
        "source_since": max(since, lifted_at) if lifted_at is not None else since,
        "kiosk_since": now - rules.kiosk.window,
        "kiosk_id": kiosk_id,
        "source": source,
    }
    return await _read(session, _statement(("courier", "courier_kiosk")), params)


async def _read(
    session: AsyncSession, statement: CompoundSelect[str, int, datetime], params: dict[str, object]
) -> RecentFailures:
    found: dict[str, throttle.Recent] = {}
    for row in (await session.execute(statement, params)).mappings():
        found[row["dimension"]] = throttle.Recent(int(row["n"]), row["newest"])
    return RecentFailures(**found)


async def wrong_codes_at_kiosks(
    session: AsyncSession, kiosk_ids: Collection[int], since: datetime
) -> dict[int, int]:
    """Per kiosk, the wrong 8-digit codes since `since` typed at its screen or held to its
    scanner: what its keypad adds its own refusals to for the day's budget (ADR 0039, 0116)."""
    rows = await session.execute(
        select(PickupAttempt.kiosk_id, func.count())
        .where(
            PickupAttempt.ok.is_(False),
            PickupAttempt.at >= since,
            PickupAttempt.kiosk_id.in_(list(kiosk_ids)),
            _GUESSES_ONLINE,
        )
        .group_by(PickupAttempt.kiosk_id)
    )
    return {kiosk_id: int(n) for kiosk_id, n in rows.all()}


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
    session: AsyncSession,
    kiosk_id: int,
    source: str,
    order_id: uuid.UUID | None,
    ok: bool,
    at: datetime | None = None,
) -> None:
    """One try to open (now, or when a kiosk made it offline), written at once: it counts
    toward throttling from its commit on."""
    await session.execute(
        _INSERT_ATTEMPT,
        {
            "kiosk_id": kiosk_id,
            "source": source,
            "order_id": order_id,
            "at": at or utcnow(),
            "ok": ok,
        },
    )


_OPENED_SINCE = (
    select(DoorOpening.id)
    .where(
        DoorOpening.order_id == bindparam("order_id"),
        DoorOpening.why == "pickup",
        DoorOpening.door_opened_at >= bindparam("since"),
    )
    .limit(1)
)


async def last_opening(session: AsyncSession, compartment_id: int) -> DoorOpening | None:
    """The compartment's opening whose door opened last: the one a closing ends."""
    return await session.scalar(
        select(DoorOpening)
        .where(
            DoorOpening.compartment_id == compartment_id, DoorOpening.door_opened_at.is_not(None)
        )
        .order_by(DoorOpening.door_opened_at.desc(), DoorOpening.id.desc())
        .limit(1)
    )


async def opened_since(session: AsyncSession, order_id: uuid.UUID, since: datetime) -> bool:
    """True when a pickup opening of the order saw its door open at or after `since`."""
    return await session.scalar(_OPENED_SINCE, {"order_id": order_id, "since": since}) is not None


_ALERTED_SINCE = (
    select(Alert.id)
    .where(
        Alert.dedupe_key == bindparam("dedupe_key"),
        Alert.state != "resolved",
        Alert.last_raised_at >= bindparam("since"),
    )
    .limit(1)
)


async def alerted_since(session: AsyncSession, dedupe_key: str, since: datetime) -> bool:
    """True when an unresolved alert under `dedupe_key` was raised at or after `since`."""
    found = await session.scalar(_ALERTED_SINCE, {"dedupe_key": dedupe_key, "since": since})
    return found is not None
