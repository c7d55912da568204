"""`GET /api/v1/operator/fleet` on SQLite and PostgreSQL: every kiosk in scope, worst first.

A site gets kiosks with one kind of trouble each (offline, a fault, food below the floor, an open
alert) and calm ones; the fleet lists them offline first, then faults, food at risk, alerts,
then by name; each operator sees only the kiosks of the sites in scope; search, the trouble
filter and paging cut the same order.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from locker_service.alerts.service import raise_alert
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.models import Compartment, Kiosk, Site, utcnow
from locker_service.sites import service as admin
from tests.locker_service.world import World, make_ready


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def add_kiosk(
    ctx: ServiceContext, world: World, code: str, name: str, *, online: bool = True
) -> int:
    async with session_scope(ctx.sessionmaker) as s:
        made = await admin.create_kiosk(s, world.site_code, code, name, "S:1,M:2")
        await s.execute(update(Kiosk).where(Kiosk.id == made.id).values(online=online))
        return made.id


async def troubled_site(ctx: ServiceContext, world: World) -> dict[str, int]:
    """World's site with one kiosk per kind of trouble, plus calm ones; names -> ids."""
    tag = world.kiosk_code
    ids = {
        "Calm": await add_kiosk(ctx, world, f"{tag}-calm", "Calm"),
        "Faulty": await add_kiosk(ctx, world, f"{tag}-faulty", "Faulty"),
        "Warm": await add_kiosk(ctx, world, f"{tag}-warm", "Warm"),
        "Alarmed": await add_kiosk(ctx, world, f"{tag}-alarmed", "Alarmed"),
        "Down": await add_kiosk(ctx, world, f"{tag}-down", "Down", online=False),
        "Lobby": world.kiosk_id,
    }
    async with session_scope(ctx.sessionmaker) as s:
        await s.execute(update(Kiosk).where(Kiosk.id == world.kiosk_id).values(online=True))
        await s.execute(
            update(Compartment)
            .where(Compartment.kiosk_id == ids["Faulty"], Compartment.number == 1)
            .values(fault="sensor_open")
        )
        # Food held at a 65 °C setpoint that has sunk to 55 °C: below the 60 °C floor.
        await s.execute(
            update(Compartment)
            .where(Compartment.kiosk_id == ids["Warm"], Compartment.number == 2)
            .values(state="awaiting_pickup", occupied=True, setpoint_c=65.0, temp_c=55.0)
        )
        # An empty compartment below the floor puts no food at risk.
        await s.execute(
            update(Compartment)
            .where(Compartment.kiosk_id == ids["Calm"], Compartment.number == 2)
            .values(setpoint_c=65.0, temp_c=21.0)
        )
        await raise_alert(
            s,
            kind="door_forced",
            severity="warning",
            message="door opened without a command",
            dedupe_key=f"forced:{ids['Alarmed']}",
            site_id=world.site_id,
            kiosk_id=ids["Alarmed"],
        )
        await raise_alert(
            s,
            kind="kiosk_offline",
            severity="critical",
            message="offline",
            dedupe_key=f"kiosk_offline:{ids['Down']}",
            site_id=world.site_id,
            kiosk_id=ids["Down"],
        )
    return ids


async def fleet(client: httpx.AsyncClient, token: str, **params: Any) -> dict[str, Any]:
    answer = await client.get("/api/v1/operator/fleet", params=params, headers=auth(token))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def names(page: dict[str, Any]) -> list[str]:
    return [k["name"] for k in page["kiosks"]]


