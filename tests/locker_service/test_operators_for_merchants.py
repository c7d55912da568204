"""Operators for merchants (ADR 0075): a restaurant chain's desk sees and acts on its merchants'
orders only, at its sites or wherever they may order; the kiosks, the site's records and other
merchants' orders stay with the site's own operators."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from locker_service.context import ServiceContext
from locker_service.db import create_engine, create_sessionmaker, session_scope
from locker_service.models import Alert, operator_merchants, utcnow
from locker_service.sites import service as admin
from tests.locker_service.world import COURIER_PIN, FakeKiosk, World, dropped_off
from tests.support.lockerctl import lockerctl_on


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _two_merchants_food(
    client: httpx.AsyncClient, world: World, service: ServiceContext
) -> tuple[dict[str, Any], int, dict[str, Any], int, str, str]:
    """Food of the world's merchant and of another one in the same kiosk, and a desk
    operator and a desk viewer for the world's merchant (given no site: wherever it orders)."""
    async with session_scope(service.sessionmaker) as s:
        other = await admin.create_merchant(s, "Dumpling House", [world.site_code])
        await admin.create_courier(
            s,
            service.settings.secret_key,
            f"{world.courier_code}-d",
            "Kim",
            other.id,
            None,
            COURIER_PIN,
        )
        desk = await admin.create_operator(s, "Desk", "operator", [], [world.merchant_id])
        looker = await admin.create_operator(s, "Desk viewer", "viewer", [], [world.merchant_id])
    assert other.secret and desk.secret and looker.secret
    mine, my_n = await dropped_off(client, world, service, external_ref="noodles-1")
    theirs_world = dataclasses.replace(
        world, merchant_key=other.secret, courier_code=f"{world.courier_code}-d"
    )
    theirs, their_n = await dropped_off(client, theirs_world, service, external_ref="dumplings-1")
    return mine, my_n, theirs, their_n, desk.secret, looker.secret


