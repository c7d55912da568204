"""Food safety through the service: a site's profile sets the heat and the limits, cooked_at
is checked when the order is made, and food that breaks its profile (an excursion, a silent
sensor, its time up before ready) is refused at the kiosk with why, while the purchaser, the
merchant and the operator are told, and the discard is an audited opening that ends in a
clean compartment. The watch is run by calling its timer's handler on readings written with
their own timestamps: no waiting."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from locker_service.cli import app
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.foodsafety import profiles
from locker_service.foodsafety.profiles import BUILT_IN
from locker_service.models import (
    Alert,
    Compartment,
    DoorOpening,
    NotificationOutbox,
    Order,
    Timer,
    utcnow,
)
from locker_service.orders import codes
from locker_service.sites import service as sites
from locker_service.telemetry import repository as telemetry
from locker_service.telemetry.rollups import ReadingRow
from locker_service.timer_loop import handlers
from locker_service.timer_loop.loop import TimerLoop
from locker_service.timers.service import TimerKind
from locker_service.web import i18n
from tests.locker_service.conftest import make_settings
from tests.locker_service.world import (
    FakeKiosk,
    World,
    dropped_off,
    event,
    make_ready,
    token_of,
)
from tests.support.simulated_bank import (
    HELD_S,
    READING_EVERY_S,
    T0,
    Bank,
    door_held_open,
    drop_off_hot,
    first_below,
    heater_killed,
    limit_of,
)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, food_unknown_limit_s=900.0)


async def _profile(service: ServiceContext, world: World, name: str) -> None:
    async with session_scope(service.sessionmaker) as session:
        await sites.set_food_profile(session, world.site_code, name)


async def _deposited(
    client: httpx.AsyncClient, world: World, service: ServiceContext, ref: str, **body: object
) -> tuple[dict[str, object], int]:
    return await dropped_off(client, world, service, ref=ref, **body)


async def _order(service: ServiceContext, order_id: object) -> Order:
    async with service.sessionmaker() as session:
        order = await session.get(Order, uuid.UUID(str(order_id)))
        assert order is not None
        return order


async def _backdate(service: ServiceContext, order_id: object, by: timedelta) -> datetime:
    """The order as if dropped off `by` ago: its watch starts then. Returns that moment."""
    then = utcnow() - by
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Order)
            .where(Order.id == uuid.UUID(str(order_id)))
            .values(deposited_at=then, food_watch={"last_ts": then.isoformat()})
        )
    return then


async def _readings(
    service: ServiceContext, world: World, n: int, start: datetime, temps: list[float]
) -> None:
    """One reading every 30 s from `start`."""
    rows = [
        ReadingRow(world.kiosk_id, n, start + timedelta(seconds=30 * i), t, 65.0, True)
        for i, t in enumerate(temps)
    ]
    await telemetry.insert_readings(service.engine, rows)


async def _check(service: ServiceContext, order_id: object) -> None:
    """Run the order's food check now (its timer's handler, as the timer loop would)."""
    async with service.sessionmaker() as session:
        timer = await session.scalar(
            select(Timer).where(
                Timer.order_id == uuid.UUID(str(order_id)),
                Timer.kind == TimerKind.FOOD_CHECK.value,
                Timer.state == "pending",
            )
        )
    assert timer is not None, "no food check pending"
    await handlers.food_check(service, timer)


async def _told(
    client: httpx.AsyncClient, world: World, service: ServiceContext, order: dict[str, object]
) -> None:
    """Everyone in the story was told the food is unsafe, and the code opens nothing."""
    code = codes.fallback_code(service.settings.secret_key, token_of(order))  # type: ignore[arg-type]
    refused = await client.post("/api/v1/kiosk/pickup", json={"code": code}, headers=world.kiosk())
    assert refused.status_code == 409 and refused.json()["error"] == "food_unsafe", refused.text
    assert "food safety" in refused.json()["message"]
    page = (await client.get(f"/api/v1/p/{token_of(order)}")).json()
    assert page["food_unsafe"] is True and page["state"] == "expired"
    html = (await client.get(f"/p/{token_of(order)}")).text
    assert "For food safety your order can no longer be collected" in html
    zh = (await client.get(f"/p/{token_of(order)}?lang=zh-Hans")).text
    assert "出于食品安全" in zh
    merchant = (await client.get(f"/api/v1/orders/{order['id']}", headers=world.merchant())).json()
    assert [n["kind"] for n in merchant["notices"]] == ["food_unsafe"]
    async with service.sessionmaker() as session:
        message = await session.scalar(
            select(NotificationOutbox).where(
                NotificationOutbox.order_id == uuid.UUID(str(order["id"])),
                NotificationOutbox.kind == "food_unsafe",
            )
        )
        alert = await session.scalar(select(Alert).where(Alert.kind == "food_unsafe"))
        pending = await session.scalar(
            select(Timer).where(
                Timer.order_id == uuid.UUID(str(order["id"])),
                Timer.kind == TimerKind.FOOD_CHECK.value,
                Timer.state == "pending",
            )
        )
    assert message is not None and "can no longer be collected" in message.body
    assert alert is not None and alert.state == "open" and alert.severity == "critical"
    assert "Discard it" in alert.message
    assert pending is None


@pytest.mark.parametrize("name", ["us-fda", "uk-fsa", "cn"])
async def test_an_excursion_past_the_profile_s_rule_makes_the_food_unsafe_at_its_limit(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, name: str
) -> None:
    await _profile(service, world, name)
    rules = BUILT_IN[name]  # type: ignore[index]
    order, n = await _deposited(app_client, world, service, f"exc-{name}")
    start = await _backdate(service, order["id"], timedelta(hours=2))
    hot, cold = rules.setpoint_c, rules.floor_c - 2.0
    temps = [hot] * 20  # 10 minutes held
    if rules.excursions_allowed:  # uk-fsa: one period of 30 min is tolerated, then back hot
        temps += [cold] * 60 + [hot] * 20
    stretch_at = start + timedelta(seconds=30 * len(temps))
    temps += [cold] * 60 + [hot] * 20  # 30 minutes below: past the 15-minute grace
    await _readings(service, world, n, start, temps)
    await _check_ends_it_below_the_floor(app_client, world, service, order, rules, stretch_at)


async def _check_ends_it_below_the_floor(
    client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    order: dict[str, object],
    rules: profiles.Profile,
    below_since: datetime,
) -> None:
    """The food check ends the order as unsafe at the grace's end of the stretch below the
    floor that began at `below_since`, and everyone is told."""
    await _check(service, order["id"])
    spoiled = await _order(service, order["id"])
    assert spoiled.state == "expired"
    assert spoiled.food_unsafe_at == below_since + timedelta(seconds=rules.grace_s)
    assert f"below {rules.floor_c:g} °C" in (spoiled.failure_reason or "")
    await _told(client, world, service, order)


async def test_no_reading_for_longer_than_the_profile_allows_is_unsafe(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await _profile(service, world, "cn")
    order, n = await _deposited(app_client, world, service, "silent")
    start = await _backdate(service, order["id"], timedelta(minutes=40))
    await _readings(service, world, n, start, [65.0] * 20)  # 10 minutes, then nothing
    await _check(service, order["id"])
    spoiled = await _order(service, order["id"])
    assert spoiled.state == "expired"
    last = start + timedelta(seconds=30 * 19)
    assert spoiled.food_unsafe_at == last + timedelta(minutes=15)
    assert "no temperature reading for more than 15 min" in (spoiled.failure_reason or "")


async def test_readings_received_late_are_folded_into_the_food_s_watch(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """A takeover's readings, sent again by the kiosk and stored after the food check had
    folded newer ones (ADR 0098), still count: the check folds the food's record again from
    the drop-off, and the stretch below the floor they show makes the food unsafe at its limit."""
    await _profile(service, world, "us-fda")
    rules = BUILT_IN["us-fda"]
    order, n = await _deposited(app_client, world, service, "late-readings")
    start = await _backdate(service, order["id"], timedelta(minutes=40))
    hot, cold = rules.setpoint_c, rules.floor_c - 3.0
    temps = [hot] * 20 + [cold] * 40 + [hot] * 20  # 20 minutes below, in the middle
    hole = range(20, 48)  # 14 minutes nobody heard: under the silence limit (15 min)
    for i, t in enumerate(temps):  # what the service heard live: the stretch's last 6 minutes
        if i not in hole:
            await _readings(service, world, n, start + timedelta(seconds=30 * i), [t])
    await _check(service, order["id"])
    kept = await _order(service, order["id"])
    assert kept.state == "deposited" and kept.food_watch is not None  # 6 min: within the grace
    assert kept.food_watch["readings"] == 51  # the first reading is the drop-off's own moment
    below_since = start + timedelta(seconds=30 * 20)
    await _readings(service, world, n, below_since, [cold] * len(hole))
    await _check_ends_it_below_the_floor(app_client, world, service, order, rules, below_since)


async def test_late_readings_that_show_the_food_kept_hot_leave_it_safe(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await _profile(service, world, "us-fda")
    order, n = await _deposited(app_client, world, service, "late-but-hot")
    start = await _backdate(service, order["id"], timedelta(minutes=30))
    await _readings(service, world, n, start, [63.0] * 10)
    await _readings(service, world, n, start + timedelta(minutes=15), [64.0] * 20)
    await _check(service, order["id"])
    await _readings(service, world, n, start + timedelta(minutes=5), [62.5] * 20)  # the hole
    await _readings(service, world, n, start + timedelta(minutes=5), [62.5])  # stored twice
    await _check(service, order["id"])
    kept = await _order(service, order["id"])
    assert kept.state == "deposited" and kept.food_watch is not None
    assert kept.food_watch["readings"] == 49  # every moment once, the drop-off's excepted
    assert kept.food_watch["min_c"] == 62.5  # the late readings are in the record it keeps


async def _food_check_timers(service: ServiceContext) -> dict[uuid.UUID, Timer]:
    async with service.sessionmaker() as session:
        found = await session.scalars(
            select(Timer).where(Timer.kind == TimerKind.FOOD_CHECK.value, Timer.state == "pending")
        )
        return {t.order_id: t for t in found if t.order_id is not None}


async def _all_due_now(service: ServiceContext) -> None:
    """Every food check due now, once the drop-offs' other timers (their hold cycles) ran."""
    await TimerLoop(service).run_due()
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Timer)
            .where(Timer.kind == TimerKind.FOOD_CHECK.value)
            .values(due_at=utcnow() - timedelta(seconds=1))
        )