async def test_troubled_kiosks_come_first(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    ids = await troubled_site(service, world)
    page = await fleet(app_client, world.operator_token)
    assert names(page) == ["Down", "Faulty", "Warm", "Alarmed", "Calm", "Lobby"]
    by_name = {k["name"]: k for k in page["kiosks"]}
    down = by_name["Down"]
    assert down["online"] is False and down["trouble"] is True
    assert down["open_alerts"] == {"critical": 1, "warning": 0, "info": 0}
    assert down["status_since"] is not None  # when its offline alert was raised
    assert by_name["Faulty"]["compartments_faulted"] == 1
    assert by_name["Faulty"]["compartments_free"] == 3  # a fault report alone frees nothing
    assert by_name["Warm"]["food_at_risk"] == 1 and by_name["Warm"]["compartments_free"] == 2
    assert by_name["Alarmed"]["open_alerts"]["warning"] == 1
    calm = by_name["Calm"]
    assert calm["trouble"] is False and calm["food_at_risk"] == 0
    assert calm["compartments_total"] == 3 and calm["site_id"] == world.site_id
    assert page["counts"] == {
        "kiosks": 6,
        "offline": 1,
        "faulted": 1,
        "food_at_risk": 1,
        "alerting": 2,
    }
    assert by_name["Lobby"]["id"] == ids["Lobby"]


async def test_an_acknowledged_alert_no_longer_ranks_its_kiosk(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await troubled_site(service, world)
    alerts = (await app_client.get("/api/v1/operator/alerts", headers=world.operator())).json()
    forced = next(a for a in alerts if a["kind"] == "door_forced")
    acked = await app_client.post(
        f"/api/v1/operator/alerts/{forced['id']}/ack", headers=world.operator()
    )
    assert acked.status_code == 200
    page = await fleet(app_client, world.operator_token)
    # Calm now: it stays fourth only because its name comes first among the calm kiosks.
    assert names(page) == ["Down", "Faulty", "Warm", "Alarmed", "Calm", "Lobby"]
    alarmed = next(k for k in page["kiosks"] if k["name"] == "Alarmed")
    assert alarmed["trouble"] is False and page["counts"]["alerting"] == 1


async def test_food_waiting_past_the_reminder_is_at_risk(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    async with session_scope(service.sessionmaker) as s:
        await s.execute(update(Kiosk).where(Kiosk.id == world.kiosk_id).values(online=True))
    await make_ready(app_client, world, service)
    service.clock = utcnow  # just ready: the purchaser has all the time of the reminder
    (lobby,) = (await fleet(app_client, world.operator_token))["kiosks"]
    assert lobby["food_at_risk"] == 0 and lobby["trouble"] is False
    reminder_s = service.settings.scaled(service.settings.reminder_after_s)
    service.clock = lambda: utcnow() + timedelta(seconds=reminder_s + 60)
    (lobby,) = (await fleet(app_client, world.operator_token))["kiosks"]
    assert lobby["food_at_risk"] == 1 and lobby["trouble"] is True


@pytest.mark.parametrize(
    ("profile", "setpoint_c", "temp_c", "at_risk"),
    [("uk-fsa", 68.0, 61.5, 1), ("us-fda", 63.0, 58.0, 0), ("custom", 65.0, 58.0, 1)],
)
async def test_food_at_risk_is_judged_by_its_site_s_floor(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    profile: str,
    setpoint_c: float,
    temp_c: float,
    at_risk: int,
) -> None:
    """61.5 °C is below uk-fsa's 63 °C floor though above the service's 60 °C; 58 °C is
    above us-fda's 57 °C though below 60 °C."""
    async with session_scope(service.sessionmaker) as s:
        await s.execute(update(Kiosk).where(Kiosk.id == world.kiosk_id).values(online=True))
        await s.execute(
            update(Site).where(Site.id == world.site_id).values(food_safety_profile=profile)
        )
        await s.execute(
            update(Compartment)
            .where(Compartment.kiosk_id == world.kiosk_id, Compartment.number == 2)
            .values(state="awaiting_pickup", occupied=True, setpoint_c=setpoint_c, temp_c=temp_c)
        )
    (lobby,) = (await fleet(app_client, world.operator_token))["kiosks"]
    assert lobby["food_at_risk"] == at_risk and lobby["trouble"] is bool(at_risk)


async def test_each_operator_sees_the_kiosks_of_the_sites_in_scope(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await troubled_site(service, world)
    everyone = await fleet(app_client, world.admin_token)
    # The other site's kiosk is offline with no alert: after Down (a critical alert), before
    # the kiosks that are online.
    assert names(everyone) == ["Down", "Hall", "Faulty", "Warm", "Alarmed", "Calm", "Lobby"]
    stranger = await fleet(app_client, world.other_operator_token)
    assert names(stranger) == ["Hall"]
    viewer = await fleet(app_client, world.viewer_token)
    assert "Hall" not in names(viewer) and len(viewer["kiosks"]) == 6
    outside = await app_client.get(
        "/api/v1/operator/fleet",
        params={"site_id": world.other_site_id},
        headers=world.operator(),
    )
    assert outside.status_code == 403 and outside.json()["error"] == "forbidden"
    one_site = await fleet(app_client, world.admin_token, site_id=world.other_site_id)
    assert names(one_site) == ["Hall"]


async def test_search_and_the_trouble_filter(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await troubled_site(service, world)
    token = world.admin_token
    assert names(await fleet(app_client, token, q="warm")) == ["Warm"]  # name, any case
    assert names(await fleet(app_client, token, q=f"{world.kiosk_code}-cal")) == ["Calm"]
    assert names(await fleet(app_client, token, q="tower b")) == ["Hall"]  # the site's name
    assert names(await fleet(app_client, token, q="%")) == []  # a wildcard is a character
    assert names(await fleet(app_client, token, q="_")) == []
    troubled = await fleet(app_client, token, trouble="true")
    assert names(troubled) == ["Down", "Hall", "Faulty", "Warm", "Alarmed"]
    assert troubled["counts"]["kiosks"] == 5 and troubled["counts"]["offline"] == 2
    both = await fleet(app_client, token, trouble="true", q="tower a")
    assert names(both) == ["Down", "Faulty", "Warm", "Alarmed"]


async def test_pages_follow_one_another_without_gap_or_overlap(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await troubled_site(service, world)
    token = world.admin_token
    whole = names(await fleet(app_client, token, limit=500))
    pages = []
    for offset in range(0, 8, 3):
        page = await fleet(app_client, token, limit=3, offset=offset)
        assert page["counts"]["kiosks"] == 7 and page["offset"] == offset
        pages.extend(names(page))
    assert pages == whole and len(whole) == 7
    beyond = await fleet(app_client, token, limit=3, offset=30)
    assert beyond["kiosks"] == [] and beyond["counts"]["kiosks"] == 7
    assert beyond["counts"]["offline"] == 2 and beyond["counts"]["alerting"] == 2


async def test_bad_paging_or_search_is_a_4xx_json_error(
    app_client: httpx.AsyncClient, world: World
) -> None:
    for params in (
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"q": "x" * 129},
        {"q": "a\x00b"},
        {"site_id": 0},
        {"trouble": "maybe"},
    ):
        answer = await app_client.get(
            "/api/v1/operator/fleet", params=params, headers=world.operator()
        )
        assert answer.status_code == 422, (params, answer.text)
        assert set(answer.json()) >= {"error", "message"}
    anonymous = await app_client.get("/api/v1/operator/fleet")
    assert anonymous.status_code == 401
