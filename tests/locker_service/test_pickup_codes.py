"""Pickup codes: wrong, reused, early, expired and guessed codes open nothing; the kill
switch freezes openings; the scanner path takes the QR token or the page URL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from firmware_bridge import contract
from locker_service import errors
from locker_service.compartments import service as doors
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.kiosks.handler import StoryHandler
from locker_service.models import (
    Alert,
    DoorOpening,
    Kiosk,
    Order,
    OrderEvent,
    PickupAttempt,
    Timer,
    utcnow,
)
from locker_service.orders import codes
from locker_service.pickup import service as pickup_service
from locker_service.pickup import throttle
from locker_service.timer_loop.loop import TimerLoop
from locker_service.timers.service import TimerKind
from tests.locker_service.conftest import make_settings
from tests.locker_service.world import (
    FakeKiosk,
    World,
    board_snapshot,
    create_order,
    database_away,
    event,
    fault_told_before_ready,
    make_ready,
    record_pickup_answers,
    token_of,
)

# Far longer than any test here takes on a starved machine: an order made ready early in a test
# must not expire before its end (make_ready runs the due timers). The expiry test makes the
# hold's end due on the timer row instead of waiting for it.
HOLD_LIMIT_S = 3600.0
KIOSK_BUDGET = 10  # wrong codes a day at one kiosk before each further one waits the spacing


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url,
        hold_limit_s=HOLD_LIMIT_S,
        pickup_kiosk_free_failures_per_day=KIOSK_BUDGET,
    )


async def _pickup(client: httpx.AsyncClient, world: World, code: str) -> httpx.Response:
    return await client.post("/api/v1/kiosk/pickup", json={"code": code}, headers=world.kiosk())


def _code(settings: Settings, order: dict[str, object]) -> str:
    return codes.fallback_code(settings.secret_key, token_of(order))  # type: ignore[arg-type]


async def _unlock_time_over(service: ServiceContext, order: dict[str, Any]) -> None:
    """Her code accepted a minute ago: the unlock's time is over."""
    await _code_used_ago(service, order, 60.0)


async def _code_used_ago(service: ServiceContext, order: dict[str, Any], seconds: float) -> None:
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Order)
            .where(Order.id == uuid.UUID(order["id"]))
            .values(code_used_at=utcnow() - timedelta(seconds=seconds))
        )


