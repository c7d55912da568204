"""A small world for the service's tests: a site with a kiosk, a merchant, couriers, operators,
and a stand-in kiosk that answers commands the way the bridge does (for tests below MQTT)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from firmware_bridge import contract
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.kiosk_link.errors import CommandTimeout
from locker_service.kiosks.handler import StoryHandler
from locker_service.live import LiveHub, LiveMessage, Subscription
from locker_service.models import Compartment, Order, OrderEvent, Timer, WebhookDelivery, utcnow
from locker_service.sites import service as admin
from locker_service.timers.service import TimerKind

COURIER_PIN = "482913"
CLOCK_SLACK_S = 0.01


@dataclass
class World:
    site_id: int
    site_code: str
    kiosk_id: int
    kiosk_code: str
    kiosk_token: str
    merchant_id: int
    merchant_key: str
    courier_code: str
    operator_token: str
    viewer_token: str
    admin_token: str
    other_site_id: int
    other_kiosk_token: str
    other_operator_token: str
    courier_pin: str = COURIER_PIN

    def merchant(self) -> dict[str, str]:
        return {"X-API-Key": self.merchant_key}

    def kiosk(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.kiosk_token}"}

    def operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.operator_token}"}

    def dropoff_body(self, order_ref: str) -> dict[str, Any]:
        """The courier's drop-off at the kiosk, with the right code and PIN."""
        return {"courier_code": self.courier_code, "pin": self.courier_pin, "order_ref": order_ref}

    def order_body(self, ref: str | None = None, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "external_ref": ref or f"ref-{uuid.uuid4().hex[:8]}",
            "site": self.site_code,
            "purchaser_name": "Mia",
            "purchaser_contact": "json://127.0.0.1:9/hook",
            "size": "M",
            "temperature_class": "hot",
        }
        body.update(overrides)
        return body


async def seed(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    layout: str = "S:1,M:3",
    unheated: frozenset[int] = frozenset(),
    kiosk_code: str | None = None,
) -> World:
    tag = uuid.uuid4().hex[:8]
    async with session_scope(sessionmaker) as s:
        site = await admin.create_site(s, f"site-{tag}", "Tower A")
        other = await admin.create_site(s, f"other-{tag}", "Tower B")
        kiosk = await admin.create_kiosk(
            s, f"site-{tag}", kiosk_code or f"k-{tag}", "Lobby", layout, unheated
        )
        other_kiosk = await admin.create_kiosk(s, f"other-{tag}", f"ko-{tag}", "Hall", "M:2")
        merchant = await admin.create_merchant(s, "Noodle Bar", [f"site-{tag}"])
        await admin.create_courier(
            s, settings.secret_key, f"c-{tag}", "Sam", merchant.id, None, COURIER_PIN
        )
        operator = await admin.create_operator(s, "Olga", "operator", [f"site-{tag}"])
        viewer = await admin.create_operator(s, "Vic", "viewer", [f"site-{tag}"])
        boss = await admin.create_operator(s, "Ada", "admin", [])
        stranger = await admin.create_operator(s, "Otto", "operator", [f"other-{tag}"])
    assert kiosk.secret and merchant.secret and operator.secret and viewer.secret
    assert boss.secret and other_kiosk.secret and stranger.secret
    return World(
        site_id=site.id,
        site_code=f"site-{tag}",
        kiosk_id=kiosk.id,
        kiosk_code=kiosk_code or f"k-{tag}",
        kiosk_token=kiosk.secret,
        merchant_id=merchant.id,
        merchant_key=merchant.secret,
        courier_code=f"c-{tag}",
        operator_token=operator.secret,
        viewer_token=viewer.secret,
        admin_token=boss.secret,
        other_site_id=other.id,
        other_kiosk_token=other_kiosk.secret,
        other_operator_token=stranger.secret,
    )


