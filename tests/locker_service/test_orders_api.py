"""Merchant orders over REST: create is idempotent on the reference, read, cancel, bad input."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from locker_service.context import ServiceContext
from locker_service.models import NotificationOutbox, Order, OrderEvent, Timer
from tests.locker_service.world import World, create_order, make_ready, token_of


async def test_create_answers_the_order_and_the_purchaser_link_once(
    app_client: httpx.AsyncClient, world: World
) -> None:
    order = await create_order(app_client, world, ref="A-1")
    assert order["state"] == "created"
    assert order["external_ref"] == "A-1"
    assert len(token_of(order)) == 43  # 256 random bits, base64url
    read = await app_client.get(f"/api/v1/orders/{order['id']}", headers=world.merchant())
    assert read.status_code == 200
    assert read.json()["state"] == "created"
    assert "purchaser_url" not in read.json()


async def test_same_reference_same_body_is_the_same_order(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    body = world.order_body("A-2")
    first = await app_client.post("/api/v1/orders", json=body, headers=world.merchant())
    again = await app_client.post("/api/v1/orders", json=body, headers=world.merchant())
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    async with service.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 1


async def test_racing_creates_of_one_reference_make_one_order(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    body = world.order_body("A-race")
    answers = await asyncio.gather(
        *(app_client.post("/api/v1/orders", json=body, headers=world.merchant()) for _ in range(6))
    )
    assert sorted(a.status_code for a in answers) == [200] * 5 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len({a.json()["purchaser_url"] for a in answers}) == 1
    async with service.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 1
        assert await session.scalar(select(func.count()).select_from(OrderEvent)) == 1
        assert await session.scalar(select(func.count()).select_from(Timer)) == 1  # its expiry


async def test_same_reference_other_body_is_a_conflict(
    app_client: httpx.AsyncClient, world: World
) -> None:
    await create_order(app_client, world, ref="A-3")
    other = await app_client.post(
        "/api/v1/orders", json=world.order_body("A-3", size="L"), headers=world.merchant()
    )
    assert other.status_code == 409
    assert other.json()["error"] == "external_ref_conflict"


async def test_bad_input_is_a_json_error_and_stores_nothing(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    for body, status in (
        (world.order_body(size="XL"), 422),
        (world.order_body(site="nowhere"), 422),
        ({**world.order_body(), "surprise": 1}, 422),
        ({"external_ref": "x"}, 422),
    ):
        answer = await app_client.post("/api/v1/orders", json=body, headers=world.merchant())
        assert answer.status_code == status, answer.text
        assert set(answer.json()) == {"error", "message"}
    broken = await app_client.post(
        "/api/v1/orders",
        content=b"{not json",
        headers={**world.merchant(), "Content-Type": "application/json"},
    )
    assert broken.status_code == 422
    async with service.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 0


async def test_cancel_only_before_drop_off_and_audited(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order = await create_order(app_client, world)
    url = f"/api/v1/orders/{order['id']}/cancel"
    assert (await app_client.post(url, headers=world.merchant())).json()["state"] == "cancelled"
    again = await app_client.post(url, headers=world.merchant())
    assert again.status_code == 409
    assert again.json()["error"] == "invalid_transition"
    async with service.sessionmaker() as session:
        actions = (await session.scalars(select(OrderEvent.action).order_by(OrderEvent.id))).all()
    assert actions == ["create", "cancel"]


async def test_unknown_order_and_bad_id(app_client: httpx.AsyncClient, world: World) -> None:
    missing = await app_client.get(
        "/api/v1/orders/00000000-0000-0000-0000-000000000000", headers=world.merchant()
    )
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    bad = await app_client.get("/api/v1/orders/not-a-uuid", headers=world.merchant())
    assert bad.status_code == 422


async def test_purchaser_status_hides_the_code_until_ready(
    app_client: httpx.AsyncClient, world: World
) -> None:
    order = await create_order(app_client, world)
    status = await app_client.get(f"/api/v1/p/{token_of(order)}")
    assert status.status_code == 200
    assert status.json()["state"] == "created"
    assert status.json()["fallback_code"] is None
    assert (await app_client.get(f"/p/{token_of(order)}/qr.png")).status_code == 404
    assert (await app_client.get("/api/v1/p/" + "A" * 43)).status_code == 404


async def test_create_without_a_known_key_is_refused_and_stores_nothing(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    for headers in ({}, {"X-API-Key": "mk_unknown"}):
        # The key is checked before the body: a stranger learns nothing from validation errors.
        for body in (world.order_body(), {"surprise": 1}):
            answer = await app_client.post("/api/v1/orders", json=body, headers=headers)
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"] == "unauthorized"
            assert answer.headers["WWW-Authenticate"] == "Bearer"
    async with service.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 0


async def test_her_messages_come_in_the_language_the_merchant_gives(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """`purchaser_language` (ADR 0122): her messages are written in it; left out, English; the
    same body sent again is the same order, as it was before the field existed."""
    chinese = {"purchaser_name": "李娜", "purchaser_language": "zh-Hans"}
    first, _ = await make_ready(app_client, world, service, ref="lang-zh", **chinese)
    assert first["purchaser_language"] == "zh-Hans"
    body = world.order_body("lang-zh", **chinese)
    again = await app_client.post("/api/v1/orders", json=body, headers=world.merchant())
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    # Her page, as the merchant may send it on, opens in her language (both write paths).
    assert first["purchaser_url"].endswith("?lang=zh-Hans")
    assert again.json()["purchaser_url"] == first["purchaser_url"]
    page = await app_client.get("/" + first["purchaser_url"].split("/", 3)[3])  # path and query
    assert page.status_code == 200 and '<html lang="zh-Hans"' in page.text
    read = await app_client.get(f"/api/v1/orders/{first['id']}", headers=world.merchant())
    assert read.json()["purchaser_language"] == "zh-Hans"
    plain, _ = await make_ready(app_client, world, service, ref="lang-default")
    assert plain["purchaser_language"] == "en"
    assert "?" not in plain["purchaser_url"]  # English: the address as it always was
    # Naming English, the language orders were always sent in, is the same order.
    named = world.order_body("lang-default", purchaser_language="en")
    same = await app_client.post("/api/v1/orders", json=named, headers=world.merchant())
    assert same.status_code == 200 and same.json()["id"] == plain["id"]
    bad = world.order_body("lang-bad", purchaser_language="fr")
    refused = await app_client.post("/api/v1/orders", json=bad, headers=world.merchant())
    assert refused.status_code == 422 and refused.json()["error"] == "validation_error"
    async with service.sessionmaker() as session:
        sent = {
            ref: (subject, body)
            for ref, subject, body in (
                await session.execute(
                    select(Order.external_ref, NotificationOutbox.subject, NotificationOutbox.body)
                    .join(Order, Order.id == NotificationOutbox.order_id)
                    .where(NotificationOutbox.kind == "ready")
                )
            ).all()
        }
    assert sent["lang-zh"][0] == "您的订单 lang-zh 已可取餐"
    assert (
        sent["lang-zh"][1].startswith("李娜，您好：您的订单已在")
        and "号柜格等您" in sent["lang-zh"][1]
    )
    assert sent["lang-default"][0] == "Your order lang-default is ready"
