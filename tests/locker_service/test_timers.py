"""Durable timers: reminders, expiry, the drop-off timeout, the cycle watchdog, and claiming by
several loops at once (each timer runs once)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from firmware_bridge import contract
from locker_service.alerts.service import raise_compartment_alert, resolve_alerts
from locker_service.compartments import service as doors
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.kiosks.handler import StoryHandler
from locker_service.lifecycles import save_step
from locker_service.models import (
    Alert,
    Compartment,
    DisinfectionCycle,
    Kiosk,
    NotificationOutbox,
    Order,
    Timer,
    utcnow,
)
from locker_service.orders import codes
from locker_service.runtime import Runtime
from locker_service.timer_loop import handlers
from locker_service.timer_loop.handlers import BatchOutcome
from locker_service.timer_loop.loop import TimerLoop
from locker_service.timers import service as timers
from locker_service.timers.service import TimerKind
from tests.locker_service.conftest import make_settings
from tests.locker_service.world import (
    FakeKiosk,
    World,
    board_snapshot,
    compartment,
    create_order,
    cycles_have_run,
    dropped_off,
    due_now,
    event,
    make_ready,
    order_of,
    token_of,
    until_due,
)
from tests.support.row_locks import first_of

SCALE = 3600.0  # an hour of nominal time per real second


@pytest.fixture
def settings(database_url: str) -> Settings:
    # reminder after 30 nominal minutes = 0.5 s; drop-off door timeout 300 s = 0.08 s;
    # hold limit 100 nominal hours = 100 s, far past any test's run even on a starved machine,
    # so only the reminder fires
    return make_settings(
        database_url,
        time_scale=SCALE,
        hold_limit_s=360000.0,
        cycle_watchdog_margin_s=0.0,
        # An order never dropped off expires after 100 nominal hours (100 s): a test that is
        # not about it never meets it, even on a starved machine; the one that is brings its
        # timer forward.
        dropoff_window_s=360000.0,
        # The food's own deadline (4 nominal hours from its cooking: 4 s here) likewise: a
        # starved machine once let it pass mid-test, the food check ended the order as unsafe,
        # and the cycle start under test was never sent again.
        food_cooking_limit_s=360000.0,
    )


async def _state(service: ServiceContext, order_id: str) -> str:
    async with service.sessionmaker() as session:
        order = await session.get(Order, uuid.UUID(order_id))
        assert order is not None
        return order.state


async def _courier_names(client: httpx.AsyncClient, world: World, ref: str) -> httpx.Response:
    return await client.post(
        "/api/v1/kiosk/dropoff",
        json={"courier_code": world.courier_code, "pin": world.courier_pin, "order_ref": ref},
        headers=world.kiosk(),
    )


async def _unconfirmed(
    client: httpx.AsyncClient,
    world: World,
    runtime: Runtime,
    fake_kiosk: FakeKiosk,
    ref: str,
    unlocks: int = 1,
) -> tuple[str, int]:
    """An order whose courier's unlock the kiosk took and never answered (`unlocks` of them
    will not be answered), then a board report of its compartment shut, latched and empty:
    (the order's id, the compartment number)."""
    order = await create_order(client, world, ref=ref)
    fake_kiosk.answers["unlock"] = ["no_final_answer"] * unlocks
    answer = await _courier_names(client, world, ref)
    assert answer.json()["error"] == "dropoff_unconfirmed"
    n = answer.json()["compartment"]
    await runtime.story.on_snapshot(world.kiosk_code, board_snapshot(n, occupied=False))
    return order["id"], n


async def _deposited(
    client: httpx.AsyncClient, world: World, service: ServiceContext, ref: str
) -> tuple[dict[str, Any], int]:
    """An order dropped off and shut in with food: (order as created, compartment number)."""
    return await dropped_off(client, world, service, ref=ref)


async def _start_timer(service: ServiceContext) -> Timer:
    """The order's cycle start timer, as the database has it now."""
    async with service.sessionmaker() as session:
        timer = await session.scalar(
            select(Timer).where(Timer.kind == TimerKind.START_HOLD_CYCLE.value)
        )
    assert timer is not None
    return timer


async def _start_timer_runs_again(service: ServiceContext) -> None:
    """The cycle start timer's first run died before marking it done: it is due again."""
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Timer)
            .where(Timer.kind == TimerKind.START_HOLD_CYCLE.value)
            .values(state="pending", locked_until=None, due_at=utcnow())
        )


