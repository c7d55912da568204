"""The order and compartment lifecycles as tables: pure properties, and compare-and-set in a
real database (two racers, one winner)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from locker_service.compartments import lifecycle as compartment
from locker_service.compartments.lifecycle import CompartmentState, CompartmentTrigger
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.models import Order
from locker_service.orders import lifecycle as order
from locker_service.orders import repository
from locker_service.orders.lifecycle import OrderState, OrderTrigger
from tests.locker_service.world import World


def _reachable(table: dict[tuple[str, str], str], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        state = todo.pop()
        for (s, _), target in table.items():
            if s == state and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_every_order_state_is_reachable_and_terminal_states_are_final() -> None:
    assert _reachable(order.TRANSITIONS, OrderState.CREATED) == set(OrderState)  # type: ignore[arg-type]
    for (state, _), _target in order.TRANSITIONS.items():
        assert state not in order.TERMINAL


def test_a_correction_only_moves_one_end_to_another_by_a_trigger_of_its_own() -> None:
    ordinary = {trigger for (_, trigger) in order.TRANSITIONS}
    assert order.CORRECTIONS  # the expiry a pickup made before it proves wrong (ADR 0112)
    for (state, trigger), target in order.CORRECTIONS.items():
        assert state in order.TERMINAL and target in order.TERMINAL
        assert trigger not in ordinary
        assert order.next_state(state, trigger) == target
        for other in OrderState:
            if other != state:
                with pytest.raises(order.IllegalOrderTransition):
                    order.next_state(other, trigger)


def test_every_compartment_state_comes_back_to_available() -> None:
    table = compartment.TRANSITIONS
    assert _reachable(table, CompartmentState.AVAILABLE) == set(CompartmentState)  # type: ignore[arg-type]
    for state in CompartmentState:
        assert CompartmentState.AVAILABLE in _reachable(table, state)  # type: ignore[arg-type]


def test_the_happy_paths() -> None:
    state: str = OrderState.CREATED
    for trigger in ("assign", "deposit", "start_cycle", "complete_cycle", "pick_up"):
        state = order.next_state(state, OrderTrigger(trigger))
    assert state == OrderState.PICKED_UP
    cstate: str = CompartmentState.AVAILABLE
    for ctrigger in (
        "reserve",
        "occupy",
        "start_cycle",
        "complete_cycle",
        "empty",
        "complete_cleaning",
    ):
        cstate = compartment.next_state(cstate, CompartmentTrigger(ctrigger))
    assert cstate == CompartmentState.AVAILABLE


@given(st.lists(st.sampled_from(list(OrderTrigger)), max_size=40))
def test_any_sequence_of_order_triggers_follows_the_table(triggers: list[OrderTrigger]) -> None:
    state: str = OrderState.CREATED
    table = order.TRANSITIONS | order.CORRECTIONS
    for trigger in triggers:
        if (OrderState(state), trigger) in table:
            new = order.next_state(state, trigger)
            assert new == table[(OrderState(state), trigger)]
            state = new
        else:
            with pytest.raises(order.IllegalOrderTransition):
                order.next_state(state, trigger)
        # a food-holding order is never both picked up and still holding
        assert not (state in order.TERMINAL and state in order.HOLDING)


@given(st.lists(st.sampled_from(list(CompartmentTrigger)), max_size=40))
def test_a_compartment_is_never_reserved_twice(triggers: list[CompartmentTrigger]) -> None:
    state: str = CompartmentState.AVAILABLE
    for trigger in triggers:
        try:
            new = compartment.next_state(state, trigger)
        except compartment.IllegalCompartmentTransition:
            continue
        if trigger == CompartmentTrigger.RESERVE:
            assert state == CompartmentState.AVAILABLE  # only a free one can be reserved
        state = new


@given(st.text(max_size=20), st.sampled_from(list(OrderTrigger)))
def test_unknown_states_are_refused_not_crashed(state: str, trigger: OrderTrigger) -> None:
    if state in set(OrderState):
        return
    with pytest.raises(order.IllegalOrderTransition):
        order.next_state(state, trigger)


async def test_two_racing_steps_one_winner(world: World, service: ServiceContext) -> None:
    from locker_service.orders.schemas import OrderCreate
    from locker_service.orders.service import create

    async with session_scope(service.sessionmaker) as session:
        merchant = await session.get(
            __import__("locker_service.models", fromlist=["Merchant"]).Merchant, world.merchant_id
        )
        assert merchant is not None
    answer, _ = await create(service, merchant, OrderCreate(**world.order_body("race")))  # type: ignore[arg-type]
    created_id = uuid.UUID(json.loads(answer)["id"])

    async def cancel() -> str:
        try:
            async with session_scope(service.sessionmaker) as session:
                fresh = await session.get(Order, created_id)
                assert fresh is not None
                await asyncio.sleep(0.05)  # both have read `created` before either writes
                await repository.transition(session, fresh, OrderTrigger.CANCEL, actor_type="test")
            return "won"
        except (repository.OrderChanged, order.IllegalOrderTransition):
            # PostgreSQL: the loser's UPDATE ... WHERE state = 'created' matches nothing.
            # SQLite: writers queue, so the loser reads 'cancelled' and the table refuses.
            return "lost"

    results = await asyncio.gather(cancel(), cancel())
    assert sorted(results) == ["lost", "won"]
    async with service.sessionmaker() as session:
        stored = await session.get(Order, created_id)
    assert stored is not None and stored.state == "cancelled" and stored.version == 2


async def test_a_step_decided_from_a_stale_read_is_not_saved(
    world: World, service: ServiceContext
) -> None:
    """The one compare-and-set both lifecycles save with: a compartment read as available, then
    reserved by someone else, cannot be taken out of service from that stale read."""
    from sqlalchemy import select

    from locker_service.compartments.repository import CompartmentChanged, transition
    from locker_service.lifecycles import save_step
    from locker_service.models import Compartment

    async with service.sessionmaker() as session:
        stale = await session.scalar(
            select(Compartment).where(Compartment.kiosk_id == world.kiosk_id).limit(1)
        )
        assert stale is not None and stale.state == "available"
        session.expunge(stale)  # kept as read: a decision taken on it now is stale
    async with session_scope(service.sessionmaker) as session:
        fresh = await session.get(Compartment, stale.id)
        assert fresh is not None
        await transition(session, fresh, CompartmentTrigger.RESERVE)
        assert (fresh.state, fresh.version) == ("reserved", stale.version + 1)  # set in place
    async with session_scope(service.sessionmaker) as session:
        assert not await save_step(session, stale, "available", "out_of_service", {})
        with pytest.raises(CompartmentChanged):
            await transition(session, stale, CompartmentTrigger.TAKE_OUT_OF_SERVICE)
    assert stale.state == "available"  # the loser's object is left as it was read
    async with service.sessionmaker() as session:
        stored = await session.get(Compartment, stale.id)
    assert stored is not None and (stored.state, stored.version) == ("reserved", stale.version + 1)


async def test_a_step_that_keeps_the_state_loses_to_any_step_taken_meanwhile(
    world: World, service: ServiceContext
) -> None:
    """A step from a state to itself (a drop-off opened again, ADR 0088) compares the version
    too: a compartment reserved, freed and reserved again since it was read is not the one it
    read, though its state is the same."""
    from sqlalchemy import select

    from locker_service.compartments.repository import transition
    from locker_service.lifecycles import save_step
    from locker_service.models import Compartment

    async with session_scope(service.sessionmaker) as session:
        c = await session.scalar(
            select(Compartment).where(Compartment.kiosk_id == world.kiosk_id).limit(1)
        )
        assert c is not None
        await transition(session, c, CompartmentTrigger.RESERVE)
        read = c.version
        session.expunge(c)
    async with session_scope(service.sessionmaker) as session:
        fresh = await session.get(Compartment, c.id)
        assert fresh is not None
        await transition(session, fresh, CompartmentTrigger.RELEASE)
        await transition(session, fresh, CompartmentTrigger.RESERVE)
    async with session_scope(service.sessionmaker) as session:
        assert not await save_step(session, c, "reserved", "reserved", {}, version=read)
    async with session_scope(service.sessionmaker) as session:
        fresh = await session.get(Compartment, c.id)
        assert fresh is not None
        assert await save_step(session, fresh, "reserved", "reserved", {}, version=fresh.version)
        assert fresh.version == read + 3