async def test_wrong_and_malformed_codes_open_nothing(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, _ = await make_ready(app_client, world, service)
    right = _code(service.settings, order)
    wrong = f"{(int(right) + 1) % 10**8:08d}"
    before = fake_kiosk.unlocks()
    refused = await _pickup(app_client, world, wrong)
    assert refused.status_code == 403 and refused.json()["error"] == "invalid_code"
    malformed = await _pickup(app_client, world, "12ab")
    assert malformed.status_code == 400 and malformed.json()["error"] == "malformed_code"
    assert fake_kiosk.unlocks() == before


async def test_a_code_opens_once(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await make_ready(app_client, world, service)
    code = _code(service.settings, order)
    assert (await _pickup(app_client, world, f"{code[:4]} {code[4:]}")).status_code == 200
    again = await _pickup(app_client, world, code)  # door not even pulled yet: she is told so
    assert again.status_code == 409 and again.json()["error"] == "door_unlocked"
    await event(service, world, "door_opened", n)
    await event(service, world, "item_removed", n)
    await event(service, world, "door_closed", n)
    after = await _pickup(app_client, world, code)
    assert after.status_code == 409 and after.json()["error"] == "code_used"
    assert fake_kiosk.unlocks().count(n) == 2  # drop-off and the one pickup


async def test_food_left_inside_gives_the_code_back(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, n = await make_ready(app_client, world, service)
    code = _code(service.settings, order)
    assert (await _pickup(app_client, world, code)).status_code == 200
    await event(service, world, "door_opened", n)
    await event(service, world, "door_closed", n)
    assert (await _pickup(app_client, world, code)).status_code == 200


async def test_her_code_opens_nothing_behind_a_fault_she_was_told_not_to_collect_through(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await make_ready(app_client, world, service)
    await event(service, world, "fault_raised", n, fault="heating_watchdog")
    answers = record_pickup_answers(service)
    before = fake_kiosk.unlocks()
    refused = await _pickup(app_client, world, _code(service.settings, order))
    assert refused.status_code == 409 and refused.json()["error"] == "compartment_fault"
    await event(service, world, "scan", text=token_of(order))  # her QR at the scanner
    assert [a.get("error") for a in answers] == ["compartment_fault"]
    assert fake_kiosk.unlocks() == before
    # Her page says staff will contact her, and shows no code that would not open.
    status = (await app_client.get(f"/api/v1/p/{token_of(order)}")).json()
    assert status["fault"] and status["fallback_code"] is None and status["qr_url"] is None
    page = (await app_client.get(f"/p/{token_of(order)}")).text
    assert "Staff will contact you" in page
    assert "qr.png" not in page and 'id="fallback-code"' not in page
    assert 'id="deadline"' not in page  # no "collect by" for food she may not collect

    # A jammed lock says nothing against the food: her code still opens (and tries again).
    other, m = await make_ready(app_client, world, service)
    await event(service, world, "fault_raised", m, fault="lock_jammed")
    assert (await _pickup(app_client, world, _code(service.settings, other))).status_code == 200
    assert fake_kiosk.unlocks()[-1] == m


async def test_her_food_stays_held_for_staff_once_the_fault_clears_and_her_tries_cost_nothing(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """Cleared by staff, or by a restart of the board: nobody has looked at the food, and she
    was told staff would contact her. Her tries meanwhile are not guesses (ADR 0128)."""
    order, n = await make_ready(app_client, world, service)
    await event(service, world, "fault_raised", n, fault="uv_timeout")
    await event(service, world, "fault_cleared", n)
    before = fake_kiosk.unlocks()
    code = _code(service.settings, order)
    for _ in range(KIOSK_BUDGET + 2):  # past her order's and the kiosk's free failures
        refused = await _pickup(app_client, world, code)
        assert refused.status_code == 409 and refused.json()["error"] == "compartment_fault"
    assert fake_kiosk.unlocks() == before
    async with service.sessionmaker() as session:
        failed = await session.scalars(select(PickupAttempt).where(PickupAttempt.ok.is_(False)))
        assert failed.all() == []
    status = (await app_client.get(f"/api/v1/p/{token_of(order)}")).json()
    assert status["fault"] and status["fallback_code"] is None
    assert (await app_client.get(f"/p/{token_of(order)}/qr.png")).status_code == 404
    assert "Staff will contact you" in (await app_client.get(f"/p/{token_of(order)}")).text

    # Told before she was told it was ready (a lamp replaced and the cycle run again): hers.
    other, m = await make_ready(app_client, world, service)
    await event(service, world, "fault_raised", m, fault="uv_timeout")
    await event(service, world, "fault_cleared", m)
    await fault_told_before_ready(service, other)
    assert (await _pickup(app_client, world, _code(service.settings, other))).status_code == 200


async def test_a_code_before_ready_is_refused(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order = await create_order(app_client, world)
    code = _code(service.settings, order)
    answer = await _pickup(app_client, world, code)
    # no compartment yet: the code cannot name anything at this kiosk
    assert answer.status_code == 403
    await app_client.post(
        "/api/v1/kiosk/dropoff",
        json={
            "courier_code": world.courier_code,
            "pin": world.courier_pin,
            "order_ref": order["external_ref"],
        },
        headers=world.kiosk(),
    )
    early = await _pickup(app_client, world, code)
    assert early.status_code == 409 and early.json()["error"] == "not_ready"
    assert len(fake_kiosk.unlocks()) == 1  # the courier's


async def test_an_expired_code_is_refused(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, _ = await make_ready(app_client, world, service)
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Timer)
            .where(Timer.kind == TimerKind.HOLD_EXPIRY.value)
            .values(due_at=utcnow(), locked_until=None)
        )  # the hold limit has passed
    await TimerLoop(service).run_due()
    async with service.sessionmaker() as session:
        stored = await session.get(Order, uuid.UUID(order["id"]))
    assert stored is not None and stored.state == "expired"
    before = fake_kiosk.unlocks()
    answer = await _pickup(app_client, world, _code(service.settings, order))
    assert answer.status_code == 409 and answer.json()["error"] == "code_expired"
    assert fake_kiosk.unlocks() == before
    page = (await app_client.get(f"/api/v1/p/{token_of(order)}")).json()
    assert page["fallback_code"] is None


async def test_a_guesser_waits_even_with_the_right_code(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, _ = await make_ready(app_client, world, service)
    right = _code(service.settings, order)
    before = fake_kiosk.unlocks()
    free = service.settings.pickup_source_free_failures
    guesses = [f"{(int(right) + i) % 10**8:08d}" for i in range(1, free + 1)]
    for guess in guesses:
        assert (await _pickup(app_client, world, guess)).status_code == 403
    waiting = await _pickup(app_client, world, right)
    assert waiting.status_code == 429 and waiting.json()["error"] == "locked_out"
    retry_after_s = int(waiting.headers["Retry-After"])
    assert 0 < retry_after_s <= pickup_service.FIRST_DELAY_S  # the first wait is short
    assert fake_kiosk.unlocks() == before
    await asyncio.sleep(retry_after_s)
    assert (await _pickup(app_client, world, right)).status_code == 200


async def test_an_unlock_that_never_got_through_gives_her_code_back_once_its_time_is_over(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await make_ready(app_client, world, service)
    code = _code(service.settings, order)
    fake_kiosk.answers["unlock"] = ["no_final_answer"]
    assert (await _pickup(app_client, world, code)).status_code == 504
    # At once she is told her door was unlocked a moment ago (the pulse may have gone out).
    again = await _pickup(app_client, world, code)
    assert again.status_code == 409 and again.json()["error"] == "door_unlocked"
    # The unlock's time passes; nothing heard from the board since: still not given back.
    await _unlock_time_over(service, order)
    assert (await _pickup(app_client, world, code)).json()["error"] == "door_unlocked"
    # The board reports (the bridge reconnected): latch caught, door shut, her food inside.
    board = StoryHandler(service)
    await board.on_snapshot(world.kiosk_code, board_snapshot(n, occupied=True))
    opened = await _pickup(app_client, world, code)
    assert opened.status_code == 200, opened.text
    assert opened.json()["compartment"] == n
    assert fake_kiosk.unlocks()[-2:] == [n, n]  # the second unlock went out
    async with service.sessionmaker() as session:
        kinds = (
            await session.scalars(
                select(OrderEvent.action).where(OrderEvent.order_id == uuid.UUID(order["id"]))
            )
        ).all()
    assert kinds.count("code_returned") == 1 and kinds.count("code_accepted") == 2


async def test_an_unlock_still_within_its_real_time_is_not_given_back_on_a_fast_clock(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The unlock waits its command timeout in real seconds whatever the time scale, so the
    code is not given back before then even at 600x (it once was after 1/600 of it)."""
    order, n = await make_ready(app_client, world, service)
    code = _code(service.settings, order)
    monkeypatch.setattr(service.settings, "time_scale", 600.0)
    board = StoryHandler(service)
    # The board's last word before her try: latched, shut, her food inside.
    await board.on_snapshot(world.kiosk_code, board_snapshot(n, occupied=True))
    fake_kiosk.answers["unlock"] = ["no_final_answer"]
    before = fake_kiosk.unlocks()  # the courier's
    assert (await _pickup(app_client, world, code)).status_code == 504
    await _code_used_ago(service, order, 2.0)  # within the unlock's 10 real seconds
    await board.on_snapshot(world.kiosk_code, board_snapshot(n, occupied=True))
    again = await _pickup(app_client, world, code)
    assert again.status_code == 409 and again.json()["error"] == "door_unlocked"
    assert fake_kiosk.unlocks() == [*before, n]  # none more while hers may be on its way


async def test_a_refused_unlock_gives_her_code_back_at_once(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await make_ready(app_client, world, service)
    code = _code(service.settings, order)
    fake_kiosk.answers["unlock"] = ["failed"]
    refused = await _pickup(app_client, world, code)
    assert refused.status_code == 503 and refused.json()["error"] == "unlock_failed"
    async with service.sessionmaker() as session:
        given_back = await session.scalar(
            select(OrderEvent).where(
                OrderEvent.order_id == uuid.UUID(order["id"]), OrderEvent.action == "code_returned"
            )
        )
        backstops = (
            await session.scalars(
                select(Timer.state).where(
                    Timer.order_id == uuid.UUID(order["id"]),
                    Timer.kind == TimerKind.CODE_RELEASE,
                )
            )
        ).all()
    assert given_back is not None and given_back.detail["why"] == "unlock failed"
    assert backstops == ["cancelled"]  # given back already: the timer has nothing to do
    opened = await _pickup(app_client, world, code)  # the latch never moved: hers again
    assert opened.status_code == 200 and opened.json()["compartment"] == n


async def test_a_refused_unlock_whose_opening_cannot_be_withdrawn_still_gives_her_code_back(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database blinks as the refused opening is withdrawn: she is still told the truth
    (nothing opened) and her code is hers again."""
    order, n = await make_ready(app_client, world, service)
    code = _code(service.settings, order)
    fake_kiosk.answers["unlock"] = ["failed"]
    with monkeypatch.context() as patched:
        patched.setattr(doors, "session_scope", database_away)
        refused = await _pickup(app_client, world, code)
    assert refused.status_code == 503 and refused.json()["error"] == "unlock_failed"
    opened = await _pickup(app_client, world, code)
    assert opened.status_code == 200 and opened.json()["compartment"] == n


async def test_the_unlock_leaves_under_the_request_id_its_opening_was_committed_with(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """Nothing is written once the kiosk has answered: a database gone away by then cannot undo
    the record of a door that opened."""
    order, _ = await make_ready(app_client, world, service)
    committed: list[str | None] = []
    command = fake_kiosk.command

    async def reading_the_record(*args: Any, **kwargs: Any) -> contract.Reply:
        if args[1] == "unlock":
            async with service.sessionmaker() as session:
                committed.extend(
                    (
                        await session.scalars(
                            select(DoorOpening.request_id).where(
                                DoorOpening.order_id == uuid.UUID(order["id"]),
                                DoorOpening.why == "pickup",
                            )
                        )
                    ).all()
                )
        return await command(*args, **kwargs)

    fake_kiosk.command = reading_the_record  # type: ignore[method-assign]
    answer = await _pickup(app_client, world, _code(service.settings, order))
    assert answer.status_code == 200, answer.text
    assert committed == [fake_kiosk.request_ids[-1]]  # the id the kiosk was sent


async def test_an_unlock_that_may_have_gone_out_keeps_her_code_used(
    service_app: FastAPI, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """A failure other than the kiosk's refusal or its absence (here the connection breaking
    after the command left): the latch may have released, so her code is not handed out again
    until the board shows the door never opened or the unlock's time is over."""
    transport = httpx.ASGITransport(app=service_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://locker.test") as client:
        order, n = await make_ready(client, world, service)
        code = _code(service.settings, order)
        before = fake_kiosk.unlocks()
        command = fake_kiosk.command

        async def breaking_after_sending(*args: Any, **kwargs: Any) -> contract.Reply:
            await command(*args, **kwargs)
            raise ConnectionResetError(104, "Connection reset by peer")

        fake_kiosk.command = breaking_after_sending  # type: ignore[method-assign]
        broken = await _pickup(client, world, code)
        assert broken.status_code == 503, broken.text
        fake_kiosk.command = command  # type: ignore[method-assign]
        again = await _pickup(client, world, code)
        assert again.status_code == 409 and again.json()["error"] == "door_unlocked"
        assert fake_kiosk.unlocks() == [*before, n]
        # The unlock's time passes; the board then reports its latch caught, door shut, her
        # food inside: hers again.
        await _unlock_time_over(service, order)
        board = StoryHandler(service)
        await board.on_snapshot(world.kiosk_code, board_snapshot(n, occupied=True))
        opened = await _pickup(client, world, code)
        assert opened.status_code == 200, opened.text
        assert fake_kiosk.unlocks() == [*before, n, n]


async def test_a_code_is_not_given_back_when_the_board_says_the_food_is_gone(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await make_ready(app_client, world, service)
    code = _code(service.settings, order)
    fake_kiosk.answers["unlock"] = ["no_final_answer"]
    assert (await _pickup(app_client, world, code)).status_code == 504
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Order)
            .where(Order.id == uuid.UUID(order["id"]))
            .values(code_used_at=utcnow() - timedelta(seconds=60))
        )
    # The latch did release: she took her food, its door events are still on their way.
    await StoryHandler(service).on_snapshot(world.kiosk_code, board_snapshot(n, occupied=False))
    unlocks = len(fake_kiosk.unlocks())
    again = await _pickup(app_client, world, code)
    assert again.status_code == 409, again.text
    assert len(fake_kiosk.unlocks()) == unlocks  # no second opening of an empty compartment


async def test_one_source_at_its_longest_wait_raises_an_alert_that_says_only_it_waits(
    service: ServiceContext, world: World, fake_kiosk: FakeKiosk
) -> None:
    rule = pickup_service.rules_of(service.settings).source
    at_cap = next(n for n in range(1, 100) if throttle.reaches_cap(rule, n))
    source = "screen:10.1.1.1"
    async with session_scope(service.sessionmaker) as session:
        long_ago = utcnow() - rule.max_delay - timedelta(seconds=5)  # its waits are over
        session.add_all(
            PickupAttempt(kiosk_id=world.kiosk_id, source=source, ok=False, at=long_ago)
            for _ in range(at_cap)
        )
    async with service.sessionmaker() as session:
        kiosk = await session.get(Kiosk, world.kiosk_id)
    assert kiosk is not None
    with pytest.raises(pickup_service.InvalidCode):
        await pickup_service.pickup(service, kiosk, source=source, code="00000000")
    async with service.sessionmaker() as session:
        [alert] = (await session.scalars(select(Alert))).all()
    assert alert.kind == "kiosk_under_attack"
    assert f"one source typed {at_cap + 1} wrong pickup codes" in alert.message
    assert "nobody else is slowed" in alert.message and "there now wait" not in alert.message


async def test_wrong_codes_refused_offline_spend_the_kiosk_s_budget_online_too(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """Guessing at the keypad while the kiosk was cut off, reported once back, and then online
    is one daily budget per kiosk (ADR 0039, 0077)."""
    for _ in range(KIOSK_BUDGET):
        await event(service, world, "offline_code_refused")
    async with service.sessionmaker() as session:
        kiosk = await session.get(Kiosk, world.kiosk_id)
        alerts = (await session.scalars(select(Alert.kind))).all()
    assert kiosk is not None and alerts == ["kiosk_under_attack"]
    with pytest.raises(errors.TooManyRequests) as waiting:
        await pickup_service.pickup(service, kiosk, source="screen:10.9.9.9", code="00000001")
    assert waiting.value.code == "locked_out"
    assert fake_kiosk.unlocks() == []


async def test_many_sources_guessing_at_one_kiosk_spend_its_budget(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    async with service.sessionmaker() as session:
        kiosk = await session.get(Kiosk, world.kiosk_id)
    assert kiosk is not None
    for i in range(KIOSK_BUDGET):
        with pytest.raises(pickup_service.InvalidCode):
            await pickup_service.pickup(
                service, kiosk, source=f"screen:10.0.0.{i}", code="00000000"
            )
    with pytest.raises(errors.TooManyRequests) as waiting:
        await pickup_service.pickup(service, kiosk, source="screen:10.9.9.9", code="00000001")
    assert waiting.value.code == "locked_out"
    assert 0 < waiting.value.retry_after_s <= service.settings.pickup_kiosk_spacing_s
    async with service.sessionmaker() as session:
        failures = (
            await session.scalars(select(PickupAttempt).where(PickupAttempt.ok.is_(False)))
        ).all()
        alerts = (await session.scalars(select(Alert.kind))).all()
        message = await session.scalar(select(Alert.message))
    assert len(failures) == KIOSK_BUDGET  # the try that had to wait checked nothing
    assert alerts == ["kiosk_under_attack"]
    assert message is not None and "wrong typed codes there now wait up to" in message
    assert fake_kiosk.unlocks() == []


async def test_kill_switch_freezes_code_and_remote_openings(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await make_ready(app_client, world, service)
    engage = await app_client.post(
        f"/api/v1/operator/sites/{world.site_id}/kill-switch",
        json={"engaged": True, "reason": "mass opening seen"},
        headers=world.operator(),
    )
    assert engage.status_code == 200 and engage.json()["kill_switch_engaged"] is True
    before = fake_kiosk.unlocks()
    frozen = await _pickup(app_client, world, _code(service.settings, order))
    assert frozen.status_code == 403 and frozen.json()["error"] == "kill_switch_engaged"
    kiosk = (
        await app_client.get(f"/api/v1/operator/kiosks/{world.kiosk_id}", headers=world.operator())
    ).json()
    compartment_id = next(c["id"] for c in kiosk["compartments"] if c["number"] == n)
    remote = await app_client.post(
        f"/api/v1/operator/compartments/{compartment_id}/open",
        json={"reason": "purchaser lost phone"},
        headers=world.operator(),
    )
    assert remote.status_code == 403 and remote.json()["error"] == "kill_switch_engaged"
    assert fake_kiosk.unlocks() == before
    alerts = (await app_client.get("/api/v1/operator/alerts", headers=world.operator())).json()
    assert [a["kind"] for a in alerts] == ["kill_switch"]
    await app_client.post(
        f"/api/v1/operator/sites/{world.site_id}/kill-switch",
        json={"engaged": False, "reason": "all clear"},
        headers=world.operator(),
    )
    assert (await _pickup(app_client, world, _code(service.settings, order))).status_code == 200


async def test_scanner_takes_the_token_or_the_page_url(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    first, n1 = await make_ready(app_client, world, service)
    second, n2 = await make_ready(app_client, world, service)
    results = record_pickup_answers(service)
    await event(service, world, "scan", None, text=token_of(first))
    await event(service, world, "scan", None, text=first["purchaser_url"])  # used already
    await event(service, world, "scan", None, text=str(second["purchaser_url"]))
    await event(service, world, "scan", None, text="hello world")
    assert [(r["ok"], r.get("compartment"), r.get("error")) for r in results] == [
        (True, n1, None),
        (False, None, "door_unlocked"),  # its door has not opened yet
        (True, n2, None),
        (False, None, "invalid_code"),
    ]
    assert fake_kiosk.unlocks()[-2:] == [n1, n2]


async def test_a_code_after_the_hold_has_ended_opens_nothing_though_its_timer_is_late(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    """Her messages said collect before the hold's end; the kiosk decides so offline too. A
    timer running late must not let a code open after it (ADR 0112)."""
    order, _ = await make_ready(app_client, world, service)
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Order)
            .where(Order.id == uuid.UUID(order["id"]))
            .values(hold_until=utcnow() - timedelta(seconds=1))
        )
    before = fake_kiosk.unlocks()
    refused = await _pickup(app_client, world, _code(service.settings, order))
    assert refused.status_code == 409 and refused.json()["error"] == "code_expired"
    assert fake_kiosk.unlocks() == before