async def test_reminder_after_thirty_minutes_once(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, _ = await make_ready(app_client, world, service)
    await until_due(service, TimerKind.REMINDER)
    loop = TimerLoop(service)
    await loop.run_due()
    await loop.run_due()
    assert await _messages(service, order) == ["ready", "reminder"]


async def _messages(service: ServiceContext, order: dict[str, Any]) -> list[str]:
    """The kinds of the messages queued for her, sorted."""
    async with service.sessionmaker() as session:
        kinds = await session.scalars(
            select(NotificationOutbox.kind).where(
                NotificationOutbox.order_id == uuid.UUID(order["id"])
            )
        )
        return sorted(kinds.all())


async def test_a_reminder_due_while_her_code_opens_the_door_waits_for_the_unlock(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """Her code accepted a moment before her reminder fell due: no "still waiting at the
    locker" while she opens the door; it looks again once the unlock's time is over, and her
    food taken meanwhile ends it."""
    order, n = await make_ready(app_client, world, service)
    code = codes.fallback_code(service.settings.secret_key, token_of(order))
    answer = await app_client.post(
        "/api/v1/kiosk/pickup", json={"code": code}, headers=world.kiosk()
    )
    assert answer.status_code == 200, answer.text
    await due_now(service, TimerKind.REMINDER)
    await TimerLoop(service).run_due()
    assert await _messages(service, order) == ["ready"]
    async with service.sessionmaker() as session:
        waiting = await session.scalar(select(Timer).where(Timer.kind == TimerKind.REMINDER))
    assert waiting is not None and waiting.state == "pending" and waiting.due_at > utcnow()
    for kind in ("door_opened", "item_removed", "door_closed"):
        await event(service, world, kind, n)
    async with service.sessionmaker() as session:
        state = await session.scalar(select(Timer.state).where(Timer.id == waiting.id))
    assert state == "cancelled"  # picked up: nothing to remind her of


async def test_a_courier_who_walks_away_frees_the_compartment(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, runtime: Runtime
) -> None:
    order = await create_order(app_client, world, ref="walked")
    answer = await _courier_names(app_client, world, "walked")
    n = answer.json()["compartment"]
    await until_due(service, TimerKind.DROPOFF_TIMEOUT)
    loop = TimerLoop(service)
    await loop.run_due()
    # nothing heard from the kiosk since the unlock: it does not guess, it waits
    assert await _state(service, order["id"]) == "assigned"
    handler = runtime.story

    async def board_says(lock_released: bool) -> None:
        await handler.on_snapshot(
            world.kiosk_code, _idle(n, occupied=False, lock_released=lock_released)
        )
        async with session_scope(service.sessionmaker) as session:
            await session.execute(
                update(Timer)
                .where(Timer.kind == TimerKind.DROPOFF_TIMEOUT.value)
                .values(due_at=utcnow(), locked_until=None)
            )
        await loop.run_due()

    await board_says(lock_released=True)
    # released but the door not yet seen open: the courier may be opening it right now
    assert await _state(service, order["id"]) == "assigned"
    await board_says(lock_released=False)  # the latch sprang back, the door never opened
    assert await _state(service, order["id"]) == "created"
    assert (await compartment(service, world, n)).state == "available"


async def test_an_unconfirmed_drop_off_whose_door_never_opened_is_freed_by_its_door_timer(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    runtime: Runtime,
    fake_kiosk: FakeKiosk,
) -> None:
    """The kiosk took the unlock and never answered; the courier walked away. Once the board
    shows the door shut, the latch holding and nothing inside, the door timer gives the order
    back to the merchant's couriers and the compartment to the next one (ADR 0088)."""
    order_id, n = await _unconfirmed(app_client, world, runtime, fake_kiosk, "unconfirmed")
    await until_due(service, TimerKind.DROPOFF_TIMEOUT)
    await TimerLoop(service).run_due()
    assert await _state(service, order_id) == "created"
    assert (await compartment(service, world, n)).state == "available"


async def test_the_door_timer_believes_a_kiosk_behind_by_as_much_as_its_messages_show(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    runtime: Runtime,
    fake_kiosk: FakeKiosk,
) -> None:
    """A kiosk 3 s behind stamps the report it makes after the unlock 3 s early: read as the
    kiosk link measured its clock, it is news, and the compartment is freed; read at face
    value it would look older than the unlock for ever (ADR 0089)."""
    order = await create_order(app_client, world, ref="behind")
    fake_kiosk.answers["unlock"] = ["no_final_answer"]
    n = (await _courier_names(app_client, world, "behind")).json()["compartment"]
    fake_kiosk.clock_behind[world.kiosk_code] = 3.5
    made_now = board_snapshot(n, occupied=False, ts=utcnow() - timedelta(seconds=3))
    await runtime.story.on_snapshot(world.kiosk_code, made_now)
    await until_due(service, TimerKind.DROPOFF_TIMEOUT)
    await TimerLoop(service).run_due()
    assert await _state(service, order["id"]) == "created"
    assert (await compartment(service, world, n)).state == "available"


async def test_after_a_retry_the_door_timer_waits_for_a_report_newer_than_the_last_unlock(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    runtime: Runtime,
    fake_kiosk: FakeKiosk,
) -> None:
    """Unconfirmed, the board says shut and empty, the courier asks again, unconfirmed again,
    and the kiosk goes quiet: the board's word from before the second unlock says nothing of
    it, so the compartment stays his until a newer one (ADR 0088)."""
    order_id, n = await _unconfirmed(app_client, world, runtime, fake_kiosk, "retried", 2)
    assert (await _courier_names(app_client, world, "retried")).json()["compartment"] == n
    loop = TimerLoop(service)
    await until_due(service, TimerKind.DROPOFF_TIMEOUT)
    await loop.run_due()
    assert await _state(service, order_id) == "assigned"
    assert (await compartment(service, world, n)).state == "reserved"
    await runtime.story.on_snapshot(world.kiosk_code, board_snapshot(n, occupied=False))
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Timer)
            .where(Timer.kind == TimerKind.DROPOFF_TIMEOUT.value, Timer.state == "pending")
            .values(due_at=utcnow(), locked_until=None)
        )
    await loop.run_due()
    assert await _state(service, order_id) == "created"
    assert (await compartment(service, world, n)).state == "available"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # its row locks