@dataclass
class FakeKiosk:
    """Answers commands like the bridge would; `answers[action]` scripts the next statuses.

    `commands` lists every command received, in order, with its request id; a request id heard
    before is answered from the record of it, as the bridge's request store does, and not
    carried out again (`run` lists the request ids carried out)."""

    commands: list[tuple[str, str, int, dict[str, Any]]] = field(default_factory=list)
    answers: dict[str, list[str]] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)
    run: list[str] = field(default_factory=list)
    clock_behind: dict[str, float] = field(default_factory=dict)  # what the link would measure
    _record: dict[str, contract.Reply] = field(default_factory=dict)

    async def command(
        self,
        kiosk_id: str,
        action: str,
        compartment: int,
        args: dict[str, Any],
        timeout_s: float,
        *,
        request_id: str | None = None,
    ) -> contract.Reply:
        request_id = request_id or uuid.uuid4().hex
        self.commands.append((kiosk_id, action, compartment, args))
        self.request_ids.append(request_id)
        if request_id in self._record:
            return self._record[request_id]
        self.run.append(request_id)
        scripted = self.answers.get(action)
        status = scripted.pop(0) if scripted else "succeeded"
        if status == "no_final_answer":
            # Accepted, then nothing before the deadline; it ran, and its record says so.
            self._record[request_id] = contract.Reply(request_id=request_id, status="succeeded")
            raise CommandTimeout(f"{action} on {kiosk_id}/{compartment}: no final answer")
        # "failed:faulted" answers as the bridge does for a board refusing with ERR FAULTED.
        status, _, error = status.partition(":")
        data = {"error": error} if error else {}
        reply = contract.Reply(request_id=request_id, status=status, data=data)  # type: ignore[arg-type]
        self._record[request_id] = reply
        return reply

    def clock_behind_s(self, kiosk_id: str) -> float:
        return self.clock_behind.get(kiosk_id, 0.0)

    def unlocks(self) -> list[int]:
        return [n for _, action, n, _ in self.commands if action == "unlock"]

    def actions(self, compartment: int) -> list[str]:
        return [action for _, action, n, _ in self.commands if n == compartment]


def database_away(*_args: object, **_kwargs: object) -> None:
    """Stands for a session factory (or scope) while the database is unreachable."""
    raise ConnectionRefusedError(111, "Connection refused")


def record_pickup_answers(ctx: ServiceContext) -> list[dict[str, object]]:
    """What the kiosk screen is told after each scan (the live hub's `pickup` messages)."""
    answers: list[dict[str, object]] = []
    publish = ctx.hub.publish

    def recording(kind: str, data: dict[str, object], site_id: int | None = None) -> None:
        if kind == "pickup":
            answers.append(data)
        publish(kind, data, site_id)

    ctx.hub.publish = recording  # type: ignore[method-assign]
    return answers


async def create_order(client: httpx.AsyncClient, world: World, **overrides: Any) -> dict[str, Any]:
    answer = await client.post(
        "/api/v1/orders", json=world.order_body(**overrides), headers=world.merchant()
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def merchant_listens(client: httpx.AsyncClient, world: World) -> None:
    """The merchant subscribes a webhook to every event type (the default): what it would be
    sent is queued, and read back with `merchant_heard`."""
    answer = await client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hooks/locker"},
        headers=world.merchant(),
    )
    assert answer.status_code == 201, answer.text


async def merchant_heard(ctx: ServiceContext, order_id: uuid.UUID) -> list[dict[str, Any]]:
    """The webhook events queued for the order, oldest first."""
    async with ctx.sessionmaker() as session:
        rows = await session.scalars(
            select(WebhookDelivery.payload)
            .where(WebhookDelivery.order_id == order_id)
            .order_by(WebhookDelivery.id)
        )
        return list(rows.all())


async def published(hub: LiveHub, live: Subscription) -> list[LiveMessage]:
    """What reached the live hub so far (each publish is synchronous), up to a sentinel
    published now: it is there at once, so the wait only guards against a hang."""
    hub.publish("sentinel", {})
    seen: list[LiveMessage] = []
    while (message := await live.next(30.0)) is not None and message.kind != "sentinel":
        seen.append(message)
    assert message is not None, "the sentinel never came"
    return seen


def token_of(order: dict[str, Any]) -> str:
    return str(order["purchaser_url"]).rsplit("/p/", 1)[1].split("?")[0]


async def event(
    ctx: ServiceContext, world: World, type_: str, n: int | None = None, **data: Any
) -> None:
    # A handler of its own on the running context: the same class the kiosk link calls, whose
    # only state of its own is a cache of kiosk rows.
    await StoryHandler(ctx).on_event(
        world.kiosk_code,
        contract.Event(event_id=uuid.uuid4().hex, type=type_, compartment=n, data=data),  # type: ignore[arg-type]
    )


def cycles_have_run(ctx: ServiceContext) -> None:
    """The kiosk's reports are judged as if the cycles they end had run their time: the
    service's clock (which only judges reports) is set a day on, instead of waiting."""
    ctx.clock = lambda: utcnow() + timedelta(days=1)


async def dropped_off(
    client: httpx.AsyncClient, world: World, ctx: ServiceContext, **overrides: Any
) -> tuple[dict[str, Any], int]:
    """An order created, dropped off and shut in with food: (order as created, compartment)."""
    order = await create_order(client, world, **overrides)
    dropped = await client.post(
        "/api/v1/kiosk/dropoff",
        json=world.dropoff_body(order["external_ref"]),
        headers=world.kiosk(),
    )
    assert dropped.status_code == 200, dropped.text
    n = int(dropped.json()["compartment"])
    for kind in ("door_opened", "item_placed", "door_closed"):
        await event(ctx, world, kind, n)
    return order, n


