"""Offline pickups, the service's side (docs/adr/0077), through a real Mosquitto and the service's
kiosk link: each kiosk is supplied with its ready orders' verifiers (never a code), and a pickup
the kiosk decided alone, journalled and replayed once the link is back, completes the order
once, audited as offline; one the service would not have allowed raises a conflict alert."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import InstrumentedAttribute

from firmware_bridge import contract
from firmware_bridge.contract.codes import code_mac
from locker_service.alerts.catalogue import UNDELIVERABLE_ALERT
from locker_service.alerts.service import raise_alert
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.foodsafety.watch import Unsafe
from locker_service.haccp import service as haccp
from locker_service.haccp.record import rows_of
from locker_service.kiosk_link.link import KioskLink
from locker_service.kiosks.story import Story
from locker_service.main import create_app
from locker_service.models import (
    Alert,
    Compartment,
    DoorOpening,
    KioskEvent,
    NotificationOutbox,
    Order,
    OrderEvent,
    PickupAttempt,
    Site,
    Timer,
    utcnow,
)
from locker_service.orders import codes
from locker_service.pickup.repository import KEYPAD_OFFLINE_SOURCE
from locker_service.timers.service import TimerKind
from tests.locker_service.conftest import make_settings
from tests.locker_service.test_story_mqtt import Rig, until
from tests.locker_service.world import seed
from tests.support.mosquitto import MosquittoProcess
from tests.support.scripted_kiosk import ScriptedKiosk

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]

TIME_SCALE = 600.0
HOLD_CYCLE_S = 60.0  # nominal: the hold cycle takes a tenth of a second (not the subject)


@pytest.fixture
async def rig(database_url: str, private_mosquitto: MosquittoProcess) -> AsyncIterator[Rig]:
    kiosk_code = f"offl-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        database_url,
        kiosk_link_enabled=True,
        timers_enabled=True,
        mqtt_url=private_mosquitto.url,
        replica_id=f"offl-{uuid.uuid4().hex[:6]}",
        time_scale=TIME_SCALE,
        disinfection_s=HOLD_CYCLE_S,
        dropoff_door_timeout_s=6000.0,
        reminder_after_s=1e6,
        timer_poll_s=0.1,
        command_timeout_s=5.0,
        offline_supply_refresh_s=1.0,
        # The food's deadline and the purchaser's hold (4 nominal hours each: 24 s here) far
        # out: a test starved beside other work must not see its order end as unsafe or expired.
        food_cooking_limit_s=360000.0,
        hold_limit_s=360000.0,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        ctx: ServiceContext = app.state.ctx
        world = await seed(ctx.sessionmaker, settings, kiosk_code=kiosk_code)
        kiosk = ScriptedKiosk(
            private_mosquitto.host,
            private_mosquitto.port,
            kiosk_code,
            compartments=4,
            time_scale=TIME_SCALE,
        ).start()
        try:
            await until(lambda: app.state.runtime.link.ready, 10, "the kiosk link")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield Rig(ctx, client, world, kiosk)
        finally:
            with contextlib.suppress(Exception):
                kiosk.stop()


async def _order(rig: Rig, order_id: str) -> Order:
    async with rig.ctx.sessionmaker() as session:
        order = await session.get(Order, uuid.UUID(order_id))
        assert order is not None
        return order


async def _ready_order(rig: Rig, ref: str) -> tuple[str, int]:
    answer = await rig.client.post(
        "/api/v1/orders", json=rig.world.order_body(ref), headers=rig.world.merchant()
    )
    assert answer.status_code == 201, answer.text
    order_id = str(answer.json()["id"])
    dropped = await rig.client.post(
        "/api/v1/kiosk/dropoff",
        json={
            "courier_code": rig.world.courier_code,
            "pin": rig.world.courier_pin,
            "order_ref": ref,
        },
        headers=rig.world.kiosk(),
    )
    assert dropped.status_code == 200, dropped.text
    n = int(dropped.json()["compartment"])
    rig.kiosk.open_door(n)
    rig.kiosk.place_item(n)
    rig.kiosk.close_door(n)

    async def ready() -> bool:
        return (await _order(rig, order_id)).state == "ready"

    await until(ready, 30, f"order {ref} ready")
    return order_id, n


def _supplied(rig: Rig, order_id: str) -> contract.OfflineOrder | None:
    if not rig.kiosk.supplies:
        return None
    return next((o for o in rig.kiosk.supplies[-1].orders if o.order_id == order_id), None)


def _token_of(rig: Rig, order: Order) -> str:
    return codes.pickup_token(rig.ctx.settings.secret_key, order.id, order.token_salt)


async def _handled(rig: Rig, event_id: str) -> bool:
    async with rig.ctx.sessionmaker() as session:
        return (
            await session.scalar(select(KioskEvent.id).where(KioskEvent.event_id == event_id))
            is not None
        )


async def _pickup_openings(rig: Rig, order_id: str) -> list[DoorOpening]:
    """The order's openings but the courier's."""
    async with rig.ctx.sessionmaker() as session:
        found = await session.scalars(
            select(DoorOpening).where(DoorOpening.order_id == uuid.UUID(order_id))
        )
        return [o for o in found.all() if not o.who.startswith("courier")]


async def _alerts(rig: Rig, kind: str) -> list[Alert]:
    async with rig.ctx.sessionmaker() as session:
        return list((await session.scalars(select(Alert).where(Alert.kind == kind))).all())


async def test_her_food_held_after_a_fault_is_supplied_held_fault_cleared_or_not(
    rig: Rig,
) -> None:
    """The kiosk cut off refuses it too (ADR 0128): at once at the fault, and after the fault
    has cleared, when its board no longer shows why."""
    order_id, n = await _ready_order(rig, "offl-held")
    await until(lambda: _supplied(rig, order_id) is not None, 10, "the order supplied")
    assert _supplied(rig, order_id).held is False  # type: ignore[union-attr]
    rig.kiosk.raise_fault(n, "heating_watchdog")
    await until(
        lambda: getattr(_supplied(rig, order_id), "held", False), 10, "the order supplied held"
    )
    rig.kiosk.clear_fault(n)

    compartment_id = (await _order(rig, order_id)).compartment_id

    async def cleared() -> bool:
        async with rig.ctx.sessionmaker() as session:
            c = await session.get(Compartment, compartment_id)
            return c is not None and c.fault is None

    await until(cleared, 10, "the fault cleared")
    count = len(rig.kiosk.supplies)
    await until(lambda: len(rig.kiosk.supplies) >= count + 2, 10, "two supplies since")
    supplied = _supplied(rig, order_id)
    assert supplied is not None and supplied.held


async def test_the_kiosk_is_supplied_with_verifiers_of_its_ready_orders_never_the_codes(
    rig: Rig,
) -> None:
    order_id, n = await _ready_order(rig, "offl-supply")
    await until(lambda: _supplied(rig, order_id) is not None, 10, "the order supplied")
    order = await _order(rig, order_id)
    token = _token_of(rig, order)
    code = codes.fallback_code(rig.ctx.settings.secret_key, token)
    supply = rig.kiosk.supplies[-1]
    supplied = _supplied(rig, order_id)
    assert supplied is not None
    assert (supplied.compartment, supplied.used) == (n, False)
    assert supplied.token_sha256 == codes.token_hash(token)
    assert supplied.code_mac == code_mac(supply.key_bytes(), code)
    assert order.hold_until is not None and supplied.deadline == order.hold_until
    raw = supply.to_json().decode()
    assert token not in raw and code not in raw
    # The service's throttling of typed codes, for the keypad cut off (ADR 0119).
    s = rig.ctx.settings
    rules = supply.code_rules
    assert rules is not None
    assert (rules.source.free, rules.kiosk.free) == (
        s.pickup_source_free_failures,
        s.pickup_kiosk_free_failures_per_day,
    )
    assert rules.source.window_s == pytest.approx(s.scaled(s.pickup_source_window_s))
    assert rules.source.max_delay_s == pytest.approx(s.scaled(s.pickup_source_max_delay_s))
    assert rules.kiosk.window_s == pytest.approx(s.scaled(24 * 3600))
    assert rules.kiosk.first_delay_s == pytest.approx(s.scaled(s.pickup_kiosk_spacing_s))

    # Supplies keep coming (the kiosk's sign that the service is there), each with its own key.
    count = len(rig.kiosk.supplies)
    await until(lambda: len(rig.kiosk.supplies) >= count + 2, 10, "two more supplies")
    keys = {s.code_key for s in rig.kiosk.supplies}
    assert len(keys) == len(rig.kiosk.supplies)
    # Each sent under the kiosk's lease, counting up (ADR 0115): the bridge orders them so.
    async with rig.ctx.sessionmaker() as session:
        epoch = await session.scalar(
            text("SELECT epoch FROM kiosk_leases WHERE kiosk_code = :kiosk"),
            {"kiosk": rig.kiosk.kiosk_id},
        )
    assert epoch and {s.epoch for s in rig.kiosk.supplies} == {epoch}
    seqs = [s.seq for s in rig.kiosk.supplies]
    assert None not in seqs and seqs == sorted(set(seqs), key=lambda s: s or 0)
    # None goes to a kiosk this replica does not hold.
    assert isinstance(rig.ctx.commander, KioskLink)
    assert "does not hold" in (rig.ctx.commander.supply("offl-not-held", supply) or "")


async def test_a_pickup_decided_offline_and_replayed_completes_the_order_once(rig: Rig) -> None:
    order_id, n = await _ready_order(rig, "offl-replay")
    decided = rig.kiosk.publish_event(
        "offline_pickup", n, {"order_id": order_id, "method": "qr", "request_id": "offline-r1"}
    )
    rig.kiosk.release_latch(n)
    rig.kiosk.open_door(n)
    rig.kiosk.remove_item(n)
    rig.kiosk.close_door(n)
    rig.kiosk.republish_event(decided)  # at least once: the journal may arrive twice

    async def picked_up() -> bool:
        return (await _order(rig, order_id)).state == "picked_up"

    await until(picked_up, 20, "the order picked up")
    await until(lambda: _handled(rig, rig.kiosk.events[-1].event_id), 10, "the duplicate")
    [opening] = await _pickup_openings(rig, order_id)
    assert opening.who == "purchaser:qr_offline" and opening.door_opened_at is not None
    assert opening.at == decided.ts  # when the kiosk decided, not when the service heard
    assert await _alerts(rig, "door_opened_unexplained") == []
    assert await _alerts(rig, "impossible_report") == []
    assert await _alerts(rig, "offline_pickup_conflict") == []
    # the kiosk is told: the order is no longer supplied
    await until(
        lambda: rig.kiosk.supplies and _supplied(rig, order_id) is None, 10, "a supply without it"
    )

    # the same QR scanned online afterwards opens nothing
    order = await _order(rig, order_id)
    before = len(rig.kiosk.received)
    scan = rig.kiosk.publish_event("scan", None, {"text": _token_of(rig, order)})
    await until(lambda: _handled(rig, scan.event_id), 10, "the scan")
    async with rig.ctx.sessionmaker() as session:
        stored = await session.scalar(
            select(KioskEvent.data).where(KioskEvent.event_id == scan.event_id)
        )
    assert stored is not None and json.loads(json.dumps(stored))["outcome"] == "code_used"
    assert [r for r in rig.kiosk.received[before:] if r.command.action == "unlock"] == []


async def test_a_door_opened_offline_and_held_open_keeps_the_code_used(rig: Rig) -> None:
    """The code-release timer gives a code back only if its door never opened: an offline
    opening counts as her pickup's opening, so the next supply still says used."""
    order_id, n = await _ready_order(rig, "offl-held")
    decided = rig.kiosk.publish_event(
        "offline_pickup", n, {"order_id": order_id, "method": "qr", "request_id": "offline-r3"}
    )
    rig.kiosk.release_latch(n)
    rig.kiosk.open_door(n)  # she stands with the door open, past the release window

    async def released() -> bool:
        async with rig.ctx.sessionmaker() as session:
            states = await session.scalars(
                select(Timer.state).where(
                    Timer.order_id == uuid.UUID(order_id), Timer.kind == "code_release"
                )
            )
            return list(states.all()) == ["done"]

    async def door_opened() -> bool:  # her opening: the courier's has opened long since
        return any(o.door_opened_at is not None for o in await _pickup_openings(rig, order_id))

    await until(lambda: _handled(rig, decided.event_id), 10, "the journal")
    await until(door_opened, 10, "her door's opening recorded")
    # The release window is over (its timer brought forward, not waited for: at least two
    # command timeouts of real time).
    async with rig.ctx.sessionmaker() as session, session.begin():
        await session.execute(
            update(Timer)
            .where(Timer.order_id == uuid.UUID(order_id), Timer.kind == "code_release")
            .values(due_at=utcnow())
        )
    assert rig.ctx.timers is not None
    rig.ctx.timers.wake()
    await until(released, 20, "the code-release timer run")
    order = await _order(rig, order_id)
    assert order.code_used_at is not None and order.state == "ready"
    count = len(rig.kiosk.supplies)
    await until(lambda: len(rig.kiosk.supplies) > count, 10, "the next supply")
    supplied = _supplied(rig, order_id)
    assert supplied is not None and supplied.used