async def test_a_desk_sees_its_merchants_orders_only(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    mine, my_n, theirs, their_n, desk, _ = await _two_merchants_food(app_client, world, service)
    me = (await app_client.get("/api/v1/operator/me", headers=_bearer(desk))).json()
    assert me["merchant_ids"] == [world.merchant_id]
    site_wide = (await app_client.get("/api/v1/operator/me", headers=world.operator())).json()
    assert site_wide["merchant_ids"] is None

    # Its sites were not given: wherever its merchant may order.
    sites = (await app_client.get("/api/v1/operator/sites", headers=_bearer(desk))).json()
    assert [s["id"] for s in sites] == [world.site_id]
    found = (await app_client.get("/api/v1/operator/orders", headers=_bearer(desk))).json()
    assert [o["external_ref"] for o in found] == ["noodles-1"]
    everyone = (await app_client.get("/api/v1/operator/orders", headers=world.operator())).json()
    assert {o["external_ref"] for o in everyone} == {"noodles-1", "dumplings-1"}

    own = await app_client.get(
        f"/api/v1/operator/orders/{mine['id']}/record", headers=_bearer(desk)
    )
    assert own.status_code == 200
    other = await app_client.get(
        f"/api/v1/operator/orders/{theirs['id']}/record", headers=_bearer(desk)
    )
    assert other.status_code == 404

    # The kiosk's grid: both compartments busy, only its own order named.
    grid = (
        await app_client.get(f"/api/v1/operator/kiosks/{world.kiosk_id}", headers=_bearer(desk))
    ).json()
    by_number = {c["number"]: c for c in grid["compartments"]}
    assert by_number[my_n]["order"]["external_ref"] == "noodles-1"
    assert by_number[their_n]["order"] is None and by_number[their_n]["state"] != "available"

    # The openings audit: the courier's drop-off of its order, not the other one's.
    openings = (await app_client.get("/api/v1/operator/openings", headers=_bearer(desk))).json()
    assert {o["order_ref"] for o in openings["items"]} == {"noodles-1"}

    # Alerts: those about the compartment holding its food, since it has held it (not one
    # raised there yesterday, about someone else's order).
    async with session_scope(service.sessionmaker) as s:
        yesterday = utcnow() - timedelta(days=1)
        s.add(
            Alert(
                kind="timer_failed",
                site_id=world.site_id,
                kiosk_id=world.kiosk_id,
                compartment_id=by_number[my_n]["id"],
                severity="warning",
                message="a timer failed (order someone-else-1)",
                dedupe_key="old",
                state="resolved",
                raised_at=yesterday,
                last_raised_at=yesterday,
                count=1,
            )
        )
        for n in (my_n, their_n):
            compartment_id = by_number[n]["id"]
            s.add(
                Alert(
                    kind="temperature_low",
                    site_id=world.site_id,
                    kiosk_id=world.kiosk_id,
                    compartment_id=compartment_id,
                    severity="warning",
                    message=f"compartment {n} cold",
                    dedupe_key=f"cold:{compartment_id}",
                    state="open",
                    raised_at=utcnow(),
                    last_raised_at=utcnow(),
                    count=1,
                )
            )
    alerts = (await app_client.get("/api/v1/operator/alerts", headers=_bearer(desk))).json()
    assert [a["message"] for a in alerts] == [f"compartment {my_n} cold"]


async def test_a_desk_acts_on_its_orders_and_nothing_else(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext, fake_kiosk: FakeKiosk
) -> None:
    _, my_n, _, their_n, desk, looker = await _two_merchants_food(app_client, world, service)
    grid = (
        await app_client.get(f"/api/v1/operator/kiosks/{world.kiosk_id}", headers=world.operator())
    ).json()
    ids = {c["number"]: c["id"] for c in grid["compartments"]}
    free = next(c["id"] for c in grid["compartments"] if c["state"] == "available")
    body = {"reason": "the purchaser called the restaurant"}
    dropoffs = fake_kiosk.unlocks()  # the couriers' openings

    def refused(answer: httpx.Response) -> bool:
        return answer.status_code == 403 and answer.json()["error"] == "merchants_only"

    for compartment in (ids[their_n], free):  # another merchant's food; an empty compartment
        answer = await app_client.post(
            f"/api/v1/operator/compartments/{compartment}/open", json=body, headers=_bearer(desk)
        )
        assert refused(answer), answer.text
    assert fake_kiosk.unlocks() == dropoffs
    viewer = await app_client.post(
        f"/api/v1/operator/compartments/{ids[my_n]}/open", json=body, headers=_bearer(looker)
    )
    assert viewer.status_code == 403 and fake_kiosk.unlocks() == dropoffs
    opened = await app_client.post(
        f"/api/v1/operator/compartments/{ids[my_n]}/open", json=body, headers=_bearer(desk)
    )
    assert opened.status_code == 200, opened.text
    assert fake_kiosk.unlocks() == [*dropoffs, my_n]

    # The kiosk and the site are not its to act on, nor the site's records to read.
    for path, payload in (
        (f"/api/v1/operator/compartments/{ids[my_n]}/out-of-service", {"reason": "mine"}),
        (
            f"/api/v1/operator/sites/{world.site_id}/kill-switch",
            {"engaged": True, "reason": "mine"},
        ),
    ):
        answer = await app_client.post(path, json=payload, headers=_bearer(desk))
        assert refused(answer), (path, answer.text)
    haccp = await app_client.get(
        f"/api/v1/operator/sites/{world.site_id}/haccp", headers=_bearer(desk)
    )
    assert refused(haccp), haccp.text
    site = (await app_client.get("/api/v1/operator/sites", headers=world.operator())).json()[0]
    assert site["kill_switch_engaged"] is False


def test_lockerctl_makes_an_operator_for_merchants(tmp_path: Path) -> None:
    url, run = lockerctl_on(tmp_path)

    run("create-site", "--code", "hq", "--name", "HQ")
    made = run("create-merchant", "--name", "Noodle Bar", "--site", "hq")
    merchant_id = made.split("(id ")[1].split(")")[0]
    desk = run("create-operator", "--name", "Desk", "--merchant", merchant_id)
    assert f"for merchant(s) {merchant_id}" in desk and "operator token (shown once)" in desk
    assert "no merchant 99" in run("create-operator", "--name", "X", "--merchant", "99", code=1)
    assert "an admin sees every order" in run(
        "create-operator", "--name", "Y", "--role", "admin", "--merchant", merchant_id, code=1
    )

    async def rows() -> list[Any]:
        engine = create_engine(url)
        try:
            async with create_sessionmaker(engine)() as session:
                return list((await session.execute(select(operator_merchants))).all())
        finally:
            await engine.dispose()

    assert [tuple(r)[1] for r in asyncio.run(rows())] == [int(merchant_id)]


def test_a_desk_s_live_stream_carries_no_order_of_anyone() -> None:
    """The dashboard's stream: site-wide changes of its sites only, never the kinds that carry
    orders (whose merchant the message does not say)."""
    from locker_service.api.deps import OperatorPrincipal
    from locker_service.live import LiveMessage
    from locker_service.models import Operator
    from locker_service.web.stream_endpoint import OPERATOR_KINDS, visible_to

    person = Operator(id=7, name="Desk", role="operator")
    desk = OperatorPrincipal(person, frozenset({1}), frozenset({3}))
    site_wide = OperatorPrincipal(person, frozenset({1}))

    def heard(principal: OperatorPrincipal, wanted: frozenset[str] | None) -> set[str]:
        visible = visible_to(principal, None, wanted)
        return {k for k in OPERATOR_KINDS if visible(LiveMessage(1, k, 1))}

    assert heard(site_wide, None) == set(OPERATOR_KINDS)
    assert heard(desk, None) == {"kiosk", "site", "telemetry"}
    assert heard(desk, frozenset({"kiosk", "alert"})) == {"kiosk"}
    assert not visible_to(desk, None, None)(LiveMessage(2, "kiosk", 2))  # not its site
