"""Queries on compartments, allocation for a drop-off, and compare-and-set state changes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.compartments.lifecycle import (
    FOOD_INSIDE,
    CompartmentState,
    CompartmentTrigger,
    next_state,
)
from locker_service.db import rowcount
from locker_service.errors import Conflict
from locker_service.foodsafety import uv_dose
from locker_service.lifecycles import save_step
from locker_service.models import Compartment, DisinfectionCycle, Kiosk

SIZES = ("S", "M", "L")


class CompartmentChanged(Conflict):
    code = "compartment_changed"


async def transition(
    session: AsyncSession, compartment: Compartment, trigger: CompartmentTrigger, **values: Any
) -> CompartmentState:
    expected = compartment.state
    new = next_state(expected, trigger)
    if not await save_step(session, compartment, expected, new.value, values):
        raise CompartmentChanged(f"compartment {compartment.id} changed meanwhile")
    return new


async def try_reserve(session: AsyncSession, compartment_id: int) -> bool:
    """Compare-and-set available -> reserved: exactly one of any number of racers wins."""
    result = await session.execute(
        update(Compartment)
        .where(
            Compartment.id == compartment_id,
            Compartment.state == CompartmentState.AVAILABLE.value,
            Compartment.fault.is_(None),
        )
        .values(state=CompartmentState.RESERVED.value, version=Compartment.version + 1)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def fits(compartment_size: str, heated: bool, order_size: str, hot: bool) -> bool:
    if hot and not heated:
        return False
    return SIZES.index(compartment_size) >= SIZES.index(order_size)


def preference(compartment: Compartment, order_size: str, hot: bool) -> tuple[int, int, int]:
    """Smallest fitting size first; an unheated one for ambient food, keeping heat for hot."""
    return (
        SIZES.index(compartment.size) - SIZES.index(order_size),
        1 if (compartment.heated and not hot) else 0,
        compartment.number,
    )


async def free_in_kiosk(session: AsyncSession, kiosk_id: int) -> Sequence[Compartment]:
    return (
        await session.scalars(
            select(Compartment).where(
                Compartment.kiosk_id == kiosk_id,
                Compartment.state == CompartmentState.AVAILABLE.value,
                Compartment.fault.is_(None),
            )
        )
    ).all()


def fitting_counts(free: Sequence[tuple[str, bool]]) -> dict[str, dict[str, int]]:
    """For each order size, how many of these free (size, heated) compartments a hot and an
    ambient order would fit (as a drop-off chooses: `fits`)."""
    return {
        size: {
            "hot": sum(fits(c_size, heated, size, True) for c_size, heated in free),
            "ambient": sum(fits(c_size, heated, size, False) for c_size, heated in free),
        }
        for size in SIZES
    }


async def free_at_site(session: AsyncSession, site_id: int) -> list[tuple[str, bool, str, bool]]:
    """(kiosk code, kiosk online, size, heated) of each free compartment at the site, with
    nothing inside by the board's sensor and no fault: what a drop-off could take now."""
    rows = await session.execute(
        select(Kiosk.code, Kiosk.online, Compartment.size, Compartment.heated)
        .join(Kiosk, Kiosk.id == Compartment.kiosk_id)
        .where(
            Kiosk.site_id == site_id,
            Compartment.state == CompartmentState.AVAILABLE.value,
            Compartment.fault.is_(None),
            Compartment.occupied.is_(False),
        )
    )
    return [(code, bool(online), size, bool(heated)) for code, online, size, heated in rows.all()]


async def locked(session: AsyncSession, compartment_id: int) -> Compartment | None:
    """The compartment read afresh and locked (`FOR NO KEY UPDATE`: rows that merely refer to
    it, events, timers, openings, are not held up). Every path that writes a compartment and
    its order takes the compartment first, as a kiosk's report writes them (ADR 0088): the
    other way round they deadlock."""
    return await session.scalar(
        select(Compartment)
        .where(Compartment.id == compartment_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )


async def by_number(session: AsyncSession, kiosk_id: int, number: int) -> Compartment | None:
    return await session.scalar(
        select(Compartment).where(Compartment.kiosk_id == kiosk_id, Compartment.number == number)
    )


async def by_numbers(
    session: AsyncSession, kiosk_id: int, numbers: Iterable[int]
) -> dict[int, Compartment]:
    """The kiosk's compartments of these numbers, by number, in one query (those that exist)."""
    found = await session.scalars(
        select(Compartment).where(
            Compartment.kiosk_id == kiosk_id, Compartment.number.in_(sorted(set(numbers)))
        )
    )
    return {c.number: c for c in found}


async def count_with_food(session: AsyncSession, kiosk_id: int) -> int:
    """How many of the kiosk's compartments have food behind the door."""
    counted = await session.scalar(
        select(func.count(Compartment.id)).where(
            Compartment.kiosk_id == kiosk_id, Compartment.state.in_(sorted(FOOD_INSIDE))
        )
    )
    return int(counted or 0)


async def of_kiosk(session: AsyncSession, kiosk_id: int) -> Sequence[Compartment]:
    return (
        await session.scalars(
            select(Compartment).where(Compartment.kiosk_id == kiosk_id).order_by(Compartment.number)
        )
    ).all()


async def with_kiosk(
    session: AsyncSession, compartment_id: int
) -> tuple[Compartment, Kiosk] | None:
    row = (
        await session.execute(
            select(Compartment, Kiosk)
            .join(Kiosk, Kiosk.id == Compartment.kiosk_id)
            .where(Compartment.id == compartment_id)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def finished_cycle_states(
    session: AsyncSession, compartment: Compartment, limit: int
) -> list[str]:
    """How the compartment's last `limit` cycles since its lamp was fitted ended, newest first."""
    query = (
        select(DisinfectionCycle.state)
        .where(
            DisinfectionCycle.compartment_id == compartment.id,
            DisinfectionCycle.finished_at.is_not(None),
        )
        .order_by(DisinfectionCycle.started_at.desc(), DisinfectionCycle.id.desc())
        .limit(limit)
    )
    if compartment.lamp_fitted_at is not None:
        query = query.where(DisinfectionCycle.started_at >= compartment.lamp_fitted_at)
    return list(await session.scalars(query))


async def running_cycle(session: AsyncSession, compartment_id: int) -> DisinfectionCycle | None:
    """The compartment's cycle that has started and not ended, if any."""
    return await session.scalar(
        select(DisinfectionCycle)
        .where(
            DisinfectionCycle.compartment_id == compartment_id,
            DisinfectionCycle.state == "running",
        )
        .order_by(DisinfectionCycle.started_at.desc())
        .limit(1)
    )


async def lamp_has_failed(session: AsyncSession, compartment: Compartment, max_short: int) -> bool:
    """Whether the compartment's lamp has failed: its last `max_short` cycles since it was
    fitted all short of their dose (ADR 0073)."""
    states = await finished_cycle_states(session, compartment, max_short)
    return uv_dose.lamp_failed(states, max_short)