async def test_an_offline_unlock_the_board_refused_withdraws_the_opening_and_returns_the_code(
    rig: Rig,
) -> None:
    order_id, n = await _ready_order(rig, "offl-refused")
    rig.kiosk.publish_event(
        "offline_pickup", n, {"order_id": order_id, "method": "code", "request_id": "offline-r4"}
    )
    failed = rig.kiosk.publish_event(
        "offline_pickup_failed",
        n,
        {"order_id": order_id, "request_id": "offline-r4", "status": "rejected"},
    )
    await until(lambda: _handled(rig, failed.event_id), 10, "the refusal")
    order = await _order(rig, order_id)
    assert (order.state, order.code_used_at) == ("ready", None)  # hers again
    assert await _pickup_openings(rig, order_id) == []  # explains no door opened later
    count = len(rig.kiosk.supplies)
    await until(lambda: len(rig.kiosk.supplies) > count, 10, "the next supply")
    supplied = _supplied(rig, order_id)
    assert supplied is not None and not supplied.used
    # A refusal naming an order of another compartment changes nothing.
    other = 1 if n != 1 else 2
    stray = rig.kiosk.publish_event(
        "offline_pickup_failed",
        other,
        {"order_id": order_id, "request_id": "x", "status": "failed"},
    )
    await until(lambda: _handled(rig, stray.event_id), 10, "the stray refusal")
    assert await _alerts(rig, "offline_pickup_conflict")


