"""Alerts reach a person: the site's on-call is told through the outbox, an alert nobody
acknowledged escalates, an acknowledged one does not, the digest goes out at its hour, and a
purchaser message given up on raises an alert that a resend through the API puts right.

The receivers are real: a local HTTP webhook (Apprise `json://`) stands in for the paging hook,
and the outbox worker and timer loop are the service's own, driven round by round.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from locker_service.alerts.digest import DigestLoop
from locker_service.alerts.service import raise_alert
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.models import Alert, NotificationOutbox, Order, OrderEvent, SiteOncall, Timer
from locker_service.notifications.repository import Claimed
from locker_service.notifications.worker import OutboxWorker
from locker_service.orders.outbox import Place, enqueue
from locker_service.timer_loop.loop import TimerLoop
from tests.locker_service.conftest import make_settings
from tests.locker_service.test_notifications import WebhookReceiver
from tests.locker_service.world import World, create_order, event

ESCALATE_AFTER_S = 600.0  # nominal ten minutes ...
TIME_SCALE = 600.0  # ... one real second: the timer falls due while the test waits on it
ROUND_PAUSE_S = 0.05
ROUNDS_MAX = 200  # the loops' rounds a test drives before it gives up (about 10 s)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url,
        time_scale=TIME_SCALE,
        oncall_escalate_after_s=ESCALATE_AFTER_S,
        oncall_schemes=["json", "mailto"],
        notify_contact_allowed_networks=["127.0.0.1/32"],  # the receivers run on this machine
        notify_backoff_s=0.01,
        notify_backoff_max_s=0.02,
        notify_send_timeout_s=10.0,
        public_base_url="https://lockers.example.com",
    )


@pytest.fixture
def pager() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def escalation() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def admin(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.admin_token}"}


async def set_lists(
    client: httpx.AsyncClient, world: World, urls: list[str], escalation_urls: list[str]
) -> httpx.Response:
    return await client.put(
        f"/api/v1/operator/sites/{world.site_id}/oncall",
        json={"urls": urls, "escalation_urls": escalation_urls},
        headers=admin(world),
    )


async def drive_until(
    ctx: ServiceContext, done: Any, *, timers: bool = True, worker: OutboxWorker | None = None
) -> None:
    """Run the timer loop and the outbox worker round by round until `done()` holds."""
    worker = worker or OutboxWorker(ctx.sessionmaker, ctx.settings, hub=ctx.hub)
    loop = TimerLoop(ctx)
    for _ in range(ROUNDS_MAX):
        if timers:
            await loop.run_due()
        await worker.run_once()
        if done():
            return
        await asyncio.sleep(ROUND_PAUSE_S)
    raise AssertionError("the condition never held")


async def door_opened_unexplained(ctx: ServiceContext, world: World) -> Alert:
    await event(ctx, world, "door_opened", 3)
    await event(ctx, world, "door_closed", 3)  # shut again: no `door_left_open` on top
    async with ctx.sessionmaker() as session:
        alert = await session.scalar(select(Alert).where(Alert.kind == "door_opened_unexplained"))
    assert alert is not None
    return alert


async def test_an_alert_reaches_the_on_call_and_escalates_when_nobody_acknowledges(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    pager: WebhookReceiver,
    escalation: WebhookReceiver,
) -> None:
    answer = await set_lists(
        app_client, world, [pager.url.replace("/purchaser", "/oncall")], [escalation.url]
    )
    assert answer.status_code == 200, answer.text
    alert = await door_opened_unexplained(service, world)

    await drive_until(service, lambda: pager.requests, timers=False)
    [(headers, payload)] = pager.requests
    assert "Door opened without a command" in payload["title"]
    assert "柜门在无指令时被打开" in payload["message"]
    assert "compartment 3" in payload["message"]
    assert "https://lockers.example.com/dashboard" in payload["message"]
    assert headers["X-Locker-Notification"] == f"alert:{alert.id}:oncall"
    assert escalation.requests == []

    # A repeat of the same condition bumps the count; it pages nobody again.
    await event(service, world, "door_opened", 3)
    await event(service, world, "door_closed", 3)
    await drive_until(service, lambda: True, timers=False)
    assert len(pager.requests) == 1

    # Nobody acknowledges: ten nominal minutes later the escalation list is told.
    await drive_until(service, lambda: escalation.requests)
    [(headers, payload)] = escalation.requests
    assert payload["title"].startswith("[ESCALATED CRITICAL]")
    assert headers["X-Locker-Notification"] == f"alert:{alert.id}:escalation"
    async with service.sessionmaker() as session:
        stored = await session.get(Alert, alert.id)
        assert stored is not None and stored.count == 2
        timer = await session.scalar(select(Timer).where(Timer.alert_id == alert.id))
    assert timer is not None and timer.state == "done"
    assert stored.raised_at + timedelta(seconds=ESCALATE_AFTER_S / TIME_SCALE) <= datetime.now(UTC)
    assert len(pager.requests) == 1


async def test_an_acknowledged_alert_does_not_escalate(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    pager: WebhookReceiver,
    escalation: WebhookReceiver,
) -> None:
    assert (await set_lists(app_client, world, [pager.url], [escalation.url])).status_code == 200
    alert = await door_opened_unexplained(service, world)
    answer = await app_client.post(
        f"/api/v1/operator/alerts/{alert.id}/ack", headers=world.operator()
    )
    assert answer.status_code == 200 and answer.json()["state"] == "acknowledged"

    # Run the loops until the escalation would have been overdue, and past it.
    overdue_at = alert.raised_at + timedelta(seconds=ESCALATE_AFTER_S / TIME_SCALE)
    await drive_until(service, lambda: datetime.now(UTC) > overdue_at and pager.requests)
    await drive_until(service, lambda: True)
    assert len(pager.requests) == 1  # the first message went out before the acknowledgement
    assert escalation.requests == []
    async with service.sessionmaker() as session:
        timer = await session.scalar(select(Timer).where(Timer.alert_id == alert.id))
        kinds = (await session.scalars(select(NotificationOutbox.kind))).all()
    assert timer is not None and timer.state == "cancelled"
    assert "oncall_escalation" not in kinds


async def test_an_info_alert_or_a_site_without_on_call_pages_nobody(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, pager: WebhookReceiver
) -> None:
    await door_opened_unexplained(service, world)  # no lists set yet
    assert (await set_lists(app_client, world, [pager.url], [])).status_code == 200
    async with session_scope(service.sessionmaker) as session:
        await raise_alert(  # info: the digest's, not a page
            session,
            kind="board_rebooted",
            severity="info",
            message="the locker bank board restarted",
            dedupe_key=f"board_rebooted:{world.kiosk_code}",
            site_id=world.site_id,
        )
    async with service.sessionmaker() as session:
        rows = (await session.scalars(select(NotificationOutbox))).all()
        kinds = set((await session.scalars(select(Alert.kind))).all())
    assert rows == []
    assert "door_opened_unexplained" in kinds


async def test_the_digest_is_sent_at_its_hour_once(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, pager: WebhookReceiver
) -> None:
    assert (await set_lists(app_client, world, [pager.url], [])).status_code == 200
    await door_opened_unexplained(service, world)
    await drive_until(service, lambda: pager.requests, timers=False)
    pager.requests.clear()

    hour = service.settings.oncall_digest_hour  # the site's zone is UTC in the test world
    # The first digest hour after the list was set (today's if it is still to come, whatever
    # the hour the test runs at): the one before it is not the list's.
    now = datetime.now(UTC)
    at_hour = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if at_hour <= now:
        at_hour += timedelta(days=1)
    clock = {"now": at_hour - timedelta(seconds=1)}
    digest = DigestLoop(service.sessionmaker, service.settings, clock=lambda: clock["now"])
    assert await digest.run_once() == 0  # a second before the hour
    clock["now"] = at_hour + timedelta(seconds=1)
    assert await digest.run_once() == 1
    assert await digest.run_once() == 0  # once a day
    clock["now"] = at_hour + timedelta(hours=5)
    assert await digest.run_once() == 0

    await drive_until(service, lambda: pager.requests, timers=False)
    [(headers, payload)] = pager.requests
    assert headers["X-Locker-Notification"] == f"digest:{world.site_id}:{at_hour:%Y-%m-%d}"
    assert "daily alert digest" in payload["title"] and "(1 open)" in payload["title"]
    assert "Door opened without a command" in payload["message"]
    # Open until the digest hour, told in story time (x600): days, unless the hour was minutes
    # away when the test ran.
    story_s = (at_hour - now).total_seconds() * service.settings.time_scale
    unit = "d" if story_s >= 86400 else "(h|min)"
    assert re.search(rf"for \d+ {unit}", payload["message"]), payload["message"]


async def test_lists_are_checked_when_set_and_only_an_admin_sets_them(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    path = f"/api/v1/operator/sites/{world.site_id}/oncall"
    refused = {
        "json://10.1.2.3/hook": "target_address_not_allowed",  # private, not allowed
        "json://[::1]:9/hook": "target_address_not_allowed",  # loopback over IPv6
        "form://example.com/hook": "target_scheme_not_allowed",
        "not a url": "target_invalid",
    }
    for url, code in refused.items():
        answer = await app_client.put(path, json={"urls": [url]}, headers=admin(world))
        assert answer.status_code == 422, url
        assert answer.json()["error"] == code, url
    answer = await app_client.put(
        path, json={"urls": ["json://127.0.0.1:9/ok"]}, headers=world.operator()
    )
    assert answer.status_code == 403
    async with service.sessionmaker() as session:
        assert (await session.scalars(select(SiteOncall))).all() == []
    answer = await app_client.put(
        path,
        json={"urls": ["json://127.0.0.1:9/ok", "mailto://127.0.0.1:25?to=a@b.c"]},
        headers=admin(world),
    )
    assert answer.status_code == 200
    read = await app_client.get(path, headers=admin(world))
    assert read.json()["urls"] == ["json://127.0.0.1:9/ok", "mailto://127.0.0.1:25?to=a@b.c"]


async def test_an_expiry_message_failing_after_the_order_was_collected_is_withdrawn(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """Its last try was under way when the order was corrected to picked up (ADR 0112): its
    failure raises no "not reached" alert, and nothing is left for an operator to resend."""
    settings = service.settings
    order = await create_order(app_client, world)
    async with session_scope(service.sessionmaker) as session:
        stored = await session.get(Order, uuid.UUID(order["id"]))
        assert stored is not None
        row = await enqueue(
            session, stored, "expired", where=Place("Tower A", "Lobby", 1), deadline=None
        )
        assert row is not None
        row.status, row.attempts = "sending", settings.notify_max_attempts
        stored.state = "picked_up"  # collected before it expired, learned since
        row_id = row.id
    worker = OutboxWorker(service.sessionmaker, settings, hub=service.hub)
    await worker._retry_or_fail(Claimed(row_id, settings.notify_max_attempts), "HTTP 500")
    async with service.sessionmaker() as session:
        status = await session.scalar(
            select(NotificationOutbox.status).where(NotificationOutbox.id == row_id)
        )
        alerts = (await session.scalars(select(Alert.kind))).all()
    assert status == "withdrawn" and "notification_undeliverable" not in alerts


async def test_a_purchaser_never_reached_raises_an_alert_and_a_resend_delivers(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    pager: WebhookReceiver,
) -> None:
    settings = service.settings
    assert (await set_lists(app_client, world, [pager.url], [])).status_code == 200
    with WebhookReceiver() as broken, WebhookReceiver() as corrected:
        broken.statuses = [500] * settings.notify_max_attempts
        order = await create_order(app_client, world, purchaser_contact=broken.url)
        async with service.sessionmaker() as session, session.begin():
            stored = await session.get(Order, uuid.UUID(order["id"]))
            assert stored is not None
            await enqueue(
                session, stored, "cancelled", where=Place("Tower A", "Lobby", 1), deadline=None
            )

        worker = OutboxWorker(service.sessionmaker, settings, hub=service.hub)

        def not_reached() -> bool:
            return any("not reached" in p["title"] for _, p in pager.requests)

        await drive_until(service, not_reached, timers=False, worker=worker)
        assert broken.statuses == [] and broken.requests == []  # eight tries, all refused

        alerts = (await app_client.get("/api/v1/operator/alerts", headers=world.operator())).json()
        [alert] = [a for a in alerts if a["kind"] == "notification_undeliverable"]
        assert alert["title"] == {"en": "Purchaser not reached", "zh-Hans": "未能联系到购买者"}
        assert order["external_ref"] in alert["message"]
        assert f"{settings.notify_max_attempts} attempts" in alert["message"]
        notification_id = alert["notification_id"]
        assert notification_id is not None

        path = f"/api/v1/operator/notifications/{notification_id}/resend"
        viewer = {"Authorization": f"Bearer {world.viewer_token}"}
        assert (await app_client.post(path, json={}, headers=viewer)).status_code == 403
        bad = await app_client.post(path, json={"contact": "someone"}, headers=world.operator())
        assert bad.status_code == 422 and bad.json()["error"] == "contact_unreachable"
        # A scheme the outbox would refuse is refused here too, not accepted to fail again.
        off_list = await app_client.post(
            path, json={"contact": "xml://hooks.example.com/x"}, headers=world.operator()
        )
        assert off_list.status_code == 422
        assert off_list.json()["error"] == "contact_scheme_not_allowed"
        answer = await app_client.post(
            path, json={"contact": corrected.url}, headers=world.operator()
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "pending"
        again = await app_client.post(path, json={}, headers=world.operator())
        assert again.status_code == 409  # it is on its way already

        await drive_until(service, lambda: corrected.requests, timers=False, worker=worker)
        [(_, payload)] = corrected.requests
        assert payload["title"].startswith(f"Your order {order['external_ref']}")

    async with service.sessionmaker() as session:
        row = await session.get(NotificationOutbox, notification_id)
        audit = (
            await session.scalars(
                select(OrderEvent).where(OrderEvent.action == "notification_resent")
            )
        ).all()
        resolved = await session.get(Alert, alert["id"])
    assert row is not None and (row.status, row.attempts) == ("sent", 1)
    assert [(e.actor_type, e.detail["contact_changed"]) for e in audit] == [("operator", True)]
    assert resolved is not None and resolved.state == "resolved"