async def test_a_door_timer_that_runs_while_a_retry_commits_leaves_the_compartment_his(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    runtime: Runtime,
    fake_kiosk: FakeKiosk,
) -> None:
    """The timer loop has taken the door timer; the courier's retry (ADR 0088) commits while
    the timer's handler is deciding: the handler sees the retry's cancellation of its timer
    and frees nothing, so the unlock the retry sends opens a compartment that is still his."""
    order_id, n = await _unconfirmed(app_client, world, runtime, fake_kiosk, "raced")
    await until_due(service, TimerKind.DROPOFF_TIMEOUT)
    async with service.sessionmaker() as session:
        timer = await session.scalar(
            select(Timer).where(Timer.kind == TimerKind.DROPOFF_TIMEOUT.value)
        )
    assert timer is not None
    async with session_scope(service.sessionmaker) as retry:
        # The retry's step (`dropoff.service._open_again`), written and not yet committed.
        held = await retry.get(Order, uuid.UUID(order_id))
        assert held is not None
        assert await save_step(retry, held, "assigned", "assigned", {}, version=held.version)
        await timers.cancel(retry, [TimerKind.DROPOFF_TIMEOUT], order_id=held.id)
        await retry.flush()
        deciding = asyncio.create_task(handlers.dropoff_timeout(service, timer))
        assert await first_of(service.engine, deciding) == "waiting"
        # The rest of the retry's transaction (`_allocate`) while the handler holds the
        # compartment and waits for the order: its new timer and opening refer to the
        # compartment, which a lock stronger than FOR NO KEY UPDATE would hold up (deadlock).
        box = await retry.get(Compartment, held.compartment_id)
        assert box is not None
        timers.schedule(
            retry,
            TimerKind.DROPOFF_TIMEOUT,
            utcnow() + timedelta(hours=1),
            order_id=held.id,
            compartment_id=box.id,
        )
        doors.authorise(retry, box, who="courier:test", why="drop-off", order_id=held.id)
        await retry.flush()
    assert await deciding is None
    assert await _state(service, order_id) == "assigned"
    assert (await compartment(service, world, n)).state == "reserved"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # its row locks