async def test_an_offline_pickup_of_an_order_expired_meanwhile_raises_a_conflict(
    rig: Rig,
) -> None:
    order_id, n = await _ready_order(rig, "offl-conflict")
    async with rig.ctx.sessionmaker() as session, session.begin():
        # the hold ran out while the kiosk was cut off: it could not know
        await session.execute(
            update(Order)
            .where(Order.id == uuid.UUID(order_id))
            .values(state="expired", closed_at=utcnow() - timedelta(seconds=1))
        )
    event = rig.kiosk.publish_event(
        "offline_pickup", n, {"order_id": order_id, "method": "code", "request_id": "offline-r2"}
    )
    rig.kiosk.release_latch(n)
    rig.kiosk.open_door(n)
    await until(lambda: _handled(rig, event.event_id), 10, "the journal")
    await until(lambda: _alerts(rig, "offline_pickup_conflict"), 10, "the conflict alert")
    [alert] = await _alerts(rig, "offline_pickup_conflict")
    assert alert.severity == "critical" and "expired" in alert.message
    order = await _order(rig, order_id)
    assert (order.state, order.code_used_at) == ("expired", None)  # not moved
    [opening] = await _pickup_openings(rig, order_id)
    assert (opening.who, opening.why) == ("purchaser:keypad_offline", "pickup")
    assert await _alerts(rig, "door_opened_unexplained") == []


