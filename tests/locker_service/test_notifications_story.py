"""The purchaser's message in the whole story, at the MQTT boundary.

A real Mosquitto, the service with its kiosk link, timers and outbox worker, a scripted kiosk and
a local webhook standing in for the purchaser's phone: order -> drop-off -> disinfection cycle ->
message received -> the QR image in it, decoded, is scanned at the kiosk -> exactly that
compartment opens -> picked up.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from locker_service.main import create_app
from tests.locker_service.conftest import make_settings
from tests.locker_service.test_notifications import DEDUPE_HEADER, WebhookReceiver, decode_qr
from tests.locker_service.world import seed
from tests.support.mosquitto import MosquittoProcess
from tests.support.scripted_kiosk import ScriptedKiosk

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow, pytest.mark.timeout(180)]


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_the_qr_in_the_message_opens_exactly_that_compartment(
    database_url: str, private_mosquitto: MosquittoProcess
) -> None:
    kiosk_code = f"story-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        database_url,
        kiosk_link_enabled=True,
        timers_enabled=True,
        notify_enabled=True,
        mqtt_url=private_mosquitto.url,
        replica_id=f"story-{uuid.uuid4().hex[:6]}",
        disinfection_s=3.0,  # nominal seconds sent to the kiosk, which runs at time scale 1
        cleaning_s=2.0,
        timer_poll_s=0.2,
        notify_poll_s=0.1,
    )
    app = create_app(settings)
    with WebhookReceiver() as phone:
        async with app.router.lifespan_context(app):
            ctx = app.state.ctx
            world = await seed(ctx.sessionmaker, settings, kiosk_code=kiosk_code)
            kiosk = ScriptedKiosk(
                private_mosquitto.host, private_mosquitto.port, kiosk_code, compartments=4
            ).start()
            transport = httpx.ASGITransport(app=app)
            try:
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://locker.test"
                ) as client:
                    await until(lambda: app.state.runtime.link.ready, 10, "the link")
                    order = (
                        await client.post(
                            "/api/v1/orders",
                            json=world.order_body(purchaser_contact=phone.url),
                            headers=world.merchant(),
                        )
                    ).json()

                    # Drop-off: the courier at the kiosk screen; the service unlocks over MQTT.
                    answer = await client.post(
                        "/api/v1/kiosk/dropoff",
                        json={
                            "courier_code": world.courier_code,
                            "pin": world.courier_pin,
                            "order_ref": order["external_ref"],
                        },
                        headers=world.kiosk(),
                    )
                    assert answer.status_code == 200, answer.text
                    n = answer.json()["compartment"]
                    assert kiosk.compartments[n].lock_released
                    kiosk.open_door(n)
                    kiosk.place_item(n)
                    kiosk.close_door(n)

                    # Cycle on the kiosk, then the message with the QR code.
                    await until(lambda: bool(phone.requests), 60, "the purchaser's message")
                    headers, message = phone.requests[0]
                    assert headers[DEDUPE_HEADER] == f"order:{order['id']}:ready"
                    assert f"compartment {n}" in message["message"]
                    [attachment] = message["attachments"]
                    scanned = decode_qr(base64.b64decode(attachment["base64"]))
                    assert kiosk.compartments[n].setpoint_c is not None  # held hot

                    # The purchaser holds the QR code to the scanner: only her door opens.
                    kiosk.scan(scanned)
                    await until(lambda: kiosk.compartments[n].lock_released, 20, "the unlock")
                    assert [c.n for c in kiosk.compartments.values() if c.lock_released] == [n]
                    kiosk.open_door(n)
                    kiosk.remove_item(n)
                    kiosk.close_door(n)

                    async def state() -> str:
                        got = await client.get(
                            f"/api/v1/orders/{order['id']}", headers=world.merchant()
                        )
                        return str(got.json()["state"])

                    deadline = time.monotonic() + 20
                    while await state() != "picked_up":
                        assert time.monotonic() < deadline, "the order never became picked_up"
                        await asyncio.sleep(0.1)
                    assert len(phone.requests) == 1  # one message, no repeats
            finally:
                kiosk.stop()
