"""Proof of disinfection in the story: a cycle's end carries the board's lamp record; a cycle
short of its UV dose (or whose record cannot be true) is not complete and runs again, with an
alert; the dose is on the food's record; lamp hours add up to an alert near the lamp's life."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.models import (
    Alert,
    Compartment,
    DisinfectionCycle,
    NotificationOutbox,
    Order,
    Timer,
)
from locker_service.timer_loop.loop import TimerLoop
from locker_service.timers.service import TimerKind
from tests.locker_service.conftest import make_settings
from tests.locker_service.world import (
    FakeKiosk,
    World,
    cycles_have_run,
    dropped_off,
    event,
    token_of,
    until_due,
)

SCALE = 3600.0
FULL = 1800  # the hold cycle (nominal seconds)
CLEANING = 300  # the cleaning cycle after a pickup


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url,
        time_scale=SCALE,
        hold_limit_s=360000.0,
        food_cooking_limit_s=360000.0,  # the food's deadline too: 4 s here by default
        cycle_watchdog_margin_s=0.0,
        # One full cycle's shine is 0.5 h: a lamp rated 0.6 h is near its end after one.
        uv_lamp_rated_hours=0.6,
        uv_lamp_warn_fraction=0.8,
    )


def lamp(
    on_s: float = FULL, dark: list[tuple[float, float]] | None = None, duration_s: float = FULL
) -> dict[str, Any]:
    stretches = dark or []
    return {
        "lamp": {
            "duration_s": duration_s,
            "elapsed_s": duration_s,
            "lamp_on_s": on_s,
            "interruptions": len(stretches),
            "dark": [{"at_s": at, "dark_s": lasted} for at, lasted in stretches],
        }
    }


async def held(
    client: httpx.AsyncClient, world: World, service: ServiceContext, ref: str
) -> tuple[dict[str, Any], int]:
    """An order dropped off, its cycle commanded and confirmed by the board."""
    order, n = await dropped_off(client, world, service, ref=ref)
    await TimerLoop(service).run_due()
    await event(service, world, "disinfection_started", n, duration_s=FULL)
    cycles_have_run(service)
    return order, n


async def order_state(service: ServiceContext, order_id: str) -> str:
    async with service.sessionmaker() as session:
        order = await session.get(Order, uuid.UUID(order_id))
        assert order is not None
        return order.state


async def cycles(service: ServiceContext, order_id: str) -> list[DisinfectionCycle]:
    async with service.sessionmaker() as session:
        return list(
            await session.scalars(
                select(DisinfectionCycle)
                .where(DisinfectionCycle.order_id == uuid.UUID(order_id))
                .order_by(DisinfectionCycle.id)
            )
        )


async def alerts(service: ServiceContext, kind: str) -> list[Alert]:
    async with service.sessionmaker() as session:
        return list(await session.scalars(select(Alert).where(Alert.kind == kind)))


async def test_a_full_dose_makes_the_food_ready_and_is_on_its_record(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, n = await held(app_client, world, service, "full-dose")
    await event(service, world, "disinfection_completed", n, **lamp())
    assert await order_state(service, order["id"]) == "ready"
    (cycle,) = await cycles(service, order["id"])
    assert (cycle.state, cycle.outcome) == ("completed", "dose_met")
    # A medium compartment: 0.08 mW/cm2 x 1800 s, against 95 % of it.
    assert cycle.dose_mj_cm2 == pytest.approx(144.0)
    assert cycle.dose_required_mj_cm2 == pytest.approx(136.8)
    record = await app_client.get(
        f"/api/v1/operator/orders/{order['id']}/record", headers=world.operator()
    )
    ended = [e["detail"] for e in record.json()["entries"] if e["what"] == "cycle_ended"]
    assert ended == ["completed: lamp lit 1800 s of 1800 s, 144.0 mJ/cm2 (136.8 required)"]


async def test_a_lamp_dark_mid_cycle_runs_the_cycle_again_and_the_record_shows_both(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await held(app_client, world, service, "dark-lamp")
    await event(service, world, "disinfection_completed", n, **lamp(1200, [(300, 600)]))
    assert await order_state(service, order["id"]) == "disinfecting"  # not ready
    (short,) = await cycles(service, order["id"])
    assert (short.state, short.outcome) == ("short", "short_dose")
    (alert,) = await alerts(service, "cycle_short_dose")
    assert "shone 1200 s of the 1800 s hold cycle (1 time dark)" in alert.message
    assert "96.0 of 136.8 mJ/cm2" in alert.message

    await until_due(service, TimerKind.START_HOLD_CYCLE)
    await TimerLoop(service).run_due()
    assert fake_kiosk.actions(n).count("start_disinfection") == 2  # the cycle runs again
    await event(service, world, "disinfection_started", n, duration_s=FULL)
    await event(service, world, "disinfection_completed", n, **lamp())
    assert await order_state(service, order["id"]) == "ready"
    first, second = await cycles(service, order["id"])
    assert (first.state, second.state) == ("short", "completed")

    record = await app_client.get(
        f"/api/v1/operator/orders/{order['id']}/record", headers=world.operator()
    )
    ended = [e["detail"] for e in record.json()["entries"] if e["what"] == "cycle_ended"]
    assert ended == [
        "short: lamp lit 1200 s of 1800 s, dark 1 time(s), 96.0 mJ/cm2 (136.8 required)",
        "completed: lamp lit 1800 s of 1800 s, 144.0 mJ/cm2 (136.8 required)",
    ]


async def test_a_record_no_board_could_make_proves_nothing_and_the_cycle_runs_again(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, n = await held(app_client, world, service, "forged-lamp")
    forged = lamp()
    forged["lamp"]["lamp_on_s"] = 3600  # lit twice as long as the cycle ran
    await event(service, world, "disinfection_completed", n, **forged)
    assert await order_state(service, order["id"]) == "disinfecting"
    (cycle,) = await cycles(service, order["id"])
    assert (cycle.state, cycle.outcome) == ("short", "impossible")
    (alert,) = await alerts(service, "cycle_report_impossible")
    assert alert.severity == "critical" and "lamp lit 3600 s" in alert.message
    async with service.sessionmaker() as session:
        c = await session.scalar(
            select(Compartment).where(
                Compartment.kiosk_id == world.kiosk_id, Compartment.number == n
            )
        )
    assert c is not None and c.lamp_on_s == 0  # a record that cannot be true adds no hours


async def test_an_older_board_s_cycle_completes_with_its_dose_not_reported(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, n = await held(app_client, world, service, "old-board")
    await event(service, world, "disinfection_completed", n)
    assert await order_state(service, order["id"]) == "ready"
    (cycle,) = await cycles(service, order["id"])
    assert (cycle.state, cycle.outcome, cycle.dose_mj_cm2) == ("completed", "not_reported", None)


async def test_lamp_hours_add_up_to_an_alert_near_the_lamp_s_life(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    _, n = await held(app_client, world, service, "lamp-life")
    await event(service, world, "disinfection_completed", n, **lamp())
    async with service.sessionmaker() as session:
        c = await session.scalar(
            select(Compartment).where(
                Compartment.kiosk_id == world.kiosk_id, Compartment.number == n
            )
        )
    assert c is not None and c.lamp_on_s == FULL
    (alert,) = await alerts(service, "uv_lamp_life")  # 0.5 h of a 0.6 h life, warned at 80 %
    assert "the UV-C lamp has shone 0.5 h of its rated 0.6 h: replace it" in alert.message


async def test_a_new_lamp_starts_its_hours_again_and_resolves_the_alert(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    _, n = await held(app_client, world, service, "new-lamp")
    await event(service, world, "disinfection_completed", n, **lamp())
    async with service.sessionmaker() as session:
        c = await session.scalar(
            select(Compartment).where(
                Compartment.kiosk_id == world.kiosk_id, Compartment.number == n
            )
        )
    assert c is not None
    url = f"/api/v1/operator/compartments/{c.id}/lamp-replaced"
    refused = await app_client.post(url, json={"reason": "x"}, headers=world.operator())
    assert refused.status_code == 422 and refused.json()["error"]
    answer = await app_client.post(
        url, json={"reason": "new 8 W UV-C tube"}, headers=world.operator()
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["lamp_on_s"] == 0 and body["lamp_fitted_at"]
    assert body["lamp_fitted_by"].startswith("new 8 W UV-C tube (operator ")
    (alert,) = await alerts(service, "uv_lamp_life")
    assert alert.resolved_at is not None
    stranger = await app_client.post(
        url,
        json={"reason": "not mine"},
        headers={"Authorization": f"Bearer {world.other_operator_token}"},
    )
    assert stranger.status_code in (403, 404)


async def test_a_lamp_short_cycle_after_cycle_has_failed_everyone_is_told_until_it_is_replaced(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """Three cycles in a row short of their dose (LOCKER_UV_MAX_SHORT_CYCLES): no fourth runs
    on that lamp; the purchaser, merchant and operator are told as for a lamp fault; a new lamp
    marked replaced starts the cycle again and the food becomes ready."""
    order, n = await held(app_client, world, service, "failing-lamp")
    starts = fake_kiosk.actions(n).count("start_disinfection")
    for attempt in range(1, 4):
        await event(service, world, "disinfection_completed", n, **lamp(600, [(600, 1200)]))
        if attempt < 3:
            await until_due(service, TimerKind.START_HOLD_CYCLE)
            await TimerLoop(service).run_due()
            await event(service, world, "disinfection_started", n, duration_s=FULL)
    assert fake_kiosk.actions(n).count("start_disinfection") == starts + 2  # not a third again
    assert [c.state for c in await cycles(service, order["id"])] == ["short"] * 3
    assert await order_state(service, order["id"]) == "disinfecting"
    async with service.sessionmaker() as session:
        pending = await session.scalar(
            select(Timer).where(
                Timer.kind == TimerKind.START_HOLD_CYCLE.value, Timer.state == "pending"
            )
        )
    assert pending is None

    (short,) = await alerts(service, "cycle_short_dose")
    assert "3 cycles in a row short: the lamp has failed" in short.message
    (fault,) = await alerts(service, "compartment_fault")
    assert fault.severity == "critical" and "uv_lamp_failed with food inside" in fault.message
    status = (await app_client.get(f"/api/v1/p/{token_of(order)}")).json()
    assert status["fault"] is True and status["fault_code"] == "uv_lamp_failed"
    page = (await app_client.get(f"/p/{token_of(order)}?lang=en")).text
    assert "A fault occurred in your compartment. Staff will contact you." in page
    merchant = await app_client.get(f"/api/v1/orders/{order['id']}", headers=world.merchant())
    assert [x["kind"] for x in merchant.json()["notices"]] == ["compartment_fault"]
    async with service.sessionmaker() as session:
        told = await session.scalar(
            select(NotificationOutbox).where(
                NotificationOutbox.order_id == uuid.UUID(order["id"]),
                NotificationOutbox.kind == "fault",
            )
        )
        c = await session.scalar(
            select(Compartment).where(
                Compartment.kiosk_id == world.kiosk_id, Compartment.number == n
            )
        )
    assert told is not None and c is not None

    # A new lamp: the cycle starts again at once, and the food becomes ready.
    replaced = await app_client.post(
        f"/api/v1/operator/compartments/{c.id}/lamp-replaced",
        json={"reason": "new 8 W UV-C tube"},
        headers=world.operator(),
    )
    assert replaced.status_code == 200, replaced.text
    status = (await app_client.get(f"/api/v1/p/{token_of(order)}")).json()
    assert status["fault"] is False and status["state"] == "disinfecting"
    (fault,) = await alerts(service, "compartment_fault")
    assert fault.resolved_at is not None
    await TimerLoop(service).run_due()
    assert fake_kiosk.actions(n).count("start_disinfection") == starts + 3
    await event(service, world, "disinfection_started", n, duration_s=FULL)
    await event(service, world, "disinfection_completed", n, **lamp())
    assert await order_state(service, order["id"]) == "ready"


def test_a_lamp_has_failed_after_so_many_short_cycles_in_a_row() -> None:
    from locker_service.foodsafety.uv_dose import lamp_failed

    assert lamp_failed(["short", "short", "short"], 3)
    assert not lamp_failed(["short", "short"], 3)  # not yet as many
    assert not lamp_failed(["short", "completed", "short", "short"], 3)  # not in a row
    assert not lamp_failed(["short", "aborted", "short"], 3)  # a door opened in between
    assert lamp_failed(["short"], 1)


async def test_an_empty_compartment_whose_lamp_failed_stays_out_of_use_until_a_new_lamp(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """The cleaning after a pickup, short three times: the compartment is not offered again
    and no fourth cycle runs until the lamp is marked replaced; then it cleans and is free."""
    order, n = await held(app_client, world, service, "cleaned-after")
    await event(service, world, "disinfection_completed", n, **lamp())
    code = (await app_client.get(f"/api/v1/p/{token_of(order)}")).json()["fallback_code"]
    picked = await app_client.post(
        "/api/v1/kiosk/pickup", json={"code": code}, headers=world.kiosk()
    )
    assert picked.status_code == 200, picked.text
    for kind in ("door_opened", "item_removed", "door_closed"):
        await event(service, world, kind, n)
    for _ in range(3):
        await until_due(service, TimerKind.START_CLEANING)
        await TimerLoop(service).run_due()
        await event(service, world, "disinfection_started", n, duration_s=CLEANING)
        await event(
            service, world, "disinfection_completed", n, **lamp(100, [(100, 200)], CLEANING)
        )
    async with service.sessionmaker() as session:
        c = await session.scalar(
            select(Compartment).where(
                Compartment.kiosk_id == world.kiosk_id, Compartment.number == n
            )
        )
        pending = await session.scalar(
            select(Timer).where(
                Timer.kind == TimerKind.START_CLEANING.value, Timer.state == "pending"
            )
        )
    assert c is not None and c.state == "cleaning" and pending is None
    (fault,) = await alerts(service, "compartment_fault")
    assert "uv_lamp_failed" in fault.message and "stays out of use" in fault.message
    starts = fake_kiosk.actions(n).count("start_disinfection")

    replaced = await app_client.post(
        f"/api/v1/operator/compartments/{c.id}/lamp-replaced",
        json={"reason": "new 8 W UV-C tube"},
        headers=world.operator(),
    )
    assert replaced.status_code == 200, replaced.text
    await TimerLoop(service).run_due()
    assert fake_kiosk.actions(n).count("start_disinfection") == starts + 1
    await event(service, world, "disinfection_started", n, duration_s=CLEANING)
    await event(service, world, "disinfection_completed", n, **lamp(CLEANING, None, CLEANING))
    async with service.sessionmaker() as session:
        cleaned = await session.get(Compartment, c.id)
    assert cleaned is not None and cleaned.state == "available"