async def test_an_offline_pickup_naming_an_order_not_in_that_compartment_changes_nothing(
    rig: Rig,
) -> None:
    order_id, n = await _ready_order(rig, "offl-wrong")
    other = 1 if n != 1 else 2
    event = rig.kiosk.publish_event(
        "offline_pickup", other, {"order_id": order_id, "method": "qr", "request_id": "x"}
    )
    await until(lambda: _handled(rig, event.event_id), 10, "the journal")
    await until(lambda: _alerts(rig, "offline_pickup_conflict"), 10, "the alert")
    order = await _order(rig, order_id)
    assert (order.state, order.code_used_at) == ("ready", None)
    assert await _pickup_openings(rig, order_id) == []


async def _past(moment: datetime) -> None:
    """Wait, on the service's clock, until `moment` has gone by."""
    await until(lambda: utcnow() > moment, 10, f"the clock past {moment:%H:%M:%S.%f}")


async def _hold_ends(rig: Rig, order_id: uuid.UUID, end: datetime) -> None:
    """Her hold brought forward to end at `end`, its timer due then."""
    async with rig.ctx.sessionmaker() as session, session.begin():
        await session.execute(update(Order).where(Order.id == order_id).values(hold_until=end))
        await session.execute(
            update(Timer)
            .where(Timer.order_id == order_id, Timer.kind == TimerKind.HOLD_EXPIRY.value)
            .values(due_at=end)
        )