async def test_the_door_shutting_while_the_door_timer_decides_waits_its_turn(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """The courier shuts the door on the food just as the door timer decides: the timer holds
    the compartment and then asks for the order (as `handlers.dropoff_timeout` does); the
    door's event takes them in that order too, so it waits its turn and deposits, where taking
    the order first would deadlock with the timer (PostgreSQL would abort one of them)."""
    order = await create_order(app_client, world, ref="shut-late")
    n = (await _courier_names(app_client, world, "shut-late")).json()["compartment"]
    for kind in ("door_opened", "item_placed"):
        await event(service, world, kind, n)
    async with session_scope(service.sessionmaker) as timer_side:
        await _locked(timer_side, world, n)
        shutting = asyncio.create_task(event(service, world, "door_closed", n, occupied=True))
        assert await first_of(service.engine, shutting) == "waiting"
        await timer_side.scalar(  # the timer's next lock: a deadlock here without the fix
            select(Order).where(Order.id == uuid.UUID(order["id"])).with_for_update(key_share=True)
        )
    await shutting
    assert await _state(service, order["id"]) == "deposited"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # its row locks
@pytest.mark.parametrize("kind", [TimerKind.DOOR_LEFT_OPEN, TimerKind.DROPOFF_TIMEOUT])
async def test_a_door_timer_that_runs_as_the_door_shuts_leaves_no_alert_open(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, kind: TimerKind
) -> None:
    """The door's shutting is written, and has looked for its door left open alert, but not
    yet committed when the door's timer looks at the door: the timer waits for it and raises
    nothing. Read unlocked, the door was still open to the timer, whose alert then stayed open
    on a shut door until it was opened and shut again (the timer then ended without waiting)."""
    if kind is TimerKind.DROPOFF_TIMEOUT:  # the courier's door, open at the drop-off
        await create_order(app_client, world, ref="shut-at-once")
        n = (await _courier_names(app_client, world, "shut-at-once")).json()["compartment"]
    else:  # the door opened again once the food is in
        _, n = await _deposited(app_client, world, service, "opened-again")
    await event(service, world, "door_opened", n)
    async with service.sessionmaker() as session:
        timer = await session.scalar(
            select(Timer).where(Timer.kind == kind.value, Timer.state == "pending")
        )
    assert timer is not None
    run = getattr(handlers, kind.value)
    async with session_scope(service.sessionmaker) as shutting:
        # The door's report (`StoryHandler._compartment_event`): the compartment written, then
        # the door's timer cancelled and its alert looked for (none yet).
        box = await shutting.scalar(
            select(Compartment).where(
                Compartment.kiosk_id == world.kiosk_id, Compartment.number == n
            )
        )
        assert box is not None
        box.door_open, box.occupied = False, True
        await shutting.flush()
        await timers.cancel(shutting, [TimerKind.DOOR_LEFT_OPEN], compartment_id=box.id)
        assert await resolve_alerts(shutting, f"door_left_open:{box.id}") == 0
        deciding = asyncio.create_task(run(service, timer))
        assert await first_of(service.engine, deciding) == "waiting"
    decided = await deciding
    if kind is TimerKind.DOOR_LEFT_OPEN:
        assert decided is None  # done: no retry
    assert await _unresolved_alerts(service, "door_left_open") == []


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # its row locks
@pytest.mark.parametrize("report", ["snapshot", "door_closed"])
async def test_a_door_shut_as_its_timer_raises_the_alert_resolves_it(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, report: str
) -> None:
    """The door's timer has the compartment and has raised its alert, not yet committed, when
    the kiosk reports the door shut, by its event or (the event lost) by a snapshot: the report
    waits for the timer and resolves the alert. The snapshot looked for the alert before it
    wrote the compartment, and so missed it."""
    _, n = await _deposited(app_client, world, service, "alert-raced")
    await event(service, world, "door_opened", n)
    async with session_scope(service.sessionmaker) as timer_side:
        # What `handlers.door_left_open` does: the compartment locked, then the alert.
        box = await _locked(timer_side, world, n)
        kiosk = await timer_side.get(Kiosk, world.kiosk_id)
        assert box.door_open and kiosk is not None
        await raise_compartment_alert(
            timer_side,
            None,
            kiosk,
            box,
            kind="door_left_open",
            severity="warning",
            what="door left open",
            dedupe_key=f"door_left_open:{box.id}",
        )
        await timer_side.flush()
        if report == "snapshot":
            handled = StoryHandler(service).on_snapshot(
                world.kiosk_code, board_snapshot(n, occupied=True)
            )
        else:
            handled = event(service, world, "door_closed", n, occupied=True)
        shut = asyncio.create_task(handled)
        assert await first_of(service.engine, shut) == "waiting"
    await shut
    assert (await compartment(service, world, n)).door_open is False
    assert await _unresolved_alerts(service, "door_left_open") == []


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # its row locks
async def test_a_latch_back_as_her_door_is_reported_waits_its_turn(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """Her pickup's latch springs back with the door shut just as a door event of hers is
    handled on the other lane: the event holds the compartment and then asks for the order
    (`_door_closed` -> `left_inside`); the snapshot that gives her code back takes them in that
    order too, so it waits its turn, where taking the order first would deadlock with the
    event (PostgreSQL would abort one of them)."""
    order, n = await make_ready(app_client, world, service, ref="latched")
    page = (await app_client.get(f"/api/v1/p/{token_of(order)}")).json()
    used = await app_client.post(
        "/api/v1/kiosk/pickup", json={"code": page["fallback_code"]}, headers=world.kiosk()
    )
    assert used.status_code == 200, used.text
    handler = StoryHandler(service)
    await handler.on_snapshot(
        world.kiosk_code, board_snapshot(n, occupied=True, lock_released=True)
    )
    async with session_scope(service.sessionmaker) as door_side:
        await _locked(door_side, world, n)
        latched = asyncio.create_task(
            handler.on_snapshot(world.kiosk_code, board_snapshot(n, occupied=True))
        )
        assert await first_of(service.engine, latched) == "waiting"
        await door_side.scalar(  # the event's next lock: a deadlock here without the fix
            select(Order).where(Order.id == uuid.UUID(order["id"])).with_for_update(key_share=True)
        )
    await latched
    mine = await order_of(service, order["id"])
    assert mine.code_used_at is None  # her code is hers to use again


async def _locked(session: AsyncSession, world: World, n: int) -> Compartment:
    """Compartment `n`, locked as the service's paths lock it (FOR NO KEY UPDATE)."""
    box = await session.scalar(
        select(Compartment)
        .where(Compartment.kiosk_id == world.kiosk_id, Compartment.number == n)
        .with_for_update(key_share=True)
    )
    assert box is not None
    return box


async def _unresolved_alerts(service: ServiceContext, kind: str) -> list[str]:
    async with service.sessionmaker() as session:
        rows = await session.scalars(
            select(Alert.message).where(Alert.kind == kind, Alert.state != "resolved")
        )
        return list(rows)


async def test_watchdog_completes_a_cycle_whose_event_was_lost(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    runtime: Runtime,
    fake_kiosk: FakeKiosk,
) -> None:
    order, n = await _deposited(app_client, world, service, "lost-event")
    loop = TimerLoop(service)
    await loop.run_due()
    await event(service, world, "disinfection_started", n, duration_s=1800)
    assert await _state(service, order["id"]) == "disinfecting"
    # the kiosk's snapshot says the cycle is over, but disinfection_completed never arrived
    await runtime.story.on_snapshot(world.kiosk_code, _idle(n))
    await until_due(service, TimerKind.CYCLE_WATCHDOG)
    await loop.run_due()
    assert await _state(service, order["id"]) == "ready"


def _idle(
    n: int, *, occupied: bool = True, lock_released: bool = False
) -> contract.CompartmentSnapshot:
    """A snapshot of a shut compartment, no cycle running: with food, heated; or empty."""
    return contract.CompartmentSnapshot(
        n=n,
        door_open=False,
        lock_released=lock_released,
        occupied=occupied,
        heater_on=occupied,
        uv_on=False,
        disinfecting=False,
        disinfect_remaining_s=0,
        temp_c=65.0 if occupied else 21.0,
        setpoint_c=65.0 if occupied else None,
    )


async def test_watchdog_never_makes_ready_a_cycle_the_board_never_showed_running(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    runtime: Runtime,
    fake_kiosk: FakeKiosk,
) -> None:
    """No lamp on reported, no completion: an idle snapshot after the cycle's time does not say
    it ran (its start may never have reached the board). The food is not made ready; the cycle
    is overdue, and the start's timer sends it again (ADR 0113)."""
    order, n = await _deposited(app_client, world, service, "never-seen")
    loop = TimerLoop(service)
    await loop.run_due()
    await runtime.story.on_snapshot(world.kiosk_code, _idle(n))
    await until_due(service, TimerKind.CYCLE_WATCHDOG)
    await loop.run_due()
    assert await _state(service, order["id"]) == "deposited"
    async with service.sessionmaker() as session:
        overdue = await session.scalar(select(Alert).where(Alert.kind == "cycle_overdue"))
    assert overdue is not None and overdue.state == "open"


async def test_watchdog_never_ends_a_restarted_cycle_the_board_never_showed_running(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    runtime: Runtime,
    fake_kiosk: FakeKiosk,
) -> None:
    """The first cycle ran and was aborted; its restart's start never shows on the board. The
    order left `deposited` with the first cycle, but the restarted cycle is not over by an idle
    snapshot: the evidence must be of this cycle (ADR 0113)."""
    order, n = await _deposited(app_client, world, service, "restarted")
    loop = TimerLoop(service)
    await loop.run_due()
    await event(service, world, "disinfection_started", n, duration_s=1800)
    await event(service, world, "disinfection_aborted", n, reason="stopped_by_board")
    assert await _state(service, order["id"]) == "disinfecting"
    await until_due(service, TimerKind.START_HOLD_CYCLE)
    await loop.run_due()  # the restart's start: sent, never shown running
    assert fake_kiosk.actions(n).count("start_disinfection") == 2
    await runtime.story.on_snapshot(world.kiosk_code, _idle(n))
    await until_due(service, TimerKind.CYCLE_WATCHDOG)
    await loop.run_due()
    assert await _state(service, order["id"]) == "disinfecting"  # not ready


async def test_an_overdue_cycle_raises_an_alert(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order = await create_order(app_client, world, ref="stuck")
    n = (
        await app_client.post(
            "/api/v1/kiosk/dropoff",
            json={
                "courier_code": world.courier_code,
                "pin": world.courier_pin,
                "order_ref": "stuck",
            },
            headers=world.kiosk(),
        )
    ).json()["compartment"]
    await event(service, world, "door_opened", n)
    await event(service, world, "item_placed", n)
    await event(service, world, "door_closed", n)
    loop = TimerLoop(service)
    await loop.run_due()
    await event(service, world, "disinfection_started", n, duration_s=1800)
    await until_due(service, TimerKind.CYCLE_WATCHDOG)
    await loop.run_due()  # no snapshot says it finished: the UV lamp may be stuck
    async with service.sessionmaker() as session:
        kinds = (await session.scalars(select(Alert.kind))).all()
    assert kinds == ["cycle_overdue"]
    assert await _state(service, order["id"]) == "disinfecting"


async def test_order_never_dropped_off_expires(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order = await create_order(app_client, world)
    async with session_scope(service.sessionmaker) as session:
        created = await session.get(Order, uuid.UUID(order["id"]))
        timer = await session.scalar(
            select(Timer).where(Timer.kind == TimerKind.ORDER_EXPIRY.value)
        )
        assert created is not None and created.expires_at is not None and timer is not None
        window = service.settings.scaled(service.settings.dropoff_window_s)
        assert created.expires_at == created.created_at + timedelta(seconds=window)
        assert timer.due_at == created.expires_at and timer.order_id == created.id
        timer.due_at = utcnow()  # the window has passed
    await TimerLoop(service).run_due()
    assert await _state(service, order["id"]) == "expired"


async def test_concurrent_loops_run_each_timer_once(world: World, service: ServiceContext) -> None:
    ran: list[int] = []
    from locker_service.timer_loop import handlers

    async def count(ctx: ServiceContext, timer: Timer) -> None:
        ran.append(timer.id)
        await asyncio.sleep(0.01)

    async with session_scope(service.sessionmaker) as session:
        for _ in range(60):
            timers.schedule(session, TimerKind.REMINDER, utcnow() - timedelta(seconds=1))
    original = handlers.HANDLERS[TimerKind.REMINDER]
    from locker_service.timer_loop import loop as loop_module

    loop_module.HANDLERS[TimerKind.REMINDER] = count  # type: ignore[assignment]
    try:
        loops = [TimerLoop(service) for _ in range(4)]

        async def drain(loop: TimerLoop) -> None:
            while await loop.run_due():
                pass

        await asyncio.gather(*(drain(loop) for loop in loops))
    finally:
        loop_module.HANDLERS[TimerKind.REMINDER] = original
    assert len(ran) == 60 and len(set(ran)) == 60
    async with service.sessionmaker() as session:
        states = (await session.scalars(select(Timer.state).where(Timer.kind == "reminder"))).all()
    assert set(states) == {"done"}


async def test_a_claim_that_fills_inside_an_instant_takes_the_rest_of_it(
    world: World, service: ServiceContext
) -> None:
    """ADR 0107: a kiosk's food checks fall due at one instant and run as one only if claimed
    together. A claim of 20 whose 20th timer falls inside an instant takes the rest of its food
    checks (the kinds run together), not its other timers; the instants after are left for
    the next claim."""
    now = utcnow()
    instants = [now - timedelta(seconds=s) for s in (30, 20, 10)]
    food, reminder = TimerKind.FOOD_CHECK, TimerKind.REMINDER
    kinds_at = ([food] * 18, [food] * 7 + [reminder] * 3, [food] * 3)
    async with session_scope(service.sessionmaker) as session:
        for instant, kinds in zip(instants, kinds_at, strict=True):
            for kind in kinds:
                timers.schedule(session, kind, instant)

    async def claim() -> list[Timer]:
        async with session_scope(service.sessionmaker) as session:
            return await timers.claim_due(
                session,
                lease=timedelta(minutes=1),
                limit=20,
                skip_locked=True,
                tail_kinds=handlers.BATCHED,
            )

    first, second = await claim(), await claim()
    checks = sorted(t.due_at for t in first if t.kind == food)
    assert checks == [instants[0]] * 18 + [instants[1]] * 7
    assert len(first) < 28  # not every reminder of that instant came along
    assert sorted(t.due_at for t in second if t.kind == food) == [instants[2]] * 3
    assert len(first) + len(second) == 31


async def test_a_food_check_that_runs_for_hours_never_gives_up(
    world: World, service: ServiceContext
) -> None:
    """A held order's food is looked at every minute for up to hours: each run that asks to
    look again succeeded, and must not count towards the cap on retries of a failing step
    (it did: an order held 50 checks long raised a false `timer_failed`)."""
    from locker_service.timer_loop import loop as loop_module

    async def looks_again(ctx: ServiceContext, batch: Sequence[Timer]) -> dict[int, BatchOutcome]:
        return {t.id: utcnow() - timedelta(seconds=1) for t in batch}  # due again at once

    async with session_scope(service.sessionmaker) as session:
        timers.schedule(session, TimerKind.FOOD_CHECK, utcnow() - timedelta(seconds=1))
    original = loop_module.BATCHED[TimerKind.FOOD_CHECK]
    loop_module.BATCHED[TimerKind.FOOD_CHECK] = looks_again
    try:
        loop = TimerLoop(service)
        for _ in range(loop_module.MAX_ATTEMPTS + 10):
            assert await loop.run_due() == 1
    finally:
        loop_module.BATCHED[TimerKind.FOOD_CHECK] = original
    async with service.sessionmaker() as session:
        state = await session.scalar(select(Timer.state))
        kinds = (await session.scalars(select(Alert.kind))).all()
    assert state == "pending"
    assert kinds == []


async def test_a_timer_that_keeps_failing_gives_up_with_an_alert(
    world: World, service: ServiceContext
) -> None:
    from locker_service.timer_loop import loop as loop_module

    async def broken(ctx: ServiceContext, timer: Timer) -> None:
        raise RuntimeError("the kiosk link is wedged")

    async with session_scope(service.sessionmaker) as session:
        timers.schedule(session, TimerKind.REMINDER, utcnow() - timedelta(seconds=1))
    original = loop_module.HANDLERS[TimerKind.REMINDER]
    loop_module.HANDLERS[TimerKind.REMINDER] = broken  # type: ignore[assignment]
    try:
        loop = TimerLoop(service)
        for _ in range(loop_module.MAX_ATTEMPTS):
            async with session_scope(service.sessionmaker) as session:
                await session.execute(update(Timer).values(locked_until=None))  # lease over
            await loop.run_due()
    finally:
        loop_module.HANDLERS[TimerKind.REMINDER] = original
    async with service.sessionmaker() as session:
        state = await session.scalar(select(Timer.state))
        kinds = (await session.scalars(select(Alert.kind))).all()
    assert state == "failed"
    assert kinds == ["timer_failed"]


async def test_a_retried_cycle_start_does_not_restart_a_running_cycle(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await _deposited(app_client, world, service, "twice")
    loop = TimerLoop(service)
    await loop.run_due()
    await event(service, world, "disinfection_started", n, duration_s=1800)
    # the first run died before it could mark its timer done: the timer runs again
    await _start_timer_runs_again(service)
    await loop.run_due()
    assert fake_kiosk.actions(n).count("start_disinfection") == 1
    assert await _state(service, order["id"]) == "disinfecting"


async def test_a_retried_cycle_start_that_the_cycle_end_overtook_sends_nothing(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restarted service runs the start timer its first run left, while the kiosk's report
    that the cycle ran and ended is handled at the same time: once the timer has looked at the
    order, the order becomes ready. The timer must not start a second cycle (it would lock the
    purchaser out behind the UV interlock)."""
    order, n = await _deposited(app_client, world, service, "overtaken")
    loop = TimerLoop(service)
    await loop.run_due()
    assert fake_kiosk.actions(n).count("start_disinfection") == 1
    # The first run died before marking its timer done; the retry takes its first look now...
    await _start_timer_runs_again(service)
    timer = await _start_timer(service)
    first_look = await handlers._load(service, timer)

    # ...and the kiosk's reports are handled before it goes on.
    await event(service, world, "disinfection_started", n, duration_s=1800)
    cycles_have_run(service)
    await event(service, world, "disinfection_completed", n)
    assert await _state(service, order["id"]) == "ready"

    async def stale_load(
        ctx: ServiceContext, t: Timer
    ) -> tuple[Order | None, Compartment | None, Kiosk | None]:
        return first_look

    monkeypatch.setattr(handlers, "_load", stale_load)
    assert await handlers.start_hold_cycle(service, timer) is None
    assert fake_kiosk.actions(n).count("start_disinfection") == 1
    assert await _state(service, order["id"]) == "ready"
    async with service.sessionmaker() as session:
        running = await session.scalar(
            select(func.count())
            .select_from(DisinfectionCycle)
            .where(DisinfectionCycle.state == "running")
        )
    assert running == 0


async def test_a_retried_cycle_start_waits_for_the_kiosk_s_word_before_sending_again(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    runtime: Runtime,
) -> None:
    """A restarted service runs the start timer its first run left before it has handled the
    kiosk's queued report of the start: the command is not sent again (that would restart the
    cycle) until a snapshot since says the kiosk is idle, or the report is long overdue."""
    _, n = await _deposited(app_client, world, service, "unconfirmed")
    loop = TimerLoop(service)
    await loop.run_due()
    assert fake_kiosk.actions(n).count("start_disinfection") == 1
    await _start_timer_runs_again(service)
    await loop.run_due()
    assert fake_kiosk.actions(n).count("start_disinfection") == 1  # not a second time yet
    again = await _start_timer(service)
    assert again.state == "pending"  # it looks again shortly
    # The kiosk's snapshot since the cycle began: idle, so the start never reached it.
    await runtime.story.on_snapshot(world.kiosk_code, board_snapshot(n, occupied=True))
    await _start_timer_runs_again(service)
    ran = await loop.run_due()
    sent = fake_kiosk.actions(n).count("start_disinfection")
    assert sent == 2, (ran, await _cycle_start_facts(service, world, n))


async def test_a_kiosk_event_wakes_the_timer_loop_only_for_a_timer_due_at_once(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """Each wake is a round of the loop (a claim in the database): a kiosk's events whose
    timers fall due later (a door left open is looked at after a minute) leave them to its next
    look; the deposit's cycle start is due now."""
    woken: list[str] = []

    class Waker:
        def wake(self) -> None:
            woken.append("woken")

    service.timers = Waker()
    await event(service, world, "door_opened", 1)
    await event(service, world, "door_closed", 1)
    async with service.sessionmaker() as session:
        later = await session.scalar(
            select(Timer).where(Timer.kind == TimerKind.DOOR_LEFT_OPEN.value)
        )
    assert later is not None  # scheduled a (scaled) minute on: not due when scheduled
    order = await create_order(app_client, world, ref="woken")
    dropped = await app_client.post(
        "/api/v1/kiosk/dropoff",
        json=world.dropoff_body(order["external_ref"]),
        headers=world.kiosk(),
    )
    n = int(dropped.json()["compartment"])
    for kind in ("door_opened", "item_placed"):
        await event(service, world, kind, n)
    assert woken == []
    await event(service, world, "door_closed", n)  # the food is in: its cycle starts now
    assert woken == ["woken"]


def _starts(fake_kiosk: FakeKiosk, n: int) -> list[str]:
    """The request ids of the cycle starts the kiosk heard for compartment `n`, in order."""
    return [
        request_id
        for (_, action, number, _), request_id in zip(
            fake_kiosk.commands, fake_kiosk.request_ids, strict=True
        )
        if action == "start_disinfection" and number == n
    ]


async def _start_sent_twice(
    client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    runtime: Runtime,
    ref: str,
    first_answer: str | None = None,
) -> tuple[dict[str, Any], int, str, str]:
    """The start timer runs, the kiosk answers `first_answer` (or runs it), and the timer runs
    again once a snapshot since the cycle began says the kiosk is idle: (order, compartment,
    the two starts' request ids). The second run is the start timer's alone: at this time scale
    the cycle's watchdog falls due half a real second after the start, and would take the idle
    snapshot for the cycle's end first on a slow machine."""
    order, n = await _deposited(client, world, service, ref)
    if first_answer is not None:
        fake_kiosk.answers["start_disinfection"] = [first_answer]
    await TimerLoop(service).run_due()
    await runtime.story.on_snapshot(world.kiosk_code, board_snapshot(n, occupied=True))
    timer = await _start_timer(service)
    await handlers.start_hold_cycle(service, timer)
    first, again = _starts(fake_kiosk, n)
    return order, n, first, again


async def test_a_cycle_start_sent_again_after_its_outcome_was_lost_is_not_run_twice(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    runtime: Runtime,
) -> None:
    """The first run of the start timer died after sending; the kiosk ran the cycle and ended
    it, and its reports of that are still queued for the service. Its snapshot (idle since the
    cycle began) cannot tell a start that never came from a cycle that ran: the start goes
    again, as the same request, which the kiosk answers from its record instead of starting a
    second cycle (that would lock the purchaser out behind the UV interlock)."""
    *_, first, again = await _start_sent_twice(
        app_client, world, service, fake_kiosk, runtime, "lost-outcome"
    )
    assert again == first
    assert fake_kiosk.run.count(first) == 1


async def test_a_cycle_start_with_no_final_answer_is_sent_again_as_the_same_request(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    runtime: Runtime,
) -> None:
    *_, first, again = await _start_sent_twice(
        app_client, world, service, fake_kiosk, runtime, "no-answer", "no_final_answer"
    )
    assert again == first
    assert fake_kiosk.run.count(first) == 1


async def test_a_cycle_start_the_kiosk_refused_is_tried_again_as_a_new_request(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    runtime: Runtime,
) -> None:
    """A final answer that it did not run (the interlock, say) would be given again for the
    same request: the next try is a new one, and it runs."""
    order, n, first, again = await _start_sent_twice(
        app_client, world, service, fake_kiosk, runtime, "refused", "rejected"
    )
    assert again != first
    assert fake_kiosk.run[-1] == again
    await event(service, world, "disinfection_started", n, duration_s=1800)
    assert await _state(service, order["id"]) == "disinfecting"


async def _cycle_start_facts(service: ServiceContext, world: World, n: int) -> dict[str, object]:
    """What the cycle start timer decides on, for a failure to explain itself."""
    async with service.sessionmaker() as session:
        timer = await session.scalar(
            select(Timer).where(Timer.kind == TimerKind.START_HOLD_CYCLE.value)
        )
        c = await session.scalar(
            select(Compartment).where(
                Compartment.kiosk_id == world.kiosk_id, Compartment.number == n
            )
        )
        cycles = (await session.scalars(select(DisinfectionCycle))).all()
        assert timer is not None and c is not None
        return {
            "now": utcnow(),
            "timer": (timer.state, timer.due_at, timer.locked_until, timer.attempts),
            "compartment": (c.state, c.door_open, c.fault, c.snapshot_at, c.uv_on),
            "cycles": [(cycle.kind, cycle.state, cycle.started_at) for cycle in cycles],
        }


def test_a_key_s_slots_are_one_instant_for_all_its_timers_and_never_later_than_a_period() -> None:
    """`slot_after`: timers of one key (a kiosk's food checks, ADR 0104) scheduled at any
    moment within a period fall due at one instant, no later than a period after the moment
    they were scheduled; the next keys' slots are spread across the period."""
    period = timedelta(seconds=60)
    t0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    first = timers.slot_after(t0, period, 7)
    assert t0 < first <= t0 + period
    moments = [first - period + timedelta(milliseconds=ms) for ms in (0, 1, 25_000, 59_999)]
    assert {timers.slot_after(m, period, 7) for m in moments} == {first}
    assert timers.slot_after(first, period, 7) == first + period  # strictly later: the next
    assert timers.slot_after(first - timedelta(microseconds=1), period, 7) == first
    phases = sorted((timers.slot_after(t0, period, k) - t0).total_seconds() for k in range(1, 11))
    gaps = [b - a for a, b in itertools.pairwise(phases)]
    assert min(gaps) > 2.0  # ten kiosks' checks 2 s or more apart, not bunched together
    short = timedelta(seconds=0.5)  # a scaled clock's period (tests, demos)
    assert t0 < timers.slot_after(t0, short, 7) <= t0 + short
