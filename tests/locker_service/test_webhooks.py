"""Merchants' webhooks against a real local receiver: each event of an order's story in order,
signed as Standard Webhooks (checked with the `standardwebhooks` library), at least once with
backoff while the receiver is down and once per id when it is back, dead letters redelivered,
secrets rotated with overlap, and only the merchant's own endpoints and deliveries."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook

from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.models import Alert, WebhookDelivery, WebhookEndpoint, utcnow
from locker_service.notifications import webhooks
from locker_service.notifications.webhooks import WebhookWorker, prune_finished_before
from locker_service.sites import service as admin
from tests.locker_service.world import World, cycles_have_run, dropped_off, event, token_of
from tests.support.threaded_server import serve_in_background

pytestmark = pytest.mark.slow


class Receiver:
    """An HTTP server on this machine that records what is posted and answers `status`."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 204
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if receiver.status < 300:
                    receiver.received.append((headers, body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/locker"

    def events(self) -> list[tuple[str, str]]:
        return [(h["webhook-id"], json.loads(b)["type"]) for h, b in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    serve_in_background(r.server)
    yield r
    r.server.shutdown()
    r.server.server_close()


async def register(
    client: httpx.AsyncClient, world: World, url: str, **body: Any
) -> dict[str, Any]:
    answer = await client.post(
        "/api/v1/webhooks", json={"url": url, **body}, headers=world.merchant()
    )
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()
    return made


async def deliver_all(worker: WebhookWorker, at: Any = None) -> None:
    """Rounds until nothing is due at `at` (each round sends what is next in its order)."""
    while await worker.run_once(at):
        pass


async def the_story(client: httpx.AsyncClient, world: World, service: ServiceContext) -> str:
    """An order dropped off, made ready and picked up; its id."""
    from locker_service.timer_loop.loop import TimerLoop

    order, n = await dropped_off(client, world, service, ref=f"wh-{uuid.uuid4().hex[:6]}")
    await TimerLoop(service).run_due()
    cycles_have_run(service)
    await event(service, world, "disinfection_completed", n)
    picked = await client.post(
        "/api/v1/kiosk/pickup",
        json={"code": (await client.get(f"/api/v1/p/{token_of(order)}")).json()["fallback_code"]},
        headers=world.kiosk(),
    )
    assert picked.status_code == 200, picked.text
    await event(service, world, "door_opened", n)
    await event(service, world, "item_removed", n)
    await event(service, world, "door_closed", n)
    return str(order["id"])


async def test_an_order_s_events_arrive_in_order_signed(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, receiver: Receiver
) -> None:
    endpoint = await register(app_client, world, receiver.url)
    assert endpoint["secret"].startswith("whsec_") and endpoint["events"][0] == "order.accepted"
    order_id = await the_story(app_client, world, service)
    await deliver_all(WebhookWorker(service.sessionmaker, service.settings))

    assert [t for _, t in receiver.events()] == [
        "order.accepted",
        "order.dropped_off",
        "order.ready",
        "order.picked_up",
    ]
    verifier = Webhook(endpoint["secret"])
    for headers, body in receiver.received:
        payload = verifier.verify(body, headers)  # raises on a bad signature or timestamp
        assert (
            payload["data"]["order_id"] == order_id and payload["data"]["site"] == world.site_code
        )
        sent = json.dumps(payload)
        assert "Mia" not in sent and "127.0.0.1:9" not in sent  # her name and contact stay
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(endpoint["secret"]).verify(receiver.received[0][1] + b" ", receiver.received[0][0])
    versions = [json.loads(b)["data"]["version"] for _, b in receiver.received]
    assert versions == sorted(versions) and len(set(versions)) == 4
    # Polling answers the same version with the order's state: the events line up against it.
    read = (await app_client.get(f"/api/v1/orders/{order_id}", headers=world.merchant())).json()
    assert (read["state"], read["version"]) == ("picked_up", versions[-1])


async def test_an_order_is_accepted_once_however_often_it_is_sent(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, receiver: Receiver
) -> None:
    """`order.accepted` is written with the order by the group-committed writer (both of its
    paths: this runs on SQLite and PostgreSQL): a retried create queues nothing more."""
    await register(app_client, world, receiver.url, events=["order.accepted"])
    body = world.order_body()
    created = await app_client.post("/api/v1/orders", json=body, headers=world.merchant())
    again = await app_client.post("/api/v1/orders", json=body, headers=world.merchant())
    assert created.status_code == 201 and again.status_code == 200
    await deliver_all(WebhookWorker(service.sessionmaker, service.settings))
    [(_, raw)] = receiver.received
    payload = json.loads(raw)
    assert payload["type"] == "order.accepted"
    assert payload["data"] | {"order_id": "-"} == {
        "order_id": "-",
        "external_ref": body["external_ref"],
        "state": "created",
        "site": world.site_code,
        "compartment": None,
        "deposited_at": None,
        "ready_at": None,
        "hold_until": None,
        "food_deadline": None,
        "food_unsafe_at": None,
        "picked_up_at": None,
        "closed_at": None,
        "reason": None,
        "version": 1,
    }
    assert payload["data"]["order_id"] == created.json()["id"]
    stamped = datetime.fromisoformat(payload["timestamp"])
    assert stamped == datetime.fromisoformat(created.json()["created_at"])


async def test_a_receiver_down_gets_everything_once_in_order_when_it_is_back(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, receiver: Receiver
) -> None:
    await register(app_client, world, receiver.url, events=["order.dropped_off", "order.ready"])
    worker = WebhookWorker(service.sessionmaker, service.settings)
    receiver.status = 503
    await the_story(app_client, world, service)
    now = utcnow()
    assert await worker.run_once(now) == 1  # only the first: the second waits its turn
    assert await worker.run_once(now) == 0  # backing off
    later = now + timedelta(seconds=service.settings.webhook_backoff_s * 1.3)
    assert await worker.run_once(later) == 1  # the same one, again
    receiver.status = 204
    much_later = later + timedelta(seconds=service.settings.webhook_backoff_s * 3)
    await deliver_all(worker, much_later)
    events = receiver.events()
    assert [t for _, t in events] == ["order.dropped_off", "order.ready"]
    assert len({i for i, _ in events}) == 2  # once per id
    async with service.sessionmaker() as session:
        rows = (await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))).all()
    assert [(d.status, d.attempts) for d in rows] == [("delivered", 3), ("delivered", 1)]


def test_a_delivery_is_retried_for_about_ten_hours_before_it_is_dead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the guide promises a merchant whose receiver is down overnight (ADR 0072): the
    waits between the default attempts, without their jitter, add up to about ten hours."""
    monkeypatch.setattr(webhooks.random, "uniform", lambda low, high: 1.0)
    settings = Settings(secret_key="k" * 32)
    waits = [webhooks.backoff_s(settings, n) for n in range(1, settings.webhook_max_attempts)]
    assert 9.5 * 3600 < sum(waits) < 11 * 3600, sum(waits) / 3600


async def test_a_dead_letter_is_listed_and_redelivered_with_its_id(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, receiver: Receiver
) -> None:
    await register(app_client, world, receiver.url, events=["order.dropped_off"])
    settings = service.settings.model_copy(update={"webhook_max_attempts": 2})
    worker = WebhookWorker(service.sessionmaker, settings)
    receiver.status = 500
    await dropped_off(app_client, world, service, ref=f"wh-{uuid.uuid4().hex[:6]}")
    now = utcnow()
    await worker.run_once(now)
    await worker.run_once(now + timedelta(hours=1))
    dead = (
        await app_client.get(
            "/api/v1/webhooks/deliveries", params={"status": "dead"}, headers=world.merchant()
        )
    ).json()
    assert [(d["event_type"], d["attempts"], d["last_error"]) for d in dead] == [
        ("order.dropped_off", 2, "HTTP 500")
    ]
    # The merchant's own channel failed: an operator is told, so someone calls them.
    [told] = await _alerts(service, "webhook_dead")
    assert told.state == "open" and told.site_id == world.site_id
    assert "127.0.0.1" in told.message and "order.dropped_off" in told.message
    assert "after 2 attempts (last: HTTP 500)" in told.message
    receiver.status = 200
    again = await app_client.post(
        f"/api/v1/webhooks/deliveries/{dead[0]['id']}/redeliver", headers=world.merchant()
    )
    assert again.status_code == 200 and again.json()["status"] == "pending"
    await deliver_all(worker)
    assert receiver.events() == [(dead[0]["message_id"], "order.dropped_off")]
    [told] = await _alerts(service, "webhook_dead")
    assert told.state == "resolved"  # the endpoint answers again
    again = await app_client.post(
        f"/api/v1/webhooks/deliveries/{dead[0]['id']}/redeliver", headers=world.merchant()
    )
    assert again.status_code == 200  # delivered: it may be sent again on request
    busy = await app_client.post(
        f"/api/v1/webhooks/deliveries/{dead[0]['id']}/redeliver", headers=world.merchant()
    )
    assert busy.status_code == 409 and busy.json()["error"] == "not_finished"  # on its way
    async with service.sessionmaker() as session, session.begin():
        other = await admin.create_merchant(session, "Dumpling House", [world.site_code])
    theirs = {"X-API-Key": str(other.secret)}
    assert (await app_client.get("/api/v1/webhooks/deliveries", headers=theirs)).json() == []
    stranger = await app_client.post(
        f"/api/v1/webhooks/deliveries/{dead[0]['id']}/redeliver", headers=theirs
    )
    assert stranger.status_code == 404


async def _alerts(service: ServiceContext, kind: str) -> list[Alert]:
    async with service.sessionmaker() as session:
        return list(await session.scalars(select(Alert).where(Alert.kind == kind)))


async def test_a_removed_endpoint_s_dead_letters_raise_nothing_and_the_list_pages_on(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, receiver: Receiver
) -> None:
    """Removing an endpoint is the merchant's doing: its queued deliveries are dead letters,
    and no operator is called. Past a page, `before_id` reads on."""
    endpoint = await register(app_client, world, receiver.url, events=["order.dropped_off"])
    for _ in range(3):
        await dropped_off(app_client, world, service, ref=f"wh-{uuid.uuid4().hex[:6]}")
    # Removed under a round (the endpoint disabled while its deliveries wait to be sent): the
    # round finds it gone as it sends.
    async with session_scope(service.sessionmaker) as session:
        await session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint["id"])
            .values(enabled=False)
        )
    await deliver_all(WebhookWorker(service.sessionmaker, service.settings))
    assert await _alerts(service, "webhook_dead") == []
    async with service.sessionmaker() as session:
        rows = (await session.scalars(select(WebhookDelivery))).all()
    assert [(d.status, d.last_error) for d in rows] == [("dead", "the endpoint was removed")] * 3

    async def page(**query: Any) -> list[int]:
        answer = await app_client.get(
            "/api/v1/webhooks/deliveries", params=query, headers=world.merchant()
        )
        assert answer.status_code == 200, answer.text
        return [d["id"] for d in answer.json()]

    every = await page()
    assert len(every) == 3 and every == sorted(every, reverse=True)
    first = await page(limit=2)
    assert first == every[:2]
    assert await page(limit=2, before_id=first[-1]) == every[2:]
    assert (
        await app_client.get(
            "/api/v1/webhooks/deliveries", params={"before_id": 0}, headers=world.merchant()
        )
    ).status_code == 422


async def test_the_dead_letter_alert_lasts_until_every_dead_letter_is_sent_again(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, receiver: Receiver
) -> None:
    """Another event getting through does not mean the merchant heard the dead one: the alert
    stays open until each dead letter there is sent again, or the endpoint is removed."""
    endpoint = await register(app_client, world, receiver.url, events=["order.dropped_off"])
    settings = service.settings.model_copy(update={"webhook_max_attempts": 1})
    worker = WebhookWorker(service.sessionmaker, settings)
    receiver.status = 500
    for _ in range(2):
        await dropped_off(app_client, world, service, ref=f"wh-{uuid.uuid4().hex[:6]}")
    await deliver_all(worker)
    [told] = await _alerts(service, "webhook_dead")
    assert told.state == "open" and told.count == 2
    receiver.status = 200
    await dropped_off(app_client, world, service, ref=f"wh-{uuid.uuid4().hex[:6]}")
    await deliver_all(worker)  # the third is heard; the first two are not
    assert [a.state for a in await _alerts(service, "webhook_dead")] == ["open"]
    dead = (
        await app_client.get(
            "/api/v1/webhooks/deliveries", params={"status": "dead"}, headers=world.merchant()
        )
    ).json()
    for i, letter in enumerate(dead):
        again = await app_client.post(
            f"/api/v1/webhooks/deliveries/{letter['id']}/redeliver", headers=world.merchant()
        )
        assert again.status_code == 200, again.text
        await deliver_all(worker)
        states = [a.state for a in await _alerts(service, "webhook_dead")]
        assert states == (["open"] if i == 0 else ["resolved"]), (i, states)

    receiver.status = 500
    await dropped_off(app_client, world, service, ref=f"wh-{uuid.uuid4().hex[:6]}", size="S")
    await deliver_all(worker)
    assert sorted(a.state for a in await _alerts(service, "webhook_dead")) == ["open", "resolved"]
    removed = await app_client.delete(
        f"/api/v1/webhooks/{endpoint['id']}", headers=world.merchant()
    )
    assert removed.status_code == 204
    assert {a.state for a in await _alerts(service, "webhook_dead")} == {"resolved"}


async def test_a_rotated_secret_signs_beside_the_old_one(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, receiver: Receiver
) -> None:
    old = await register(app_client, world, receiver.url, events=["order.dropped_off"])
    rotated = await app_client.post(
        f"/api/v1/webhooks/{old['id']}/rotate-secret", headers=world.merchant()
    )
    assert rotated.status_code == 200 and rotated.json()["secret"] != old["secret"]
    await dropped_off(app_client, world, service, ref=f"wh-{uuid.uuid4().hex[:6]}")
    await deliver_all(WebhookWorker(service.sessionmaker, service.settings))
    [(headers, body)] = receiver.received
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(rotated.json()["secret"]).verify(body, headers)
    Webhook(old["secret"]).verify(body, headers)  # the receiver that has not switched yet


async def test_endpoints_are_checked_and_each_merchant_sees_its_own(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, receiver: Receiver
) -> None:
    url = "/api/v1/webhooks"
    refused = {
        "http://10.1.2.3/hook": "target_address_not_allowed",  # an internal address
        "http://93.184.216.34/hook": "webhook_https_required",  # plain http across the internet
        "ftp://93.184.216.34/hook": "target_scheme_not_allowed",
        "https://no-such-host.invalid/hook": "target_invalid",  # no address: refused, not let by
        "https://exa\u00admple.com/a": "target_invalid",  # not a URL httpx could send to
    }
    for bad, code in refused.items():
        answer = await app_client.post(url, json={"url": bad}, headers=world.merchant())
        assert answer.status_code == 422 and answer.json()["error"] == code, (bad, answer.text)
    odd = await app_client.post(
        url, json={"url": receiver.url, "events": ["order.eaten"]}, headers=world.merchant()
    )
    assert odd.status_code == 422 and odd.json()["error"] == "unknown_event_type"
    mine = await register(app_client, world, receiver.url)
    async with service.sessionmaker() as session, session.begin():
        other = await admin.create_merchant(session, "Dumpling House", [world.site_code])
    theirs = {"X-API-Key": str(other.secret)}
    assert (await app_client.get(url, headers=theirs)).json() == []
    gone = await app_client.delete(f"{url}/{mine['id']}", headers=theirs)
    assert gone.status_code == 404
    assert (
        await app_client.post(f"{url}/{mine['id']}/rotate-secret", headers=theirs)
    ).status_code == 404
    listed = (await app_client.get(url, headers=world.merchant())).json()
    assert [e["id"] for e in listed] == [mine["id"]] and "secret" not in listed[0]
    assert (
        await app_client.delete(f"{url}/{mine['id']}", headers=world.merchant())
    ).status_code == 204
    assert (await app_client.get(url, headers=world.merchant())).json() == []
    await dropped_off(app_client, world, service, ref=f"wh-{uuid.uuid4().hex[:6]}")
    async with service.sessionmaker() as session:
        assert (await session.scalars(select(WebhookDelivery))).all() == []  # nothing queued


async def test_the_send_connects_to_the_address_checked_with_the_url_s_host(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, receiver: Receiver
) -> None:
    """The name is resolved once, checked, and connected to by address: a second answer of the
    DNS (rebinding to an internal address) is never asked for. The receiver still sees its
    own host name."""
    port = receiver.server.server_address[1]
    await register(app_client, world, f"http://localhost:{port}/hooks", events=["order.cancelled"])
    made = await app_client.post(
        "/api/v1/orders", json=world.order_body(), headers=world.merchant()
    )
    cancelled = await app_client.post(
        f"/api/v1/orders/{made.json()['id']}/cancel", headers=world.merchant()
    )
    assert cancelled.status_code == 200, cancelled.text
    await deliver_all(WebhookWorker(service.sessionmaker, service.settings))
    [(headers, body)] = receiver.received
    assert headers["host"] == f"localhost:{port}" and json.loads(body)["type"] == "order.cancelled"


async def test_a_reminder_is_one_event_however_often_its_timer_runs(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, receiver: Receiver
) -> None:
    from locker_service.models import Timer
    from locker_service.timer_loop import handlers
    from locker_service.timers.service import TimerKind
    from tests.locker_service.world import make_ready

    await register(app_client, world, receiver.url, events=["order.reminder_sent"])
    order, _ = await make_ready(app_client, world, service)
    async with service.sessionmaker() as session:
        timer = await session.scalar(
            select(Timer).where(
                Timer.order_id == uuid.UUID(str(order["id"])),
                Timer.kind == TimerKind.REMINDER.value,
            )
        )
    assert timer is not None
    await handlers.reminder(service, timer)
    await handlers.reminder(service, timer)  # retried after a crash: nothing twice
    await deliver_all(WebhookWorker(service.sessionmaker, service.settings))
    assert [t for _, t in receiver.events()] == ["order.reminder_sent"]


def test_an_expiry_of_unsafe_food_is_its_own_event() -> None:
    from locker_service.orders.webhooks import event_of

    assert event_of("expired", {"food_unsafe_at": utcnow()}) == "order.food_unsafe"
    assert event_of("expired", {"closed_at": utcnow()}) == "order.expired"
    assert event_of("disinfecting", {}) is None  # a step inside the story, not the merchant's


async def test_finished_deliveries_are_deleted_after_their_retention_open_ones_never(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, receiver: Receiver
) -> None:
    steps = ["order.dropped_off", "order.ready", "order.picked_up"]
    await register(app_client, world, receiver.url, events=steps)
    worker = WebhookWorker(service.sessionmaker, service.settings)
    await the_story(app_client, world, service)
    await deliver_all(worker)
    receiver.status = 500
    await dropped_off(app_client, world, service, ref=f"wh-{uuid.uuid4().hex[:6]}")
    async with session_scope(service.sessionmaker) as session:
        rows = list((await session.scalars(select(WebhookDelivery))).all())
        delivered = [r for r in rows if r.status == "delivered"]
        (pending,) = [r for r in rows if r.status == "pending"]
        assert len(delivered) >= 2
        month_ago = utcnow() - timedelta(days=31)
        delivered[0].created_at = month_ago  # delivered long ago: goes
        pending.created_at = month_ago  # still trying, however old: stays
        dead = WebhookDelivery(
            endpoint_id=pending.endpoint_id,
            order_id=pending.order_id,
            message_id=f"msg_{uuid.uuid4().hex}",
            event_type="order.expired",
            payload={},
            status="dead",
            created_at=month_ago,
        )
        session.add(dead)
    cutoff = utcnow() - timedelta(days=service.settings.webhook_retention_days)
    assert await prune_finished_before(service.sessionmaker, cutoff) == 2
    async with service.sessionmaker() as session:
        left = {r.id: r.status for r in (await session.scalars(select(WebhookDelivery))).all()}
    assert delivered[0].id not in left and dead.id not in left
    assert left[pending.id] == "pending" and all(left[r.id] for r in delivered[1:])


def test_an_endpoint_that_asked_for_every_event_hears_of_a_hold_given_back(
    empty_database_url: str,
) -> None:
    """Migration 0024 (ADR 0123): an endpoint registered for every event type (stored as the
    list of every type there was, with or without `order.accepted`, which came later too) gets
    `order.hold_extended`, in its place; one that named fewer keeps its choice; going back
    leaves every list as it is (an endpoint may have chosen the new type itself)."""
    from locker_service.db import create_engine, create_sessionmaker
    from locker_service.orders.webhooks import EVENT_TYPES
    from migrations import downgrade, upgrade
    from tests.locker_service.conftest import make_settings
    from tests.locker_service.world import seed

    url = empty_database_url
    before = [t for t in EVENT_TYPES if t != "order.hold_extended"]
    first = [t for t in before if t != "order.accepted"]  # registered before it existed
    chosen = ["order.ready", "order.picked_up"]
    upgrade(url, "0023")

    async def place() -> None:
        engine = create_engine(url)
        try:
            sessionmaker = create_sessionmaker(engine)
            world = await seed(sessionmaker, make_settings(url))
            async with sessionmaker() as session, session.begin():
                for name, events in (("every", before), ("first", first), ("chosen", chosen)):
                    session.add(
                        WebhookEndpoint(
                            merchant_id=world.merchant_id,
                            url=f"https://{name}.example/hooks",
                            events=events,
                            secret="whsec_x",
                        )
                    )
        finally:
            await engine.dispose()

    async def events() -> dict[str, list[str]]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(select(WebhookEndpoint.url, WebhookEndpoint.events))
                return {u.split("//")[1].split(".")[0]: list(e) for u, e in rows}
        finally:
            await engine.dispose()

    asyncio.run(place())
    upgrade(url)
    after = {
        "every": list(EVENT_TYPES),
        "first": [t for t in EVENT_TYPES if t != "order.accepted"],
        "chosen": chosen,
    }
    assert asyncio.run(events()) == after
    downgrade(url, "0023")
    assert asyncio.run(events()) == after