async def _ended_by_the_service(rig: Rig, order_id: str, how: str, end: datetime) -> None:
    """The order ended on the service's clock at `end`: its hold ran out (the real hold-expiry
    timer, due then), or the food check's verdict of no reading (the story's own step)."""
    uid = uuid.UUID(order_id)
    if how == "hold":
        await _hold_ends(rig, uid, end)
    else:
        await _past(end)
        async with session_scope(rig.ctx.sessionmaker) as session:
            order = await session.get(Order, uid)
            assert order is not None
            verdict = Unsafe(end, "no temperature reading for more than 15 min")
            await Story(rig.ctx).spoil(session, order, verdict)

    async def expired() -> bool:
        return (await _order(rig, order_id)).state == "expired"

    await until(expired, 20, "the order expired by the service")


async def _takes_her_food(rig: Rig, order_id: str, n: int) -> None:
    """Through her unlocked door: opened, the food taken, shut; the order then picked up."""
    rig.kiosk.open_door(n)
    rig.kiosk.remove_item(n)
    rig.kiosk.close_door(n)

    async def picked_up() -> bool:
        return (await _order(rig, order_id)).state == "picked_up"

    await until(picked_up, 20, "the order picked up")


async def _row_of(rig: Rig, order_id: str, kind: str) -> int:
    async with rig.ctx.sessionmaker() as session:
        row_id = await session.scalar(
            select(NotificationOutbox.id).where(
                NotificationOutbox.order_id == uuid.UUID(order_id), NotificationOutbox.kind == kind
            )
        )
    assert row_id is not None
    return row_id


async def _outbox(rig: Rig, order_id: str, column: InstrumentedAttribute[str]) -> list[str]:
    """One column of the order's purchaser messages, oldest first."""
    async with rig.ctx.sessionmaker() as session:
        rows = await session.scalars(
            select(column)
            .where(NotificationOutbox.order_id == uuid.UUID(order_id))
            .order_by(NotificationOutbox.id)
        )
        return list(rows.all())


async def _statuses(rig: Rig, order_id: str) -> list[str]:
    return await _outbox(rig, order_id, NotificationOutbox.status)


async def _messages(rig: Rig, order_id: str) -> list[str]:
    return await _outbox(rig, order_id, NotificationOutbox.kind)


