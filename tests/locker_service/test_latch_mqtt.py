"""A pickup whose latch springs back unopened, at the MQTT boundary: a real Mosquitto, the
service with its kiosk link and timers at time scale 1 (with a shortened cycle), and a scripted
kiosk that reports the latch the way the bridge does, in its compartment snapshots."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from locker_service.models import Compartment, Order, OrderEvent, PickupAttempt
from tests.locker_service.test_story_mqtt import Rig, _made_ready, until
from tests.locker_service.test_story_mqtt import rig as rig  # the fixture, used by name
from tests.locker_service.world import record_pickup_answers, token_of

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]


def _unlocks(rig: Rig) -> int:
    return sum(1 for c in rig.kiosk.received if c.command.action == "unlock" and not c.duplicate)


async def _latch_seen(rig: Rig, n: int) -> bool:
    async with rig.ctx.sessionmaker() as session:
        released = await session.scalar(
            select(Compartment.lock_released).where(
                Compartment.kiosk_id == rig.world.kiosk_id, Compartment.number == n
            )
        )
    return bool(released)


async def test_she_scans_the_latch_springs_back_unopened_she_scans_again_and_it_opens(
    rig: Rig,
) -> None:
    answers = record_pickup_answers(rig.ctx)
    order, n = await _made_ready(rig, "latch")
    order_id = uuid.UUID(order["id"])
    token = token_of(order)
    unlocks = _unlocks(rig)

    rig.kiosk.scan(token)
    await until(lambda: len(answers) == 1, 10, "the first scan's answer")
    assert answers[0]["ok"] is True and rig.kiosk.compartments[n].lock_released
    await until(lambda: _latch_seen(rig, n), 10, "the service to see the latch released")

    # She does not pull the door. Scanning again meanwhile is told so, and is not a failure.
    rig.kiosk.scan(token)
    await until(lambda: len(answers) == 2, 10, "the second scan's answer")
    assert answers[1].get("error") == "door_unlocked"

    # The latch springs back with the door shut; the kiosk reports it in its snapshot.
    rig.kiosk.relatch(n)

    async def code_back() -> bool:
        async with rig.ctx.sessionmaker() as session:
            stored = await session.get(Order, order_id)
            return stored is not None and stored.code_used_at is None

    await until(code_back, 10, "the code given back")
    rig.kiosk.scan(token)
    await until(lambda: len(answers) == 3, 10, "the third scan's answer")
    assert answers[2]["ok"] is True and answers[2]["compartment"] == n
    assert _unlocks(rig) == unlocks + 2
    rig.kiosk.open_door(n)  # and this time the door opens: her food

    async with rig.ctx.sessionmaker() as session:
        failures = await session.scalar(
            select(func.count()).select_from(PickupAttempt).where(PickupAttempt.ok.is_(False))
        )
        actions = (
            await session.scalars(
                select(OrderEvent.action)
                .where(OrderEvent.order_id == order_id)
                .order_by(OrderEvent.id)
            )
        ).all()
    assert failures == 0
    codes_story = [a for a in actions if a.startswith("code_")]
    assert codes_story == ["code_accepted", "code_pending", "code_returned", "code_accepted"]
