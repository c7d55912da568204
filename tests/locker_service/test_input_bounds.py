"""Every input has a bound the database can hold: past it, a 4xx JSON error and nothing changed.

On both backends: ids beyond the `integer` columns, NUL characters in text, and the longest
reason an operator may give stored whole with who gave it.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from locker_service.bounds import INT4_MAX, refuse_nul
from locker_service.context import ServiceContext
from locker_service.models import Compartment, Order, Site
from locker_service.operators.notes import REASON_MAX_LENGTH, signed
from tests.locker_service.world import World, create_order

OUT_OF_RANGE = [str(INT4_MAX + 1), str(2**63), "-1", "0", "-9223372036854775809"]


def test_the_longest_reason_fits_its_column_with_the_longest_signature() -> None:
    assert len(signed("r" * REASON_MAX_LENGTH, INT4_MAX, every_site=True)) == 500
    assert len(signed("r" * REASON_MAX_LENGTH, INT4_MAX)) < 500
    with pytest.raises(ValueError, match="NUL"):
        refuse_nul("ab\x00")


@pytest.mark.parametrize("value", OUT_OF_RANGE)
async def test_ids_past_the_column_range_are_422(
    app_client: httpx.AsyncClient, world: World, value: str
) -> None:
    operator = {"Authorization": f"Bearer {world.admin_token}"}
    calls = [
        ("GET", f"/api/v1/operator/kiosks/{value}", None),
        ("POST", f"/api/v1/operator/alerts/{value}/ack", None),
        ("POST", f"/api/v1/operator/compartments/{value}/open", {"reason": "stuck door"}),
        ("POST", f"/api/v1/operator/compartments/{value}/out-of-service", {"reason": "broken"}),
        ("POST", f"/api/v1/operator/compartments/{value}/back-in-service", None),
        ("GET", f"/api/v1/operator/compartments/{value}/temperatures", None),
        (
            "POST",
            f"/api/v1/operator/sites/{value}/kill-switch",
            {"engaged": True, "reason": "x" * 9},
        ),
    ]
    for method, url, body in calls:
        answer = await app_client.request(method, url, json=body, headers=operator)
        assert answer.status_code == 422, (url, answer.text)
        assert answer.json()["error"] == "validation_error"


async def test_text_with_a_nul_character_is_422_and_writes_nothing(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    for field in ("purchaser_name", "external_ref", "site", "purchaser_contact"):
        body = world.order_body(**{field: "Mia\x00Mia"})
        answer = await app_client.post("/api/v1/orders", json=body, headers=world.merchant())
        assert answer.status_code == 422, (field, answer.text)
        assert answer.json()["error"] == "validation_error"
        assert "NUL" in answer.json()["message"]
    search = await app_client.get(
        "/api/v1/operator/orders", params={"q": "a\x00b"}, headers=world.operator()
    )
    assert search.status_code == 422, search.text
    kiosk_bodies = {
        "/api/v1/kiosk/dropoff": {"courier_code": "c\x00", "pin": "1234", "order_ref": "r"},
        "/api/v1/kiosk/pickup": {"code": "1234\x005678"},
    }
    for url, body in kiosk_bodies.items():
        answer = await app_client.post(url, json=body, headers=world.kiosk())
        assert answer.status_code == 422, (url, answer.text)
    async with service.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 0


async def test_the_longest_reason_engages_the_kill_switch_and_is_stored_whole(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    reason = "r" * REASON_MAX_LENGTH
    url = f"/api/v1/operator/sites/{world.site_id}/kill-switch"
    too_long = await app_client.post(
        url, json={"engaged": True, "reason": reason + "r"}, headers=world.operator()
    )
    assert too_long.status_code == 422, too_long.text
    engaged = await app_client.post(
        url, json={"engaged": True, "reason": reason}, headers=world.operator()
    )
    assert engaged.status_code == 200, engaged.text
    assert engaged.json()["kill_switch_engaged"] is True
    async with service.sessionmaker() as session:
        site = await session.get(Site, world.site_id)
        assert site is not None and site.kill_switch_engaged
        assert site.kill_switch_reason is not None
        assert site.kill_switch_reason.startswith(reason + " (operator ")


async def test_the_longest_out_of_service_reason_is_stored_whole(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await create_order(app_client, world)  # the world is in use; compartment 1 is free
    async with service.sessionmaker() as session:
        compartment_id = await session.scalar(
            select(Compartment.id).where(Compartment.kiosk_id == world.kiosk_id).limit(1)
        )
    reason = "q" * REASON_MAX_LENGTH
    answer = await app_client.post(
        f"/api/v1/operator/compartments/{compartment_id}/out-of-service",
        json={"reason": reason},
        headers=world.operator(),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["out_of_service_reason"].startswith(reason + " (operator ")


async def test_the_dashboard_takes_no_longer_reason_than_the_api(
    app_client: httpx.AsyncClient,
) -> None:
    page = await app_client.get("/dashboard")
    assert page.status_code == 200
    assert page.text.count(f'maxlength="{REASON_MAX_LENGTH}"') == 3  # open, kill switch, all
    assert 'maxlength="500"' not in page.text