@pytest.mark.parametrize(
    "how, told_yet",
    [
        ("hold", "sent"),
        ("food_check", "sent"),
        ("hold", "untried"),
        ("hold", "failed"),
        ("hold", "never_left"),
    ],
)
async def test_a_pickup_made_offline_before_the_service_expired_the_order_stands(
    rig: Rig, how: str, told_yet: str
) -> None:
    """Cut off, the kiosk lets her collect; meanwhile the service, hearing nothing, ends the
    order (its hold ran out, or no reading for too long) and tells everyone it is over. Once
    the kiosk reports, her pickup stands and each person is told the truth (ADR 0112): she is
    sent a correction if the untrue message may have reached her, or it never goes (not tried
    yet, or given up on: then nothing is left for an operator to resend). A message given up on
    without any try leaving the service (no channel for her contact) never reached her: no
    correction follows it (ADR 0114)."""
    order_id, n = await _ready_order(rig, f"offl-late-{how}")
    decided = rig.kiosk.now()  # she scans while the kiosk is cut off; it journals the pickup
    assert rig.ctx.commander is not None
    # Ended after her pickup even by the latest reading of the kiosk's clock the rule allows.
    end = decided + timedelta(seconds=rig.ctx.commander.clock_behind_s(rig.kiosk.kiosk_id) + 0.5)
    await _ended_by_the_service(rig, order_id, how, end)
    discard = "expired_food" if how == "hold" else "food_unsafe"
    told = "expired" if how == "hold" else "food_unsafe"
    await until(lambda: _alerts(rig, discard), 10, "the task to discard the food")
    assert await _messages(rig, order_id) == ["ready", told]
    untrue = await _row_of(rig, order_id, told)
    if told_yet != "untried":  # as the outbox worker (off in this rig) would have
        left = told_yet != "never_left"
        async with session_scope(rig.ctx.sessionmaker) as session:
            await session.execute(
                update(NotificationOutbox)
                .where(NotificationOutbox.order_id == uuid.UUID(order_id))
                .values(
                    status=told_yet if left else "failed",
                    attempts=5 if left else 1,
                    may_have_reached=left,
                )
            )
            if told_yet in ("failed", "never_left"):
                await raise_alert(
                    session,
                    kind=UNDELIVERABLE_ALERT,
                    severity="warning",
                    message="the purchaser was not reached",
                    dedupe_key=f"{UNDELIVERABLE_ALERT}:{untrue}",
                )

    # Back in touch: the journal, then the door's own events, as the bridge's outbox sends them.
    rig.kiosk.publish_event(
        "offline_pickup",
        n,
        {"order_id": order_id, "method": "qr", "request_id": "offline-late"},
        ts=decided,
    )
    rig.kiosk.release_latch(n)
    await _takes_her_food(rig, order_id, n)
    order = await _order(rig, order_id)
    [opening] = await _pickup_openings(rig, order_id)
    assert opening.who == "purchaser:qr_offline" and opening.door_opened_at is not None
    assert order.code_used_at == decided and order.picked_up_at == opening.door_opened_at
    assert (order.failure_reason, order.food_unsafe_at, order.closed_at) == (None, None, None)
    assert await _alerts(rig, "offline_pickup_conflict") == []
    [task] = await _alerts(rig, discard)
    assert task.state == "resolved"  # no food left to discard
    if told_yet in ("untried", "never_left"):  # withdrawn: she never hears it
        assert await _messages(rig, order_id) == ["ready", told]
    else:  # a try may have reached her: corrected
        assert await _messages(rig, order_id) == ["ready", told, "collected"]
    if told_yet != "sent":
        assert (await _statuses(rig, order_id))[1] == "withdrawn"  # never (again)
    if told_yet in ("failed", "never_left"):
        [not_reached] = await _alerts(rig, UNDELIVERABLE_ALERT)
        assert not_reached.state == "resolved"  # nothing left to resend
    async with rig.ctx.sessionmaker() as session:
        actions = (
            await session.scalars(
                select(OrderEvent.action)
                .where(OrderEvent.order_id == uuid.UUID(order_id))
                .order_by(OrderEvent.id)
            )
        ).all()
        notice = await session.scalar(
            select(OrderEvent.detail).where(
                OrderEvent.order_id == uuid.UUID(order_id),
                OrderEvent.action == "notice:collected_before_end",
            )
        )
    assert "picked_up_before_end" in actions
    assert "removed" not in actions
    assert notice is not None and "withdrawn" in notice["message"]
    # The HACCP record of the day it was made carries the correction (ADR 0118).
    async with rig.ctx.sessionmaker() as session:
        recorded = await session.scalar(
            select(OrderEvent.at).where(
                OrderEvent.order_id == uuid.UUID(order_id),
                OrderEvent.action == "picked_up_before_end",
            )
        )
        site = await session.get(Site, rig.world.site_id)
        assert recorded is not None and site is not None
        day = recorded.astimezone(ZoneInfo(site.timezone)).date()
        record = await haccp.gather(session, rig.ctx.settings, site, day)
    corrected = {r[5]: r[6:8] for r in rows_of(record.text()) if r[:2] == ["correction", order_id]}
    assert corrected["outcome"] == ["expired", "picked_up"]
    assert corrected["ended_at"][1] == opening.door_opened_at.isoformat(timespec="seconds")
    assert ("food_unsafe_at" in corrected) == (how != "hold")