async def _run_due_reading(service: ServiceContext) -> tuple[int, list[str]]:
    """One run of the timer loop: how many timers it ran, and the statements it sent that
    read readings."""
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "temperature_readings" in statement:
            statements.append(statement)

    engine = service.engine.sync_engine
    sa_event.listen(engine, "before_cursor_execute", seen)
    try:
        ran = await TimerLoop(service).run_due()
    finally:
        sa_event.remove(engine, "before_cursor_execute", seen)
    return ran, statements


@pytest.fixture
def slots_a_day_apart(service: ServiceContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """A day between a kiosk's slots: drop-offs a moment apart all but never straddle one
    (with a minute, about one test in two hundred would), and no check falls due by itself
    while the test sets them up."""
    monkeypatch.setattr(service.settings, "food_check_s", 24 * 3600.0)


@pytest.mark.usefixtures("slots_a_day_apart")
async def test_a_kiosk_s_food_checks_fall_due_together_and_run_as_one(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """A kiosk's food checks are scheduled at its own slot, so they fall due at one instant,
    and the timer loop runs them as one: one count and one read of readings for all its
    compartments, however many orders it holds (ADR 0104). A check per order read them once
    per order, and at a fleet's size those reads were the service's main load."""
    period = timedelta(seconds=service.settings.food_check_s)
    await _profile(service, world, "us-fda")
    rules = BUILT_IN["us-fda"]
    held = [await _deposited(app_client, world, service, f"together-{i}") for i in range(3)]
    scheduled = await _food_check_timers(service)
    due = {scheduled[uuid.UUID(str(o["id"]))].due_at for o, _ in held}
    assert len(due) == 1  # dropped off at different moments, checked at the same one
    (slot,) = due
    deposited = [(await _order(service, o["id"])).deposited_at for o, _ in held]
    assert all(d is not None and d < slot <= d + period for d in deposited)

    for i, (order, n) in enumerate(held):
        start = await _backdate(service, order["id"], timedelta(minutes=10 + i))
        await _readings(service, world, n, start, [rules.setpoint_c - i] * (20 + 2 * i))
    await _all_due_now(service)
    ran, statements = await _run_due_reading(service)
    assert ran == 3
    assert len(statements) == 2, statements  # one count, one read: not two per order

    after = await _food_check_timers(service)
    assert len({after[uuid.UUID(str(o["id"]))].due_at for o, _ in held}) == 1
    for i, (order, _) in enumerate(held):
        kept = await _order(service, order["id"])
        assert kept.state == "deposited" and kept.food_watch is not None
        assert kept.food_watch["readings"] == 19 + 2 * i  # each its own, the drop-off's excepted
        assert kept.food_watch["min_c"] == rules.setpoint_c - i
        assert after[kept.id].attempts == 0 and after[kept.id].due_at > utcnow()


async def _cold_warm_and_third(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, third: str
) -> tuple[dict[str, dict[str, object]], dict[str, int], dict[str, datetime]]:
    """Three orders held 40 minutes at the kiosk, their checks due: "cold" never brought up
    to heat, the two others kept hot. Returns the orders, compartments and drop-offs by name."""
    await _profile(service, world, "us-fda")
    rules = BUILT_IN["us-fda"]
    orders, numbers, starts = {}, {}, {}
    for name in ("cold", "warm", third):
        orders[name], numbers[name] = await _deposited(app_client, world, service, name)
        starts[name] = await _backdate(service, orders[name]["id"], timedelta(minutes=40))
        temps = [rules.floor_c - 3.0 if name == "cold" else rules.setpoint_c] * 80
        await _readings(service, world, numbers[name], starts[name], temps)
    await _all_due_now(service)
    return orders, numbers, starts


async def _ended_unsafe(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, order: dict[str, object]
) -> None:
    spoiled = await _order(service, order["id"])
    assert spoiled.state == "expired" and spoiled.food_unsafe_at is not None
    floor = BUILT_IN["us-fda"].floor_c
    assert f"not brought up to {floor:g} °C" in (spoiled.failure_reason or "")
    await _told(app_client, world, service, order)
    assert str(spoiled.id) not in {str(k) for k in await _food_check_timers(service)}


async def _waits_for_its_lease(service: ServiceContext, order: dict[str, object]) -> None:
    """Its check failed once: tried again once its lease ends."""
    timer = (await _food_check_timers(service))[uuid.UUID(str(order["id"]))]
    assert timer.attempts == 1 and timer.locked_until is not None


async def _kept_and_due_again(service: ServiceContext, order: dict[str, object]) -> None:
    kept = await _order(service, order["id"])
    assert kept.state == "deposited" and kept.food_watch is not None
    assert kept.food_watch["readings"] == 79  # every reading, the drop-off's own excepted
    timer = (await _food_check_timers(service))[kept.id]
    assert timer.attempts == 0 and timer.due_at > utcnow()


@pytest.mark.usefixtures("slots_a_day_apart")
async def test_food_checks_run_together_end_the_unsafe_one_and_keep_the_others(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """In a kiosk's checks run as one, the order whose food never got hot ends as unsafe and
    everyone is told, while the others' watches are kept and their checks come again."""
    orders, _, _ = await _cold_warm_and_third(app_client, world, service, "hot")
    ran, statements = await _run_due_reading(service)
    assert ran == 3 and len(statements) == 2  # the batch ran: not each check on its own
    await _ended_unsafe(app_client, world, service, orders["cold"])
    await _kept_and_due_again(service, orders["warm"])
    await _kept_and_due_again(service, orders["hot"])


@pytest.mark.usefixtures("slots_a_day_apart")
async def test_an_unsafe_order_that_cannot_be_ended_fails_alone_in_its_kiosk_s_checks(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ending one order of a kiosk's checks run as one fails (here the step raises): that
    check alone is tried again after its lease, the others' are done and not read again."""
    orders, _, _ = await _cold_warm_and_third(app_client, world, service, "hot")

    async def refused(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the order cannot be ended now")

    monkeypatch.setattr(handlers.Story, "spoil", refused)
    ran, statements = await _run_due_reading(service)
    assert ran == 3 and len(statements) == 2  # not run again one by one
    await _waits_for_its_lease(service, orders["cold"])
    assert (await _order(service, orders["cold"]["id"])).state == "deposited"
    await _kept_and_due_again(service, orders["warm"])
    await _kept_and_due_again(service, orders["hot"])


@pytest.mark.usefixtures("slots_a_day_apart")
async def test_a_food_check_due_before_its_order_s_hold_expiry_runs_first(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """Claimed in one look with the hold expiry due after it, the food check (run in a batch)
    still runs first: food held too cold ends as unsafe, with why, rather than as merely not
    collected, which would tell nobody that the food must not be eaten."""
    await _profile(service, world, "us-fda")
    rules = BUILT_IN["us-fda"]
    order, n = await make_ready(app_client, world, service, ref="cold-at-the-end")
    start = await _backdate(service, order["id"], timedelta(minutes=60))
    await _readings(service, world, n, start, [rules.setpoint_c] * 20 + [rules.floor_c - 3] * 100)
    async with session_scope(service.sessionmaker) as session:
        for kind, ago in ((TimerKind.FOOD_CHECK, 2), (TimerKind.HOLD_EXPIRY, 1)):
            await session.execute(
                update(Timer)
                .where(Timer.order_id == uuid.UUID(str(order["id"])), Timer.kind == kind.value)
                .values(due_at=utcnow() - timedelta(seconds=ago))
            )
    await TimerLoop(service).run_due()
    spoiled = await _order(service, order["id"])
    assert spoiled.state == "expired" and spoiled.food_unsafe_at is not None
    assert f"below {rules.floor_c:g} °C" in (spoiled.failure_reason or "")


@pytest.mark.usefixtures("slots_a_day_apart")
async def test_a_kiosk_s_checks_that_cannot_run_together_run_each_alone(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch itself fails (here one compartment's readings cannot be read, and the kiosk's
    are read at once): the timer loop runs each check on its own, so the cold one still ends
    as unsafe and the warm one is kept, and only the one that fails again waits for its lease."""
    orders, numbers, starts = await _cold_warm_and_third(app_client, world, service, "stuck")
    read = telemetry.readings_since_each

    async def unreadable(
        session: AsyncSession, kiosk_id: int, since: dict[int, datetime], end: datetime
    ) -> dict[int, list[tuple[datetime, float | None]]]:
        if numbers["stuck"] in since:
            raise RuntimeError("the stuck compartment's readings cannot be read")
        return await read(session, kiosk_id, since, end)

    monkeypatch.setattr(telemetry, "readings_since_each", unreadable)
    ran, statements = await _run_due_reading(service)
    assert ran == 3 and len(statements) > 2  # the batch, then each on its own
    await _ended_unsafe(app_client, world, service, orders["cold"])
    await _kept_and_due_again(service, orders["warm"])
    await _waits_for_its_lease(service, orders["stuck"])
    unchanged = await _order(service, orders["stuck"]["id"])
    assert unchanged.food_watch == {"last_ts": starts["stuck"].isoformat()}  # nothing folded


async def test_food_kept_hot_stays_safe_and_its_watch_is_kept(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await _profile(service, world, "us-fda")
    order, n = await _deposited(app_client, world, service, "kept-hot")
    start = await _backdate(service, order["id"], timedelta(minutes=10))
    await _readings(service, world, n, start, [63.0, 55.0, 55.0, 63.0] + [63.5] * 15)
    await _check(service, order["id"])
    kept = await _order(service, order["id"])
    assert kept.state == "deposited" and kept.food_unsafe_at is None
    assert kept.food_watch is not None and kept.food_watch["min_c"] == 55.0
    assert kept.food_watch["excursions"] == 0  # a 90-second door dip


async def test_cooked_at_is_checked_when_the_order_is_made(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await _profile(service, world, "us-fda")  # 4 h from cooking; needs the cycle + 30 min
    now = utcnow()

    async def made(ref: str, cooked_at: str) -> httpx.Response:
        body = world.order_body(ref, cooked_at=cooked_at)
        return await app_client.post("/api/v1/orders", json=body, headers=world.merchant())

    late = await made("late", (now - timedelta(hours=3, minutes=30)).isoformat())
    assert late.status_code == 422 and late.json()["error"] == "too_little_food_safety_time"
    assert "us-fda" in late.json()["message"]
    ahead = await made("ahead", (now + timedelta(minutes=10)).isoformat())
    assert ahead.status_code == 422 and ahead.json()["error"] == "cooked_at_in_future"
    naive = await made("naive", (now - timedelta(hours=1)).replace(tzinfo=None).isoformat())
    assert naive.status_code == 422 and naive.json()["error"] == "validation_error"
    cooked = now - timedelta(hours=1)
    fine = await made("fine", cooked.isoformat())
    assert fine.status_code == 201, fine.text
    assert datetime.fromisoformat(fine.json()["cooked_at"]) == cooked
    again = await made("fine", cooked.isoformat())  # the same order, idempotent
    assert again.json()["id"] == fine.json()["id"]
    async with service.sessionmaker() as session:
        refused = await session.scalar(select(Order).where(Order.external_ref == "late"))
    assert refused is None  # nothing written


async def test_food_that_ran_short_of_time_on_its_way_stays_out_of_the_locker(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """Accepted with time to spare, the food spent it on the way (ADR 0124): at the kiosk it
    has too little left for the cycle and her window. No compartment opens; the courier is told
    to take it back, in his language; the order ends now as unsafe, she and the merchant told."""
    await _profile(service, world, "us-fda")  # 4 h from cooking; needs the cycle + 30 min
    body = world.order_body("slow", cooked_at=(utcnow() - timedelta(hours=1)).isoformat())
    made = await app_client.post("/api/v1/orders", json=body, headers=world.merchant())
    assert made.status_code == 201, made.text
    async with session_scope(service.sessionmaker) as session:  # three hours on the road
        await session.execute(
            update(Order)
            .where(Order.external_ref == "slow")
            .values(cooked_at=utcnow() - timedelta(hours=3, minutes=45))
        )
    refused = await app_client.post(
        "/api/v1/kiosk/dropoff", json=world.dropoff_body("slow"), headers=world.kiosk()
    )
    assert refused.status_code == 409 and refused.json()["error"] == "food_too_old"
    assert fake_kiosk.unlocks() == []
    async with service.sessionmaker() as session:
        order = await session.scalar(select(Order).where(Order.external_ref == "slow"))
        told = await session.scalar(
            select(NotificationOutbox.kind).where(
                NotificationOutbox.order_id == uuid.UUID(made.json()["id"])
            )
        )
        free = await session.scalars(
            select(Compartment.state).where(Compartment.kiosk_id == world.kiosk_id)
        )
        states = set(free.all())
    assert order is not None and order.state == "expired" and order.food_unsafe_at is not None
    assert order.failure_reason is not None and "safe time was left" in order.failure_reason
    assert told == "food_unsafe" and states == {"available"}
    notices = (await app_client.get(f"/api/v1/orders/{order.id}", headers=world.merchant())).json()[
        "notices"
    ]
    assert [n["kind"] for n in notices] == ["food_unsafe"]
    catalogues = i18n.CATALOGUES
    assert "take it back" in catalogues["en"]["error.food_too_old"]
    assert "带回商家" in catalogues["zh-Hans"]["error.food_too_old"]


async def test_the_clock_runs_from_cooking_before_and_after_ready(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
) -> None:
    await _profile(service, world, "uk-fsa")
    cooked = utcnow() - timedelta(hours=2)
    order, n = await _deposited(app_client, world, service, "clock", cooked_at=cooked.isoformat())
    deposited = await _order(service, order["id"])
    assert deposited.food_deadline == cooked + timedelta(hours=4)
    await TimerLoop(service).run_due()  # the hold cycle starts at the profile's setpoint
    assert ("set_heater", {"setpoint_c": 68.0}) in [
        (action, args) for _, action, c, args in fake_kiosk.commands if c == n
    ]
    # Its time runs out while still being disinfected: unsafe at the deadline.
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Order)
            .where(Order.id == deposited.id)
            .values(food_deadline=utcnow() - timedelta(seconds=1))
        )
    deadline = (await _order(service, order["id"])).food_deadline
    await _check(service, order["id"])
    spoiled = await _order(service, order["id"])
    assert spoiled.state == "expired" and spoiled.food_unsafe_at == deadline
    assert spoiled.failure_reason == "food no longer safe: its time ran out before it was ready"
    await _told(app_client, world, service, order)
    # After ready, her hold ends at the food's deadline when that comes first.
    ready, _ = await make_ready(app_client, world, service, cooked_at=cooked.isoformat())
    held = await _order(service, ready["id"])
    assert held.hold_until == cooked + timedelta(hours=4)
    assert held.ready_at is not None and held.hold_until < held.ready_at + timedelta(hours=4)


async def test_the_discard_is_an_audited_opening_and_the_compartment_is_cleaned(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
) -> None:
    await _profile(service, world, "cn")
    order, n = await _deposited(app_client, world, service, "discard")
    start = await _backdate(service, order["id"], timedelta(hours=1))
    await _readings(service, world, n, start, [65.0] * 10 + [50.0] * 60)
    await _check(service, order["id"])
    assert (await _order(service, order["id"])).state == "expired"
    async with service.sessionmaker() as session:
        c = await session.scalar(
            select(Compartment).where(
                Compartment.kiosk_id == world.kiosk_id, Compartment.number == n
            )
        )
    assert c is not None and c.state == "occupied"  # nothing says removed before it is
    opened = await app_client.post(
        f"/api/v1/operator/compartments/{c.id}/open",
        json={"reason": "discard: unsafe food"},
        headers=world.operator(),
    )
    assert opened.status_code == 200, opened.text
    assert fake_kiosk.unlocks()[-1] == n
    for kind in ("door_opened", "item_removed", "door_closed"):
        await event(service, world, kind, n)
    async with service.sessionmaker() as session:
        opening = await session.scalar(
            select(DoorOpening).where(DoorOpening.why == "discard: unsafe food")
        )
        cleaned = await session.get(Compartment, c.id)
    assert opening is not None and opening.order_id == uuid.UUID(str(order["id"]))
    assert cleaned is not None and cleaned.state == "cleaning"


async def test_operators_see_each_site_s_profile(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await _profile(service, world, "uk-fsa")
    listed = (await app_client.get("/api/v1/operator/sites", headers=world.operator())).json()
    rules = {s["code"]: s["food_safety"] for s in listed}[world.site_code]
    assert rules["name"] == "uk-fsa" and rules["floor_c"] == 63.0
    assert rules["excursions_allowed"] == 1 and rules["excursion_limit_s"] == 7200.0


def test_lockerctl_sets_a_site_s_profile(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'locker.db'}"
    runner = CliRunner()
    made = runner.invoke(
        app, ["create-site", "--code", "hq", "--name", "HQ", "--database-url", url]
    )
    assert made.exit_code == 0, made.output
    chosen = runner.invoke(
        app, ["set-food-profile", "--site", "hq", "--profile", "uk-fsa", "--database-url", url]
    )
    assert chosen.exit_code == 0, chosen.output
    assert "uk-fsa, floor 63 °C, setpoint 68 °C" in chosen.output
    wrong = runner.invoke(
        app, ["set-food-profile", "--site", "hq", "--profile", "eu", "--database-url", url]
    )
    assert wrong.exit_code != 0 and "unknown food-safety profile" in wrong.output


async def test_a_rebooted_board_heats_the_food_it_holds_again(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
) -> None:
    await _profile(service, world, "uk-fsa")
    hot, n = await _deposited(app_client, world, service, "reboot-hot")
    ambient, m = await _deposited(
        app_client, world, service, "reboot-ambient", temperature_class="ambient"
    )
    await TimerLoop(service).run_due()

    def heats(compartment: int) -> int:
        return sum(
            1
            for _, action, c, args in fake_kiosk.commands
            if c == compartment and action == "set_heater" and args == {"setpoint_c": 68.0}
        )

    before = heats(n)
    await event(service, world, "board_rebooted")  # its heaters start off
    await TimerLoop(service).run_due()
    assert heats(n) == before + 1
    assert heats(m) == 0  # ambient food is not heated
    assert (await _order(service, hot["id"])).state == "deposited"
    assert (await _order(service, ambient["id"])).state == "deposited"


async def test_the_food_s_record_for_operators_and_its_sum_for_the_purchaser(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await _profile(service, world, "us-fda")
    order, n = await _deposited(app_client, world, service, "record")
    start = await _backdate(service, order["id"], timedelta(minutes=30))
    await _readings(service, world, n, start, [63.0] * 20 + [62.0] * 40)
    await _check(service, order["id"])
    url = f"/api/v1/operator/orders/{order['id']}/record"
    record = (await app_client.get(url, headers=world.operator())).json()
    assert record["state"] == "deposited" and record["compartment_number"] == n
    assert len(record["points"]) == 60  # every reading: fewer than the chart's 500
    assert [p["temp_c"] for p in record["points"][:21]] == [63.0] * 20 + [62.0]
    kept = record["kept"]
    assert (kept["readings"], kept["min_c"], kept["max_c"], kept["mean_c"]) == (
        60,
        62.0,
        63.0,
        62.3,
    )
    assert kept["minutes"] == 30
    steps = [e["what"] for e in record["entries"]]
    assert {"create", "assign", "door_opened", "deposit"} <= set(steps), steps
    times = [e["at"] for e in record["entries"]]
    assert times == sorted(times)
    kiosk = (
        await app_client.get(f"/api/v1/operator/kiosks/{world.kiosk_id}", headers=world.operator())
    ).json()
    [cell] = [c for c in kiosk["compartments"] if c["number"] == n]
    deadline = (await _order(service, order["id"])).food_deadline
    assert deadline is not None
    assert (
        datetime.fromisoformat(cell["order"]["food_deadline"]) == deadline
    )  # the grid's time left
    hidden = await app_client.get(
        url, headers={"Authorization": f"Bearer {world.other_operator_token}"}
    )
    assert hidden.status_code == 404  # another site's operator does not see it
    page = (await app_client.get(f"/p/{token_of(order)}")).text
    assert "Kept at about 62 °C, never below 62 °C, for 30 minutes since it arrived" in page
    temps = page.split('data-temps="', 1)[1].split('"', 1)[0].split(",")
    assert temps == ["63.0"] * 20 + ["62.0"] * 40  # her line: the same readings as the record
    zh = (await app_client.get(f"/p/{token_of(order)}?lang=zh-Hans")).text
    assert "送达后已保温 30 分钟" in zh


@pytest.mark.parametrize("name", ["us-fda", "uk-fsa", "cn"])
@pytest.mark.parametrize("trouble", [door_held_open, heater_killed], ids=lambda t: t.__name__)
async def test_the_simulated_board_s_readings_spoil_the_food_at_the_limit_and_all_are_told(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    name: str,
    trouble: Callable[[Bank], Callable[[], None]],
) -> None:
    """What the simulated board reads through its door held open, or its heater dead, stored
    as the bridge's telemetry is and checked by the food's timer: unsafe exactly at the
    profile's limit, and the code refused, the purchaser, merchant and operator told."""
    await _profile(service, world, name)
    rules = profiles.for_site(service.settings, name)
    bank = drop_off_hot(rules)
    bank.run(limit_of(rules).total_seconds() + 20 * 60, trouble(bank))
    order, n = await _deposited(app_client, world, service, f"sim-{name}-{trouble.__name__}")
    span = bank.readings[-1][0] - T0
    start = await _backdate(service, order["id"], span + timedelta(minutes=1))
    shift = start + timedelta(seconds=READING_EVERY_S) - T0  # the first reading after it
    await telemetry.insert_readings(
        service.engine,
        [
            ReadingRow(world.kiosk_id, n, at + shift, c, rules.setpoint_c, True)
            for at, c in bank.readings
        ],
    )
    await _check(service, order["id"])
    spoiled = await _order(service, order["id"])
    assert spoiled.state == "expired", spoiled.failure_reason
    trouble_at = T0 + timedelta(seconds=HELD_S)
    assert spoiled.food_unsafe_at == first_below(rules, bank, trouble_at) + shift + limit_of(rules)
    assert f"below {rules.floor_c:g} °C" in (spoiled.failure_reason or "")
    await _told(app_client, world, service, order)
