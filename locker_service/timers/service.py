"""Scheduling and cancelling timers, and claiming due ones.

A timer is a row. Claiming sets `locked_until` (a lease) in a short transaction; on PostgreSQL
the claim reads with `FOR UPDATE SKIP LOCKED`, so two replicas never take the same timer. A
replica that dies holding one loses the lease and another picks the timer up again.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.models import Timer, utcnow


class TimerKind(StrEnum):
    START_HOLD_CYCLE = "start_hold_cycle"  # heater setpoint + disinfection after a deposit
    START_CLEANING = "start_cleaning"  # the short cycle after the food left
    CYCLE_WATCHDOG = "cycle_watchdog"  # a cycle not reported done by then
    DROPOFF_TIMEOUT = "dropoff_timeout"  # the courier never shut the door with food inside
    REMINDER = "reminder"  # food has waited 30 minutes
    HOLD_EXPIRY = "hold_expiry"  # hold limit reached: expired
    ORDER_EXPIRY = "order_expiry"  # never dropped off
    CODE_RELEASE = "code_release"  # a used code whose door never opened becomes valid again
    HEATER_OFF = "heater_off"  # a compartment preheated for a drop-off that never came
    ALERT_ESCALATION = "alert_escalation"  # an alert still not acknowledged: tell the next list
    DOOR_LEFT_OPEN = "door_left_open"  # a door still open a minute after it opened
    REHEAT = "reheat"  # a rebooted board forgot its setpoints: hot food is heated again
    FOOD_CHECK = "food_check"  # the food's watch: its readings folded in, its clock looked at


_DUE_NOW = "locker_service.timers.due_now"  # in `Session.info`: a timer due at once scheduled
# A claim that fills takes at most this many more to finish its last instant (ADR 0107).
CLAIM_TAIL = 200


def _note_due(session: AsyncSession, due_at: datetime) -> None:
    if due_at <= utcnow():
        session.info[_DUE_NOW] = True


# Spreads the keys' slots over the period: consecutive keys (kiosk ids) land far apart.
_GOLDEN = (math.sqrt(5) - 1) / 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def slot_after(after: datetime, period: timedelta, key: int) -> datetime:
    """The first of `key`'s slots later than `after`: its slots are `period` apart, at a phase
    of its own within the period. Timers of one key (a kiosk's food checks, ADR 0104) that
    are each scheduled at their slot after now fall due at the same instant and are claimed
    together, and never later than `after + period`; different keys' are spread out."""
    us = timedelta(microseconds=1)  # in whole microseconds: one instant for all, exactly
    period_us = max(period // us, 1)
    phase_us = int((key * _GOLDEN) % 1.0 * period_us)
    k = ((after - _EPOCH) // us - phase_us) // period_us + 1
    return _EPOCH + (phase_us + k * period_us) * us


def scheduled_due_now(session: AsyncSession) -> bool:
    """Whether `session` scheduled a timer already due: the timer loop is woken once it has
    committed. Any other timer is found by the loop's next look, when it is due."""
    return bool(session.info.get(_DUE_NOW))


def schedule(
    session: AsyncSession,
    kind: TimerKind,
    due_at: datetime,
    *,
    order_id: uuid.UUID | None = None,
    compartment_id: int | None = None,
    alert_id: int | None = None,
) -> Timer:
    timer = Timer(**pending_values(kind, due_at, order_id=order_id, compartment_id=compartment_id))
    timer.alert_id = alert_id  # not in pending_values: the order writer's batch has no alerts
    session.add(timer)
    _note_due(session, due_at)
    return timer


def pending_values(
    kind: TimerKind,
    due_at: datetime,
    *,
    order_id: uuid.UUID | None = None,
    compartment_id: int | None = None,
) -> dict[str, Any]:
    """The columns of a pending timer (the ORM object, `schedule_now` and the order writer's
    PostgreSQL batch are all made from these)."""
    return {
        "kind": kind.value,
        "due_at": due_at,
        "order_id": order_id,
        "compartment_id": compartment_id,
        "state": "pending",
        "attempts": 0,
    }


_INSERT_TIMER = insert(cast(Table, Timer.__table__))


async def schedule_now(
    session: AsyncSession,
    kind: TimerKind,
    due_at: datetime,
    *,
    order_id: uuid.UUID | None = None,
    compartment_id: int | None = None,
) -> None:
    """`schedule` written at once, for a path that has no ORM objects to flush."""
    values = pending_values(kind, due_at, order_id=order_id, compartment_id=compartment_id)
    await schedule_values(session, values)


async def schedule_values(session: AsyncSession, values: dict[str, Any]) -> None:
    """A timer from its `pending_values`, written at once."""
    await session.execute(_INSERT_TIMER, values)
    _note_due(session, values["due_at"])


async def cancel(
    session: AsyncSession,
    kinds: Sequence[TimerKind],
    *,
    order_id: uuid.UUID | None = None,
    compartment_id: int | None = None,
    alert_id: int | None = None,
) -> None:
    query = update(Timer).where(Timer.state == "pending", Timer.kind.in_([k.value for k in kinds]))
    if order_id is not None:
        query = query.where(Timer.order_id == order_id)
    if compartment_id is not None:
        query = query.where(Timer.compartment_id == compartment_id)
    if alert_id is not None:
        query = query.where(Timer.alert_id == alert_id)
    await session.execute(query.values(state="cancelled"))


async def claim_due(
    session: AsyncSession,
    *,
    lease: timedelta,
    limit: int,
    skip_locked: bool,
    tail_kinds: Collection[str] = (),
) -> list[Timer]:
    """The `limit` timers due first, and, when they fill it, the rest of the last one's instant
    of the `tail_kinds` (up to `CLAIM_TAIL` more): a kiosk's food checks fall due at one
    instant and run as one only if claimed together (ADR 0107). Each is leased to this claim
    until `lease` from now."""
    now = utcnow()
    due = (
        Timer.state == "pending",
        Timer.due_at <= now,
        or_(Timer.locked_until.is_(None), Timer.locked_until < now),
    )
    query = select(Timer).where(*due).order_by(Timer.due_at).limit(limit)
    if skip_locked:
        query = query.with_for_update(skip_locked=True)
    timers = list((await session.scalars(query)).all())
    if tail_kinds and timers and len(timers) == limit:
        last = timers[-1].due_at
        rest = (
            select(Timer)
            .where(
                *due,
                Timer.due_at == last,
                Timer.kind.in_(list(tail_kinds)),
                Timer.id.not_in([timer.id for timer in timers if timer.due_at == last]),
            )
            .limit(CLAIM_TAIL)
        )
        if skip_locked:
            rest = rest.with_for_update(skip_locked=True)
        timers += (await session.scalars(rest)).all()
    for timer in timers:
        timer.locked_until = now + lease
        timer.attempts += 1
    await session.flush()
    return timers


async def finish(session: AsyncSession, timer_id: int, state: str = "done") -> None:
    await finish_all(session, [timer_id], state)


async def finish_all(session: AsyncSession, timer_ids: Sequence[int], state: str = "done") -> None:
    await session.execute(
        update(Timer).where(Timer.id.in_(timer_ids), Timer.state == "pending").values(state=state)
    )
