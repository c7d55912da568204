"""A purchaser's name and contact leave the database once her order has ended long enough
(`locker_service.orders.privacy`, ADR 0067); what the order was stays."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from locker_service.alerts.catalogue import UNDELIVERABLE_ALERT
from locker_service.alerts.service import raise_alert
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.models import Alert, NotificationOutbox, Order, utcnow
from locker_service.orders.privacy import PrivacyLoop
from tests.locker_service.world import World, create_order


async def _aged(ctx: ServiceContext, order: dict[str, Any], days: float) -> None:
    async with session_scope(ctx.sessionmaker) as session:
        await session.execute(
            update(Order)
            .where(Order.id == uuid.UUID(order["id"]))
            .values(updated_at=utcnow() - timedelta(days=days))
        )


async def _row(ctx: ServiceContext, order: dict[str, Any]) -> Order:
    async with ctx.sessionmaker() as session:
        row = await session.get(Order, uuid.UUID(order["id"]))
        assert row is not None
        return row


async def test_purchaser_data_goes_after_the_retention_and_the_order_stays(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    ended_long_ago = await create_order(app_client, world, ref="P-old")
    ended_lately = await create_order(app_client, world, ref="P-new")
    still_open = await create_order(app_client, world, ref="P-open")
    for order in (ended_long_ago, ended_lately):
        cancelled = await app_client.post(
            f"/api/v1/orders/{order['id']}/cancel", headers=world.merchant()
        )
        assert cancelled.status_code == 200, cancelled.text
    async with session_scope(service.sessionmaker) as session:  # a message she was sent
        message = NotificationOutbox(
            order_id=uuid.UUID(ended_long_ago["id"]),
            kind="ready",
            channel="json://127.0.0.1:9/hook",
            dedupe_key=f"privacy-{uuid.uuid4().hex}",
            subject="Your order P-old: ready",
            body="Hello Mia, your code is 12345678",
            status="failed",
            last_error="json://127.0.0.1:9/hook refused",
        )
        session.add(message)
        await session.flush()
        await raise_alert(  # and the operator was told it never reached her
            session,
            kind=UNDELIVERABLE_ALERT,
            severity="warning",
            message="order P-old: the purchaser was not reached: json://127.0.0.1:9/hook refused",
            dedupe_key=f"{UNDELIVERABLE_ALERT}:{message.id}",
            site_id=world.site_id,
            notification_id=message.id,
        )
    await _aged(service, ended_long_ago, days=31)
    await _aged(service, still_open, days=400)  # not ended: kept however old

    privacy = PrivacyLoop(service.engine, retention_days=30)
    assert await privacy.run_once(utcnow()) == 1

    erased = await _row(service, ended_long_ago)
    assert (erased.purchaser_name, erased.purchaser_contact) == ("", "")
    assert (erased.external_ref, erased.state) == ("P-old", "cancelled")
    async with service.sessionmaker() as session:
        messages = (
            await session.scalars(
                select(NotificationOutbox).where(
                    NotificationOutbox.order_id == uuid.UUID(ended_long_ago["id"])
                )
            )
        ).all()
    assert messages and all((m.channel, m.body, m.last_error) == ("", "", None) for m in messages)
    async with service.sessionmaker() as session:
        alert = await session.scalar(select(Alert).where(Alert.kind == UNDELIVERABLE_ALERT))
    assert alert is not None and "hook" not in alert.message and "not reached" in alert.message
    for kept in (ended_lately, still_open):
        row = await _row(service, kept)
        assert (row.purchaser_name, row.purchaser_contact) == ("Mia", "json://127.0.0.1:9/hook")
    read = await app_client.get(f"/api/v1/orders/{ended_long_ago['id']}", headers=world.merchant())
    assert read.status_code == 200 and read.json()["purchaser_name"] == ""
    assert await privacy.run_once(utcnow()) == 0  # nothing left to erase


async def test_a_purchaser_who_asks_is_forgotten_from_her_ended_orders_at_once(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """`lockerctl erase-purchaser`: her ended orders now; one in progress keeps her contact
    (she may still be told of her food) until it ends; nobody else's."""
    from typer.testing import CliRunner

    from locker_service.cli import app

    hers = "mailto://ada@example.com"
    ended = await create_order(app_client, world, ref="A-ended", purchaser_contact=hers)
    going = await create_order(app_client, world, ref="A-going", purchaser_contact=hers)
    other = await create_order(app_client, world, ref="B-ended")
    for order in (ended, other):
        cancelled = await app_client.post(
            f"/api/v1/orders/{order['id']}/cancel", headers=world.merchant()
        )
        assert cancelled.status_code == 200, cancelled.text

    def lockerctl(*args: str) -> Any:
        url = ["--database-url", service.settings.database_url]
        env = {"LOCKER_SECRET_KEY": service.settings.secret_key}
        return CliRunner().invoke(app, ["erase-purchaser", *args, *url], env=env)

    done = await asyncio.to_thread(lockerctl, "--contact", hers)
    assert done.exit_code == 0, done.output
    assert "from 1 ended order(s)" in done.output
    assert f"order {going['id']} is in progress: kept until it ends" in done.output
    assert ((await _row(service, ended)).purchaser_contact, (await _row(service, ended)).state) == (
        "",
        "cancelled",
    )
    assert (await _row(service, going)).purchaser_contact == hers
    assert (await _row(service, other)).purchaser_name == "Mia"

    by_order = await asyncio.to_thread(lockerctl, "--order", other["id"])
    assert by_order.exit_code == 0 and "from 1 ended order(s)" in by_order.output
    assert (await _row(service, other)).purchaser_name == ""
    for wrong in ((), ("--contact", hers, "--order", other["id"]), ("--order", "not-an-id")):
        refused = await asyncio.to_thread(lockerctl, *wrong)
        assert refused.exit_code == 2, refused.output
