"""Operator views and actions: live kiosk view with the order inside, remote open (reason
required, audited), out of / back in service, alerts acknowledged, metrics."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from locker_service.context import ServiceContext
from locker_service.models import DoorOpening, OrderEvent
from tests.locker_service.world import FakeKiosk, World, create_order, event, make_ready


async def _kiosk(client: httpx.AsyncClient, world: World) -> dict[str, object]:
    answer = await client.get(f"/api/v1/operator/kiosks/{world.kiosk_id}", headers=world.operator())
    assert answer.status_code == 200
    body: dict[str, object] = answer.json()
    return body


def _compartment(kiosk: dict[str, object], number: int) -> dict[str, object]:
    compartments = kiosk["compartments"]
    assert isinstance(compartments, list)
    return next(c for c in compartments if c["number"] == number)


async def test_kiosk_view_shows_the_order_inside_and_how_long_it_waited(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    order, n = await make_ready(app_client, world, service)
    view = _compartment(await _kiosk(app_client, world), n)
    assert view["state"] == "awaiting_pickup"
    inside = view["order"]
    assert isinstance(inside, dict)
    assert inside["id"] == order["id"] and inside["state"] == "ready"
    assert inside["waited_s"] is not None and inside["waited_s"] >= 0


async def test_remote_open_needs_a_reason_and_is_audited(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    order, n = await make_ready(app_client, world, service)
    cid = _compartment(await _kiosk(app_client, world), n)["id"]
    url = f"/api/v1/operator/compartments/{cid}/open"
    no_reason = await app_client.post(url, json={}, headers=world.operator())
    assert no_reason.status_code == 422
    before = len(fake_kiosk.unlocks())
    opened = await app_client.post(
        url, json={"reason": "purchaser lost her phone"}, headers=world.operator()
    )
    assert opened.status_code == 200, opened.text
    assert fake_kiosk.unlocks()[before:] == [n]
    await event(service, world, "door_opened", n)
    await event(service, world, "item_removed", n)
    await event(service, world, "door_closed", n)
    async with service.sessionmaker() as session:
        opening = await session.scalar(
            select(DoorOpening).where(DoorOpening.why == "purchaser lost her phone")
        )
        trail = (
            await session.scalars(
                select(OrderEvent).where(OrderEvent.order_id == uuid.UUID(order["id"]))
            )
        ).all()
    assert opening is not None and opening.who.startswith("operator:")
    assert opening.request_id and opening.door_opened_at is not None
    assert [e.detail for e in trail if e.action == "remote_open"] == [
        {"reason": "purchaser lost her phone"}
    ]
    # no unexplained-opening alert: the door opened for a recorded reason
    alerts = (await app_client.get("/api/v1/operator/alerts", headers=world.operator())).json()
    assert [a["kind"] for a in alerts] == []


async def test_an_out_of_service_compartment_is_never_allocated(
    app_client: httpx.AsyncClient, world: World
) -> None:
    kiosk = await _kiosk(app_client, world)
    medium = [c for c in kiosk["compartments"] if c["size"] == "M"]  # type: ignore[union-attr]
    for c in medium:
        answer = await app_client.post(
            f"/api/v1/operator/compartments/{c['id']}/out-of-service",
            json={"reason": "latch sticks"},
            headers=world.operator(),
        )
        assert answer.status_code == 200 and answer.json()["state"] == "out_of_service"
    await create_order(app_client, world, ref="oos")
    dropoff = {"courier_code": world.courier_code, "pin": world.courier_pin, "order_ref": "oos"}
    refused = await app_client.post("/api/v1/kiosk/dropoff", json=dropoff, headers=world.kiosk())
    assert refused.status_code == 409
    back = await app_client.post(
        f"/api/v1/operator/compartments/{medium[0]['id']}/back-in-service",
        headers=world.operator(),
    )
    assert back.json()["state"] == "available"
    allowed = await app_client.post("/api/v1/kiosk/dropoff", json=dropoff, headers=world.kiosk())
    assert allowed.json()["compartment"] == medium[0]["number"]


async def test_taking_a_full_compartment_out_of_service_is_refused(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    _, n = await make_ready(app_client, world, service)
    cid = _compartment(await _kiosk(app_client, world), n)["id"]
    answer = await app_client.post(
        f"/api/v1/operator/compartments/{cid}/out-of-service",
        json={"reason": "cleaning"},
        headers=world.operator(),
    )
    assert answer.status_code == 409 and answer.json()["error"] == "invalid_transition"


async def test_alerts_are_deduplicated_and_acknowledged(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    for _ in range(3):
        await event(service, world, "door_opened", 1, forced=True)
        await event(service, world, "door_closed", 1)
    alerts = (await app_client.get("/api/v1/operator/alerts", headers=world.operator())).json()
    assert [(a["kind"], a["count"], a["state"]) for a in alerts] == [
        ("door_opened_unexplained", 3, "open")
    ]
    viewer = {"Authorization": f"Bearer {world.viewer_token}"}
    url = f"/api/v1/operator/alerts/{alerts[0]['id']}/ack"
    assert (await app_client.post(url, headers=viewer)).status_code == 403
    acked = await app_client.post(url, headers=world.operator())
    assert acked.json()["state"] == "acknowledged" and acked.json()["acked_by"] is not None
    stranger = {"Authorization": f"Bearer {world.other_operator_token}"}
    assert (await app_client.post(url, headers=stranger)).status_code == 404
    listed = await app_client.get("/api/v1/operator/alerts?state=open", headers=world.operator())
    assert listed.json() == []


async def test_metrics_report_orders_compartments_and_alerts(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await make_ready(app_client, world, service)
    await event(service, world, "door_opened", 1, forced=True)
    text = (await app_client.get("/metrics")).text
    assert 'locker_orders{state="ready"} 1.0' in text
    assert 'locker_compartments{state="awaiting_pickup"} 1.0' in text
    assert 'locker_alerts_open{kind="door_opened_unexplained"} 1.0' in text
    assert "locker_outbox_pending 1.0" in text
    # counters add up over the process's life (other tests included): present and positive
    for line in (
        'locker_dropoffs_total{outcome="ok"}',
        'locker_kiosk_events_total{type="door_closed"}',
    ):
        value = next(x for x in text.splitlines() if x.startswith(line)).split()[-1]
        assert float(value) >= 1
