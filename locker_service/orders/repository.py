"""Queries on orders and their audit trail, and compare-and-set state changes."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from locker_service.db import rowcount
from locker_service.errors import Conflict
from locker_service.foodsafety.faults import may_be_collected
from locker_service.lifecycles import save_step
from locker_service.models import Compartment, Kiosk, Order, OrderEvent, utcnow
from locker_service.orders import webhooks
from locker_service.orders.lifecycle import OrderState, OrderTrigger, next_state
from locker_service.orders.schemas import FAULT_NOTICE, NOTICE_PREFIX


class OrderChanged(Conflict):
    code = "order_changed"


async def transition(
    session: AsyncSession,
    order: Order,
    trigger: OrderTrigger,
    *,
    actor_type: str,
    actor_id: str | None = None,
    detail: dict[str, Any] | None = None,
    **values: Any,
) -> OrderState:
    """Move `order` by `trigger` if nobody moved it first (`UPDATE ... WHERE state = expected`).

    Raises IllegalOrderTransition (409) for a step the table forbids and OrderChanged (409) when
    another request won the race. Writes the audit row in the same transaction.
    """
    expected = order.state
    new = next_state(expected, trigger)
    now = utcnow()
    values.setdefault("updated_at", now)
    if not await save_step(session, order, expected, new.value, values):
        raise OrderChanged(f"order {order.id} changed meanwhile (was {expected})")
    add_event(
        session,
        order.id,
        actor_type,
        actor_id,
        trigger.value,
        {"from": expected, "to": new.value, **(detail or {})},
    )
    event = webhooks.event_of(new.value, values)
    if event is not None:  # the merchant's webhooks hear of it with the step, or not at all
        await webhooks.enqueue(session, order, event)
    return new


_ORDERS = cast(Table, Order.__table__)
_SAVE_WATCH = (
    update(_ORDERS)
    .where(_ORDERS.c.id == bindparam("order_id"), _ORDERS.c.state == bindparam("read_in"))
    .values(food_watch=bindparam("seen"))
)


async def save_food_watches(
    session: AsyncSession, watches: Sequence[tuple[uuid.UUID, str, dict[str, Any]]]
) -> None:
    """Keep the foods' watches, by order: (order id, the state it was read in, its watch). One
    statement, executed for each (a kiosk's checks run together); each is kept only if its
    order is still in the state it was read in (a step taken meanwhile, a pickup or an
    expiry, ends the watch)."""
    if watches:
        params = [{"order_id": o, "read_in": state, "seen": seen} for o, state, seen in watches]
        await session.execute(_SAVE_WATCH, params)


def add_event(
    session: AsyncSession,
    order_id: uuid.UUID,
    actor_type: str,
    actor_id: str | None,
    action: str,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(OrderEvent(**event_values(order_id, actor_type, actor_id, action, detail)))


def add_notice(
    session: AsyncSession,
    order_id: uuid.UUID,
    actor_type: str,
    actor_id: str | None,
    kind: str,
    message: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """An order event the merchant API shows (`OrderRead.notices`)."""
    add_event(
        session,
        order_id,
        actor_type,
        actor_id,
        NOTICE_PREFIX + kind,
        {**(detail or {}), "message": message},
    )


async def notices(session: AsyncSession, order_id: uuid.UUID) -> list[OrderEvent]:
    rows = await session.scalars(
        select(OrderEvent)
        .where(OrderEvent.order_id == order_id, OrderEvent.action.startswith(NOTICE_PREFIX))
        .order_by(OrderEvent.id)
    )
    return list(rows)


async def fault_told(
    session: AsyncSession, order: Order, since: datetime | None = None
) -> str | None:
    """The fault of the first `compartment_fault` notice on the order (she was told staff
    would contact her), at or after `since` when given; None when there is none."""
    notice = await notice_since(session, order, FAULT_NOTICE, since)
    return None if notice is None else str(notice.detail.get("fault") or "a fault")


async def notice_since(
    session: AsyncSession, order: Order, kind: str, since: datetime | None = None
) -> OrderEvent | None:
    """The first `kind` notice on the order, at or after `since` when given."""
    return await event_since(session, order, NOTICE_PREFIX + kind, since)


async def event_since(
    session: AsyncSession, order: Order, action: str, since: datetime | None = None
) -> OrderEvent | None:
    """The first `action` event of the order, at or after `since` when given."""
    found = select(OrderEvent).where(OrderEvent.order_id == order.id, OrderEvent.action == action)
    if since is not None:
        found = found.where(OrderEvent.at >= since)
    return await session.scalar(found.order_by(OrderEvent.id).limit(1))


async def held_by_fault(
    session: AsyncSession, order: Order, compartment_fault: str | None
) -> str | None:
    """The fault her ready food is held for staff by (ADR 0128), None when her code may open:
    one latched now that told her not to collect it, or one she was told of since she was
    ready and cleared since (by staff or by a restart of the board: nobody has looked at the
    food). Staff hand it over or discard it; her code opens nothing meanwhile."""
    if order.state != OrderState.READY:
        return None
    if not may_be_collected(compartment_fault):
        return compartment_fault
    return await fault_told(session, order, order.ready_at)


async def notices_of(
    session: AsyncSession, order_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[OrderEvent]]:
    """The notices of several orders in one query, oldest first."""
    found: dict[uuid.UUID, list[OrderEvent]] = {order_id: [] for order_id in order_ids}
    if order_ids:
        rows = await session.scalars(
            select(OrderEvent)
            .where(OrderEvent.order_id.in_(order_ids), OrderEvent.action.startswith(NOTICE_PREFIX))
            .order_by(OrderEvent.id)
        )
        for event in rows:
            found[event.order_id].append(event)
    return found


async def page_for_merchant(
    session: AsyncSession,
    merchant_id: int,
    *,
    state: str | None,
    site_id: int | None,
    ref_prefix: str | None,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[tuple[Order, int | None, str | None]]:
    """A merchant's orders, newest first, with their compartment number and kiosk code;
    those after `after` (a page's last (created_at, id)), at most `limit`."""
    query = (
        select(Order, Compartment.number, Kiosk.code)
        .outerjoin(Compartment, Compartment.id == Order.compartment_id)
        .outerjoin(Kiosk, Kiosk.id == Compartment.kiosk_id)
        .where(Order.merchant_id == merchant_id)
        .order_by(Order.created_at.desc(), Order.id.desc())
        .limit(limit)
    )
    if state is not None:
        query = query.where(Order.state == state)
    if site_id is not None:
        query = query.where(Order.site_id == site_id)
    if ref_prefix:
        escaped = ref_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Order.external_ref.like(f"{escaped}%", escape="\\"))
    if since is not None:
        query = query.where(Order.created_at >= since)
    if until is not None:
        query = query.where(Order.created_at < until)
    if after is not None:
        at, order_id = after
        query = query.where(
            or_(Order.created_at < at, and_(Order.created_at == at, Order.id < order_id))
        )
    return [(order, number, code) for order, number, code in (await session.execute(query)).all()]


def event_values(
    order_id: uuid.UUID,
    actor_type: str,
    actor_id: str | None,
    action: str,
    detail: dict[str, Any] | None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """Every column of an audit row (the ORM object, the prebuilt insert and the order
    writer's PostgreSQL batch are all made from these)."""
    return {
        "order_id": order_id,
        "at": at or utcnow(),
        "actor_type": actor_type,
        "actor_id": actor_id,
        "action": action,
        "detail": detail or {},
    }


async def get(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    return await session.get(Order, order_id)


# Built once: a statement without per-call `.values()` keeps SQLAlchemy's compiled-statement
# cache key fixed, and a Table (not ORM) insert skips the ORM's bulk-insert machinery; together
# they were most of the CPU of creating an order.
_NEW_ORDER_KEYS = ["merchant_id", "external_ref"]
_INSERT_ORDER_IF_NEW = {
    "postgresql": pg_insert(_ORDERS)
    .on_conflict_do_nothing(index_elements=_NEW_ORDER_KEYS)
    .returning(_ORDERS.c.id),
    "sqlite": sqlite_insert(_ORDERS)
    .on_conflict_do_nothing(index_elements=_NEW_ORDER_KEYS)
    .returning(_ORDERS.c.id),
}
_INSERT_ORDER_EVENT = insert(cast(Table, OrderEvent.__table__))


async def insert_if_new(session: AsyncSession, values: dict[str, Any]) -> uuid.UUID | None:
    """`INSERT ... ON CONFLICT (merchant_id, external_ref) DO NOTHING RETURNING id`: the new
    order's id, or None when the merchant already used the reference (on PostgreSQL after
    waiting for a racing insert of it to commit). Both dialects the service runs on
    (PostgreSQL, SQLite >= 3.24) have the clause. `values` holds every column."""
    statement = _INSERT_ORDER_IF_NEW[session.get_bind().dialect.name]
    inserted: uuid.UUID | None = (await session.execute(statement, values)).scalar()
    return inserted


async def insert_event(
    session: AsyncSession,
    order_id: uuid.UUID,
    actor_type: str,
    actor_id: str | None,
    action: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """`add_event` written at once, for a path that has no ORM objects to flush."""
    await insert_event_values(session, event_values(order_id, actor_type, actor_id, action, detail))


async def insert_event_values(session: AsyncSession, values: dict[str, Any]) -> None:
    """An audit row from its `event_values`, written at once."""
    await session.execute(_INSERT_ORDER_EVENT, values)


async def by_merchant_ref(session: AsyncSession, merchant_id: int, ref: str) -> Order | None:
    return await session.scalar(
        select(Order).where(Order.merchant_id == merchant_id, Order.external_ref == ref)
    )


async def by_token_hash(session: AsyncSession, token_hash: str) -> Order | None:
    return await session.scalar(select(Order).where(Order.pickup_token_hash == token_hash))


async def hot_food_in_kiosk(session: AsyncSession, kiosk_id: int) -> list[tuple[uuid.UUID, int]]:
    """(order id, compartment id) of every hot order whose food is in one of the kiosk's
    heated compartments."""
    from locker_service.orders.lifecycle import HOLDING

    rows = await session.execute(
        select(Order.id, Compartment.id)
        .join(Compartment, Compartment.id == Order.compartment_id)
        .where(
            Compartment.kiosk_id == kiosk_id,
            Compartment.heated.is_(True),
            Order.temperature_class == "hot",
            Order.state.in_([s.value for s in HOLDING]),
        )
    )
    return [(order_id, compartment_id) for order_id, compartment_id in rows]


async def compartments_holding(
    session: AsyncSession, merchant_ids: frozenset[int]
) -> dict[int, datetime]:
    """The compartments these merchants' food is (or is about to be) in, each with when it was
    given to their order (its drop-off, else its creation): what happened there before was
    another order's business."""
    from locker_service.orders.lifecycle import ACTIVE

    rows = await session.execute(
        select(Order.compartment_id, Order.deposited_at, Order.created_at).where(
            Order.merchant_id.in_(merchant_ids),
            Order.compartment_id.is_not(None),
            Order.state.in_([s.value for s in ACTIVE]),
        )
    )
    return {c: deposited or created for c, deposited, created in rows if c is not None}


async def active_in_compartment(session: AsyncSession, compartment_id: int) -> Order | None:
    """The order whose food is (or is about to be) in the compartment."""
    from locker_service.orders.lifecycle import ACTIVE

    return await session.scalar(
        select(Order)
        .where(
            Order.compartment_id == compartment_id,
            Order.state.in_([s.value for s in ACTIVE]),
        )
        .order_by(Order.created_at.desc())
        .limit(1)
    )


async def food_in_compartment(session: AsyncSession, compartment_id: int) -> Order | None:
    """The order whose food is in the compartment: active, or expired and not yet taken out."""
    active = await active_in_compartment(session, compartment_id)
    return active or await expired_in_compartment(session, compartment_id)


async def expired_in_compartment(session: AsyncSession, compartment_id: int) -> Order | None:
    """An order that ended (expired, failed) with its food possibly still inside."""
    return await session.scalar(
        select(Order)
        .where(
            Order.compartment_id == compartment_id,
            Order.state.in_([OrderState.EXPIRED.value, OrderState.FAILED.value]),
            Order.picked_up_at.is_(None),
        )
        .order_by(Order.updated_at.desc())
        .limit(1)
    )


async def dropoff_candidates(
    session: AsyncSession, site_id: int, ref: str, merchant_id: int | None
) -> Sequence[Order]:
    """Orders a courier may mean by `ref` at a site: the merchant's reference or the order id."""
    conditions = [Order.external_ref == ref]
    with contextlib.suppress(ValueError):
        conditions.append(Order.id == uuid.UUID(ref))
    query = select(Order).where(Order.site_id == site_id, or_(*conditions))
    if merchant_id is not None:
        query = query.where(Order.merchant_id == merchant_id)
    return (await session.scalars(query)).all()


async def search(
    session: AsyncSession,
    site_ids: frozenset[int] | None,
    q: str | None,
    state: str | None,
    limit: int,
    merchant_ids: frozenset[int] | None = None,
) -> Sequence[Order]:
    query = select(Order).order_by(Order.created_at.desc()).limit(limit)
    if site_ids is not None:
        query = query.where(Order.site_id.in_(site_ids))
    if merchant_ids is not None:
        query = query.where(Order.merchant_id.in_(merchant_ids))
    if state:
        query = query.where(Order.state == state)
    if q:
        like = f"%{q}%"
        conditions: list[ColumnElement[bool]] = [
            Order.external_ref.ilike(like),
            Order.purchaser_name.ilike(like),
        ]
        with contextlib.suppress(ValueError):
            conditions.append(Order.id == uuid.UUID(q))
        query = query.where(or_(*conditions))
    return (await session.scalars(query)).all()


async def mark_code_used(
    session: AsyncSession, order: Order, at: datetime | None, state: OrderState = OrderState.READY
) -> bool:
    """Claim the single use of the pickup codes (or give it back with `at=None`) of an order
    still in `state`: ready, or expired for a pickup made before it expired (ADR 0112)."""
    condition = Order.code_used_at.is_(None) if at is not None else Order.code_used_at.is_not(None)
    result = await session.execute(
        update(Order)
        .where(Order.id == order.id, Order.state == state.value, condition)
        .values(code_used_at=at, version=Order.version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) == 1:
        set_committed_value(order, "code_used_at", at)
        return True
    return False
