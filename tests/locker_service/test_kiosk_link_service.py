"""The running service with its edges wired: kiosk link, telemetry ingest and readiness."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from sqlalchemy import select

from locker_service.main import create_app
from locker_service.models import Alert, Kiosk
from tests.locker_service.conftest import make_settings
from tests.locker_service.test_telemetry_ingest import seed
from tests.support.mosquitto import MosquittoProcess
from tests.support.scripted_kiosk import ScriptedKiosk

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]


async def test_service_reports_kiosk_state_and_serves_its_telemetry(
    database_url: str, private_mosquitto: MosquittoProcess
) -> None:
    settings = make_settings(
        database_url,
        kiosk_link_enabled=True,
        mqtt_url=private_mosquitto.url,
        replica_id=f"svc-{uuid.uuid4().hex[:6]}",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        ctx = app.state.ctx
        seeded = await seed(ctx.sessionmaker)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://locker.test") as client:
            # The first lease round runs in the background (ADR 0099): ready once it ended.
            deadline = time.monotonic() + 30
            while (ready := await client.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, ready.json()
                await asyncio.sleep(0.05)
            assert ready.json()["checks"] == {"database": True, "mqtt": True, "leases": True}

            crashed = False
            kiosk = ScriptedKiosk(
                private_mosquitto.host, private_mosquitto.port, seeded.kiosk_code, compartments=4
            ).start()
            try:
                kiosk.set_temperature(1, 66.5)
                url = f"/api/v1/operator/compartments/{seeded.compartment_ids[1]}/temperatures"
                auth = {"Authorization": f"Bearer {seeded.operator_token}"}
                deadline = time.monotonic() + 15
                points: list[dict[str, object]] = []
                while not points:
                    assert time.monotonic() < deadline, "telemetry never reached the history"
                    kiosk.publish_telemetry()
                    await asyncio.sleep(0.3)
                    points = (await client.get(url, headers=auth)).json()["points"]
                assert points[-1]["temp_c"] == 66.5

                metrics = (await client.get("/metrics")).text
                assert "locker_mqtt_connected 1.0" in metrics
                stored = next(
                    line
                    for line in metrics.splitlines()
                    if line.startswith("locker_telemetry_readings_stored_total ")
                )
                assert float(stored.split()[1]) >= 4
                assert 'locker_mqtt_messages_total{kind="telemetry"}' in metrics
                assert "locker_telemetry_lag_seconds_count" in metrics

                async with ctx.sessionmaker() as session:
                    row = await session.get(Kiosk, seeded.kiosk_id)
                    assert row is not None and row.online and row.fw == kiosk.fw

                # The kiosk PC loses power: the broker publishes its last will.
                kiosk.crash()
                crashed = True
                deadline = time.monotonic() + 60  # keepalive 30 s x 1.5 at worst
                while True:
                    async with ctx.sessionmaker() as session:
                        row = await session.get(Kiosk, seeded.kiosk_id)
                        kinds = {a.kind for a in (await session.scalars(select(Alert))).all()}
                    if row is not None and not row.online and "kiosk_offline" in kinds:
                        break
                    assert time.monotonic() < deadline, "the kiosk never went offline"
                    await asyncio.sleep(0.2)
            finally:
                if not crashed:
                    kiosk.stop()

            private_mosquitto.stop()
            deadline = time.monotonic() + 15
            while (await client.get("/readyz")).status_code != 503:
                assert time.monotonic() < deadline, "readiness never noticed the broker was gone"
                await asyncio.sleep(0.2)