async def make_ready(
    client: httpx.AsyncClient, world: World, ctx: ServiceContext, **overrides: Any
) -> tuple[dict[str, Any], int]:
    """An order taken through drop-off and its cycle: (order as created, compartment number)."""
    from locker_service.timer_loop.loop import TimerLoop

    order, n = await dropped_off(client, world, ctx, **overrides)
    await TimerLoop(ctx).run_due()
    cycles_have_run(ctx)
    await event(ctx, world, "disinfection_completed", n)
    status = (await client.get(f"/api/v1/p/{token_of(order)}")).json()
    assert status["state"] == "ready", status
    return order, n


async def order_of(ctx: ServiceContext, order_id: str) -> Order:
    async with ctx.sessionmaker() as session:
        order = await session.get(Order, uuid.UUID(order_id))
        assert order is not None
        return order


async def compartment(ctx: ServiceContext, world: World, n: int) -> Compartment:
    async with ctx.sessionmaker() as session:
        found = await session.scalar(
            select(Compartment).where(
                Compartment.kiosk_id == world.kiosk_id, Compartment.number == n
            )
        )
        assert found is not None
        return found


async def trail(ctx: ServiceContext, order_id: str) -> list[str]:
    """The order's record: its steps' actions, oldest first."""
    async with ctx.sessionmaker() as session:
        return list(
            (
                await session.scalars(
                    select(OrderEvent.action)
                    .where(OrderEvent.order_id == uuid.UUID(order_id))
                    .order_by(OrderEvent.id)
                )
            ).all()
        )


async def until_due(service: ServiceContext, kind: TimerKind) -> None:
    """Wait until the service's own clock reaches the due time of its pending `kind` timer.

    A wait in the system's time, not a guessed wall-clock budget: the timer's `due_at` is what
    the service computed (nominal delay / time scale), and `utcnow` is the clock it compares
    against, so a starved machine only makes the wait end later, never too early."""
    async with service.sessionmaker() as session:
        due = await session.scalar(
            select(func.min(Timer.due_at)).where(Timer.kind == kind.value, Timer.state == "pending")
        )
    assert due is not None, f"no pending {kind.value} timer"
    # asyncio sleeps on the monotonic clock and the service compares the wall clock: the
    # slack covers their difference over a wait of seconds.
    await asyncio.sleep(max((due - utcnow()).total_seconds(), 0.0) + CLOCK_SLACK_S)
    assert utcnow() >= due


async def due_now(
    service: ServiceContext, kind: TimerKind, order_id: str | uuid.UUID | None = None
) -> None:
    """Bring the pending `kind` timers (of one order, if given) forward to a second ago: the
    system's own clock past their time without waiting for it. The timer loop runs them next."""
    where = [Timer.kind == kind.value, Timer.state == "pending"]
    if order_id is not None:
        where.append(Timer.order_id == uuid.UUID(str(order_id)))
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(Timer).where(*where).values(due_at=utcnow() - timedelta(seconds=1))
        )


def board_snapshot(
    n: int, *, occupied: bool, door_open: bool = False, **changes: Any
) -> contract.CompartmentSnapshot:
    """What the board reports of a compartment: shut, latched, not heating, 64 °C."""
    values: dict[str, Any] = {
        "n": n,
        "door_open": door_open,
        "lock_released": False,
        "occupied": occupied,
        "heater_on": False,
        "uv_on": False,
        "disinfecting": False,
        "disinfect_remaining_s": 0,
        "temp_c": 64.0,
        "setpoint_c": None,
        "ts": utcnow(),
    }
    values.update(changes)
    return contract.CompartmentSnapshot(**values)


async def fault_told_before_ready(ctx: ServiceContext, order: dict[str, Any]) -> None:
    """Her fault notice an hour ago and her food ready half an hour ago: told during its cycle,
    which ran again once repaired, and told it was ready since."""
    async with session_scope(ctx.sessionmaker) as session:
        await session.execute(
            update(OrderEvent)
            .where(
                OrderEvent.order_id == uuid.UUID(order["id"]),
                OrderEvent.action == "notice:compartment_fault",
            )
            .values(at=utcnow() - timedelta(hours=1))
        )
        await session.execute(
            update(Order)
            .where(Order.id == uuid.UUID(order["id"]))
            .values(ready_at=utcnow() - timedelta(minutes=30))
        )
