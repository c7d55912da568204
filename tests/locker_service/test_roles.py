"""The role matrix: merchants, kiosks, operators (viewer, operator, admin, another site's) and
anonymous callers can each do their own things and nothing else."""

from __future__ import annotations

from typing import Any

import httpx

from locker_service.context import ServiceContext
from tests.locker_service.world import World, create_order

ROLES = ("anonymous", "merchant", "kiosk", "other_kiosk", "viewer", "operator", "admin", "stranger")


def _headers(world: World, role: str) -> dict[str, str]:
    bearer = {
        "kiosk": world.kiosk_token,
        "other_kiosk": world.other_kiosk_token,
        "viewer": world.viewer_token,
        "operator": world.operator_token,
        "admin": world.admin_token,
        "stranger": world.other_operator_token,
    }
    if role == "merchant":
        return world.merchant()
    if role in bearer:
        return {"Authorization": f"Bearer {bearer[role]}"}
    return {}


def _denied(answer: httpx.Response) -> bool:
    """Refused for who the caller is (not for what it asked)."""
    return answer.status_code == 401 or (
        answer.status_code == 403 and answer.json().get("error") == "forbidden"
    )


async def test_each_role_can_do_its_own_things_only(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order = await create_order(app_client, world)
    kiosk = (
        await app_client.get(f"/api/v1/operator/kiosks/{world.kiosk_id}", headers=world.operator())
    ).json()
    compartment = kiosk["compartments"][0]["id"]
    dropoff = {"courier_code": "nobody", "pin": "0000", "order_ref": "none"}
    matrix: list[tuple[str, str, dict[str, Any] | None, set[str]]] = [
        ("POST", "/api/v1/orders", world.order_body(), {"merchant"}),
        ("GET", f"/api/v1/orders/{order['id']}", None, {"merchant"}),
        ("POST", f"/api/v1/orders/{order['id']}/cancel", None, {"merchant"}),
        ("GET", "/api/v1/kiosk/me", None, {"kiosk", "other_kiosk"}),
        ("POST", "/api/v1/kiosk/dropoff", dropoff, {"kiosk", "other_kiosk"}),
        ("POST", "/api/v1/kiosk/pickup", {"code": "12345678"}, {"kiosk", "other_kiosk"}),
        ("GET", "/api/v1/operator/sites", None, {"viewer", "operator", "admin", "stranger"}),
        ("GET", f"/api/v1/operator/kiosks/{world.kiosk_id}", None, {"viewer", "operator", "admin"}),
        ("GET", "/api/v1/operator/alerts", None, {"viewer", "operator", "admin", "stranger"}),
        ("GET", "/api/v1/operator/orders", None, {"viewer", "operator", "admin", "stranger"}),
        (
            "POST",
            f"/api/v1/operator/compartments/{compartment}/open",
            {"reason": "check the latch"},
            {"operator", "admin"},
        ),
        (
            "POST",
            f"/api/v1/operator/compartments/{compartment}/out-of-service",
            {"reason": "door sticks"},
            {"operator", "admin"},
        ),
        (
            "POST",
            f"/api/v1/operator/compartments/{compartment}/back-in-service",
            None,
            {"operator", "admin"},
        ),
        (
            "POST",
            f"/api/v1/operator/sites/{world.site_id}/kill-switch",
            {"engaged": False, "reason": "routine check"},
            {"operator", "admin"},
        ),
    ]
    wrong: list[str] = []
    for method, path, body, allowed in matrix:
        for role in ROLES:
            answer = await app_client.request(
                method, path, json=body, headers=_headers(world, role)
            )
            assert answer.status_code < 500, (method, path, role, answer.text)
            if answer.is_error:
                assert set(answer.json()) == {"error", "message"}
            if _denied(answer) == (role in allowed):
                wrong.append(f"{method} {path} as {role}: {answer.status_code} {answer.text[:80]}")
    assert wrong == []


async def test_operators_see_only_their_sites(app_client: httpx.AsyncClient, world: World) -> None:
    await create_order(app_client, world, ref="visible-to-olga")
    stranger = _headers(world, "stranger")
    sites = (await app_client.get("/api/v1/operator/sites", headers=stranger)).json()
    assert [s["id"] for s in sites] == [world.other_site_id]
    orders = (await app_client.get("/api/v1/operator/orders", headers=stranger)).json()
    assert orders == []
    mine = (await app_client.get("/api/v1/operator/orders?q=olga", headers=world.operator())).json()
    assert [o["external_ref"] for o in mine] == ["visible-to-olga"]
    admin = (
        await app_client.get("/api/v1/operator/sites", headers=_headers(world, "admin"))
    ).json()
    assert {world.site_id, world.other_site_id} <= {s["id"] for s in admin}


async def test_a_merchant_cannot_read_another_merchants_order(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    from locker_service.db import session_scope
    from locker_service.sites import service as admin

    order = await create_order(app_client, world)
    async with session_scope(service.sessionmaker) as session:
        rival = await admin.create_merchant(session, "Rival")
    assert rival.secret
    answer = await app_client.get(
        f"/api/v1/orders/{order['id']}", headers={"X-API-Key": rival.secret}
    )
    assert answer.status_code == 404
