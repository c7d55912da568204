"""A courier locked out after wrong PINs, with the food in his hands: the operator is told, and
the operator who knows it is him lifts the lockout from the alert, saying how."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select, update

from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.models import Alert, PickupAttempt, utcnow
from tests.locker_service.world import World, create_order


async def _login(client: httpx.AsyncClient, world: World, pin: str, ref: str) -> httpx.Response:
    return await client.post(
        "/api/v1/kiosk/dropoff",
        json={"courier_code": world.courier_code, "pin": pin, "order_ref": ref},
        headers=world.kiosk(),
    )


async def _lockouts(service: ServiceContext) -> list[Alert]:
    async with service.sessionmaker() as session:
        found = await session.scalars(select(Alert).where(Alert.kind == "courier_locked_out"))
        return list(found)


async def test_a_locked_out_courier_is_an_alert_an_operator_lifts(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order = await create_order(app_client, world, ref="L-1")
    wrong = "0" * len(world.courier_pin) if world.courier_pin != "0" * 6 else "1" * 6
    free = service.settings.courier_free_failures
    for _ in range(free - 1):  # typos within his free tries: nobody is bothered
        assert (await _login(app_client, world, wrong, "L-1")).status_code == 403
    assert await _lockouts(service) == []
    assert (await _login(app_client, world, wrong, "L-1")).status_code == 403
    [alert] = await _lockouts(service)
    assert alert.state == "open" and alert.kiosk_id == world.kiosk_id
    assert world.courier_code in alert.message and f"after {free} wrong PINs" in alert.message
    # His right PIN waits now: refused before it is looked at.
    waiting = await _login(app_client, world, world.courier_pin, "L-1")
    assert waiting.status_code == 429 and waiting.json()["error"] == "locked_out"

    path = f"/api/v1/operator/alerts/{alert.id}/lift-lockout"
    viewer = {"Authorization": f"Bearer {world.viewer_token}"}
    assert (
        await app_client.post(path, json={"reason": "x"}, headers=world.operator())
    ).status_code == 422
    refused = await app_client.post(path, json={"reason": "called him"}, headers=viewer)
    assert refused.status_code == 403
    stranger = {"Authorization": f"Bearer {world.other_operator_token}"}
    hidden = await app_client.post(path, json={"reason": "called him"}, headers=stranger)
    assert hidden.status_code == 404
    assert (await _login(app_client, world, world.courier_pin, "L-1")).status_code == 429

    lifted = await app_client.post(
        path,
        json={"reason": "called him, he is at the kiosk with the food"},
        headers=world.operator(),
    )
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["state"] == "resolved"
    assert lifted.json()["corrective_action"] == (
        "lockout lifted: called him, he is at the kiosk with the food"
    )
    again = await app_client.post(path, json={"reason": "once more"}, headers=world.operator())
    assert again.status_code == 409 and again.json()["error"] == "not_a_lockout"

    opened = await _login(app_client, world, world.courier_pin, order["external_ref"])
    assert opened.status_code == 200, opened.text


async def test_a_lockout_moves_with_him_and_ends_with_his_login(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    """Nobody lifted it and he waited it out; locked out again at another site's kiosk, the
    alert is that site's, naming that kiosk (the first one resolved). His next login resolves
    it: nothing is left to lift."""
    wrong = "0" * len(world.courier_pin) if world.courier_pin != "0" * 6 else "1" * 6
    free = service.settings.courier_free_failures
    other = {"Authorization": f"Bearer {world.other_kiosk_token}"}

    async def wrong_pins(headers: dict[str, str]) -> None:
        for _ in range(free):
            answer = await app_client.post(
                "/api/v1/kiosk/dropoff",
                json={"courier_code": world.courier_code, "pin": wrong, "order_ref": "x"},
                headers=headers,
            )
            assert answer.status_code == 403, answer.text

    async def wait_over() -> None:
        async with session_scope(service.sessionmaker) as session:
            await session.execute(update(PickupAttempt).values(at=utcnow() - timedelta(days=1)))

    await wrong_pins(world.kiosk())
    await wait_over()
    await wrong_pins(other)
    alerts = {a.site_id: a.state for a in await _lockouts(service)}
    assert alerts == {world.site_id: "resolved", world.other_site_id: "open"}
    await wait_over()
    answer = await _login(app_client, world, world.courier_pin, "x")
    assert answer.status_code not in (403, 429), answer.text
    assert {a.state for a in await _lockouts(service)} == {"resolved"}


async def test_made_up_courier_ids_raise_no_lockout_alert_and_other_alerts_lift_nothing(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    for _ in range(service.settings.courier_free_failures + 1):
        made_up = await app_client.post(
            "/api/v1/kiosk/dropoff",
            json={"courier_code": "nobody", "pin": "123456", "order_ref": "x"},
            headers=world.kiosk(),
        )
        assert made_up.status_code in (403, 429)
    assert await _lockouts(service) == []
    async with service.sessionmaker() as session:
        other = Alert(
            kind="door_opened_unexplained",
            severity="warning",
            message="m",
            dedupe_key="door_opened_unexplained:1",
            site_id=world.site_id,
        )
        session.add(other)
        await session.commit()
        other_id = other.id
    answer = await app_client.post(
        f"/api/v1/operator/alerts/{other_id}/lift-lockout",
        json={"reason": "wrong alert"},
        headers=world.operator(),
    )
    assert answer.status_code == 409 and answer.json()["error"] == "not_a_lockout"