async def test_staff_emptying_after_she_left_her_food_inside_keeps_it_expired(
    rig: Rig,
) -> None:
    """Her offline pickup came before the end, but she shut the door on her food: the staff
    who take it out later do not make it hers (ADR 0112: the closing must end her opening)."""
    order_id, n = await _ready_order(rig, "offl-left")
    decided = rig.kiosk.now()
    assert rig.ctx.commander is not None
    end = decided + timedelta(seconds=rig.ctx.commander.clock_behind_s(rig.kiosk.kiosk_id) + 0.5)
    await _ended_by_the_service(rig, order_id, "hold", end)
    rig.kiosk.publish_event(
        "offline_pickup",
        n,
        {"order_id": order_id, "method": "qr", "request_id": "offline-left"},
        ts=decided,
    )
    rig.kiosk.release_latch(n)
    rig.kiosk.open_door(n)
    rig.kiosk.close_door(n)  # the food left inside
    rig.kiosk.release_latch(n)  # later, a staff member's key
    rig.kiosk.open_door(n)
    rig.kiosk.remove_item(n)
    rig.kiosk.close_door(n)
    closed = rig.kiosk.events[-1]
    await until(lambda: _handled(rig, closed.event_id), 10, "the staff's closing")
    order = await _order(rig, order_id)
    assert (order.state, order.picked_up_at) == ("expired", None)
    assert (await _alerts(rig, "expired_food"))[0].state != "resolved"


async def test_her_second_offline_try_after_leaving_the_food_inside_stands(rig: Rig) -> None:
    """Both tries before the end, the first shut on the food: the second is not a conflict,
    and the order is hers (ADR 0112)."""
    order_id, n = await _ready_order(rig, "offl-twice")
    first = rig.kiosk.now()
    second = first + timedelta(milliseconds=100)
    assert rig.ctx.commander is not None
    end = second + timedelta(seconds=rig.ctx.commander.clock_behind_s(rig.kiosk.kiosk_id) + 0.5)
    await _ended_by_the_service(rig, order_id, "hold", end)
    for stamp, request_id in ((first, "offline-first"), (second, "offline-second")):
        rig.kiosk.publish_event(
            "offline_pickup",
            n,
            {"order_id": order_id, "method": "qr", "request_id": request_id},
            ts=stamp,
        )
        rig.kiosk.release_latch(n)
        if stamp == first:
            rig.kiosk.open_door(n)
            rig.kiosk.close_door(n)  # the food left inside
    await _takes_her_food(rig, order_id, n)
    assert await _alerts(rig, "offline_pickup_conflict") == []
    assert (await _order(rig, order_id)).code_used_at == first  # her use before the end


