"""A merchant lists and searches its own orders, a page at a time (`GET /api/v1/orders`)."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from firmware_bridge import contract
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.kiosks.handler import StoryHandler
from locker_service.models import Site
from locker_service.sites import service as sites
from tests.locker_service.world import World, create_order


async def _all_pages(
    client: httpx.AsyncClient, headers: dict[str, str], **query: Any
) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        params = {**query, **({"cursor": cursor} if cursor else {})}
        answer = await client.get("/api/v1/orders", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append([o["external_ref"] for o in body["orders"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_a_merchant_pages_through_its_own_orders_newest_first(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    made = [await create_order(app_client, world, ref=f"L-{i}") for i in range(5)]
    cancelled = await app_client.post(
        f"/api/v1/orders/{made[1]['id']}/cancel", headers=world.merchant()
    )
    assert cancelled.status_code == 200
    async with session_scope(service.sessionmaker) as session:
        rival = await sites.create_merchant(session, "Rival", [world.site_code])
    assert rival.secret
    await app_client.post(  # the rival's order never shows in the merchant's list
        "/api/v1/orders", json=world.order_body("R-1"), headers={"X-API-Key": rival.secret}
    )

    pages = await _all_pages(app_client, world.merchant(), limit=2)
    assert pages == [["L-4", "L-3"], ["L-2", "L-1"], ["L-0"]]  # each once, newest first
    assert await _all_pages(app_client, world.merchant(), state="cancelled") == [["L-1"]]
    assert await _all_pages(app_client, world.merchant(), ref="L-3") == [["L-3"]]
    assert await _all_pages(app_client, world.merchant(), ref="%") == [[]]  # no wildcard
    assert await _all_pages(app_client, world.merchant(), site=world.site_code, limit=10) == [
        ["L-4", "L-3", "L-2", "L-1", "L-0"]
    ]
    assert await _all_pages(app_client, {"X-API-Key": rival.secret}) == [["R-1"]]
    one = (await app_client.get("/api/v1/orders", headers=world.merchant())).json()["orders"][0]
    assert one["state"] == "created" and "notices" in one and one["id"] == made[4]["id"]


async def test_bad_searches_are_refused_with_their_codes(
    app_client: httpx.AsyncClient, world: World
) -> None:
    for params, code in (
        ({"cursor": "not-a-cursor"}, "bad_cursor"),
        ({"state": "eaten"}, "unknown_state"),
        ({"site": "nowhere"}, "unknown_site"),
        (
            {"since": "2026-12-03T10:00:00Z", "until": "2026-12-03T09:00:00Z"},
            "bad_time_range",
        ),
    ):
        answer = await app_client.get("/api/v1/orders", params=params, headers=world.merchant())
        assert answer.status_code == 422, (params, answer.text)
        assert answer.json()["error"] == code
    assert (await app_client.get("/api/v1/orders")).status_code == 401


async def test_a_merchant_sees_what_its_site_can_take_before_ordering(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    async def capacity() -> dict[str, Any]:
        answer = await app_client.get(
            f"/api/v1/sites/{world.site_code}/capacity", headers=world.merchant()
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    # The world's kiosk: one S and three M compartments, all heated; no status heard yet.
    offline = await capacity()
    [kiosk] = offline["kiosks"]
    assert (kiosk["kiosk"], kiosk["online"]) == (world.kiosk_code, False)
    assert kiosk["fits"] == {
        "S": {"hot": 4, "ambient": 4},
        "M": {"hot": 3, "ambient": 3},
        "L": {"hot": 0, "ambient": 0},
    }
    assert offline["fits"]["S"]["hot"] == 0  # an offline kiosk takes nothing now
    assert offline["dropoffs_frozen"] is False

    await StoryHandler(service).on_status(
        world.kiosk_code, contract.KioskStatus(state="online", board_online=True)
    )
    await create_order(app_client, world, ref="CAP-1")  # size M
    dropped = await app_client.post(
        "/api/v1/kiosk/dropoff",
        json={"courier_code": world.courier_code, "pin": world.courier_pin, "order_ref": "CAP-1"},
        headers=world.kiosk(),
    )
    assert dropped.status_code == 200, dropped.text
    online = await capacity()
    assert online["fits"]["M"] == {"hot": 2, "ambient": 2}  # one M reserved for the courier
    assert online["fits"]["S"] == {"hot": 3, "ambient": 3}

    async with service.sessionmaker() as session:
        other = await session.scalar(select(Site.code).where(Site.id == world.other_site_id))
    refused = await app_client.get(f"/api/v1/sites/{other}/capacity", headers=world.merchant())
    assert refused.status_code == 403 and refused.json()["error"] == "site_not_allowed"
    unknown = await app_client.get("/api/v1/sites/nowhere/capacity", headers=world.merchant())
    assert unknown.status_code == 404
    assert (await app_client.get(f"/api/v1/sites/{world.site_code}/capacity")).status_code == 401