async def test_an_expired_compartment_emptied_by_staff_stays_expired(rig: Rig) -> None:
    """The correction needs her code's use before the end and her door opening: staff taking
    out expired food change nothing of the order."""
    order_id, n = await _ready_order(rig, "offl-staff")
    await _ended_by_the_service(rig, order_id, "hold", utcnow())
    rig.kiosk.release_latch(n)  # a staff member's key
    rig.kiosk.open_door(n)
    rig.kiosk.remove_item(n)
    rig.kiosk.close_door(n)
    closed = rig.kiosk.events[-1]
    assert closed.type == "door_closed"
    await until(lambda: _handled(rig, closed.event_id), 10, "the closing")
    order = await _order(rig, order_id)
    assert (order.state, order.picked_up_at) == ("expired", None)
    assert await _messages(rig, order_id) == ["ready", "expired"]


async def test_a_hold_running_out_while_her_code_opens_the_door_waits_for_its_closing(
    rig: Rig,
) -> None:
    """Online, her code is accepted as the hold runs out: she is not told it expired while she
    takes her food; the door's closing decides (ADR 0112)."""
    order_id, n = await _ready_order(rig, "offl-last-second")
    order = await _order(rig, order_id)
    scan = rig.kiosk.publish_event("scan", None, {"text": _token_of(rig, order)})
    await until(lambda: _handled(rig, scan.event_id), 10, "the scan")
    assert (await _order(rig, order_id)).code_used_at is not None
    end = utcnow()
    uid = uuid.UUID(order_id)
    await _hold_ends(rig, uid, end)

    async def looked_at() -> bool:  # the hold's timer ran and is due again, later
        async with rig.ctx.sessionmaker() as session:
            timer = await session.scalar(
                select(Timer).where(Timer.order_id == uid, Timer.kind == "hold_expiry")
            )
            return timer is not None and timer.state == "pending" and timer.due_at > end

    await until(looked_at, 10, "the hold's timer to have run")
    assert (await _order(rig, order_id)).state == "ready"
    await _takes_her_food(rig, order_id, n)
    assert await _messages(rig, order_id) == ["ready"]
    assert await _alerts(rig, "expired_food") == []


async def test_wrong_codes_refused_offline_spend_the_kiosk_s_daily_budget(rig: Rig) -> None:
    """Guessing at a cut-off kiosk's keypad and then online is one budget (ADR 0039, 0077)."""
    free = rig.ctx.settings.pickup_kiosk_free_failures_per_day
    refused = [rig.kiosk.publish_event("offline_code_refused", None) for _ in range(free)]
    rig.kiosk.republish_event(refused[-1])  # at least once: counted once
    await until(lambda: _handled(rig, refused[-1].event_id), 20, "the refusals")
    # The kiosk's budget spent (the keypad is everyone's: its own count raises nothing).
    [alert] = await _alerts(rig, "kiosk_under_attack")
    assert f"{free} wrong pickup codes within a day" in alert.message
    async with rig.ctx.sessionmaker() as session:
        counted = await session.scalar(
            select(func.count())
            .select_from(PickupAttempt)
            .where(
                PickupAttempt.kiosk_id == rig.world.kiosk_id,
                PickupAttempt.source == KEYPAD_OFFLINE_SOURCE + rig.kiosk.kiosk_id,
                PickupAttempt.ok.is_(False),
            )
        )
    assert counted == free  # each once, in the kiosk's day as online failures are


async def test_the_kiosk_is_told_the_day_s_wrong_codes_at_its_screen(rig: Rig) -> None:
    """Its keypad's budget goes on from them should it be cut off (ADR 0116); the keypad's
    own refusals, which it counts itself, are not in it."""
    for code in ("00000000", "00000001"):
        answer = await rig.client.post(
            "/api/v1/kiosk/pickup", json={"code": code}, headers=rig.world.kiosk()
        )
        assert answer.json()["error"] == "invalid_code", answer.text
    refused = rig.kiosk.publish_event("offline_code_refused", None)
    await until(lambda: _handled(rig, refused.event_id), 20, "the keypad's refusal")
    count = len(rig.kiosk.supplies)
    await until(lambda: len(rig.kiosk.supplies) > count + 1, 10, "a supply after it")
    assert rig.kiosk.supplies[-1].code_failures == 2
