"""The openings audit an operator reads: every door opening with who, how, why and when, searched,
paged and exported as CSV, scoped to the operator's sites, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from locker_service.context import ServiceContext
from locker_service.orders import codes
from tests.locker_service.world import World, event, make_ready, token_of

REASON = "purchaser lost her phone"
FORMULA_REASON = "=HYPERLINK('http://evil.example','click')"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _compartment_id(client: httpx.AsyncClient, token: str, kiosk_id: int, n: int) -> int:
    kiosk = (await client.get(f"/api/v1/operator/kiosks/{kiosk_id}", headers=_bearer(token))).json()
    return int(next(c["id"] for c in kiosk["compartments"] if c["number"] == n))


async def _remote_open(
    client: httpx.AsyncClient,
    token: str,
    compartment_id: int,
    reason: str,
    purpose: str | None = None,
) -> None:
    opened = await client.post(
        f"/api/v1/operator/compartments/{compartment_id}/open",
        json={"reason": reason, **({"purpose": purpose} if purpose else {})},
        headers=_bearer(token),
    )
    assert opened.status_code == 200, opened.text


async def _openings(client: httpx.AsyncClient, token: str, **query: Any) -> list[dict[str, Any]]:
    answer = await client.get("/api/v1/operator/openings", params=query, headers=_bearer(token))
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def _story(
    client: httpx.AsyncClient, world: World, service: ServiceContext
) -> dict[str, Any]:
    """A drop-off, a pickup by typed code, a remote open, an unexplained opening, and a remote
    open at the other site; returns what the test needs to find them again."""
    order, n = await make_ready(client, world, service)
    code = codes.fallback_code(service.settings.secret_key, token_of(order))
    picked = await client.post("/api/v1/kiosk/pickup", json={"code": code}, headers=world.kiosk())
    assert picked.status_code == 200, picked.text
    await event(service, world, "door_opened", n)
    await event(service, world, "item_removed", n)
    await event(service, world, "door_closed", n)

    free = 1 if n != 1 else 2
    await _remote_open(
        client,
        world.operator_token,
        await _compartment_id(client, world.operator_token, world.kiosk_id, free),
        REASON,
        "inspect",
    )
    await event(service, world, "door_opened", free)
    await event(service, world, "door_closed", free)
    await event(service, world, "door_opened", 4 if n != 4 else 3, forced=True)

    sites = (await client.get("/api/v1/operator/sites", headers=_bearer(world.admin_token))).json()
    other_kiosk = next(s for s in sites if s["id"] == world.other_site_id)["kiosks"][0]["id"]
    await _remote_open(
        client,
        world.admin_token,
        await _compartment_id(client, world.admin_token, other_kiosk, 1),
        FORMULA_REASON,
    )
    return {"order": order, "n": n, "free": free, "other_kiosk": other_kiosk}


async def test_every_opening_says_who_how_why_and_when_within_the_operators_sites(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    story = await _story(app_client, world, service)
    seen = await _openings(app_client, world.operator_token)
    assert [o["kind"] for o in seen] == ["unexplained", "remote_open", "pickup", "dropoff"]
    assert {o["site_id"] for o in seen} == {world.site_id}  # the other site's is not shown
    by_kind = {o["kind"]: o for o in seen}

    remote = by_kind["remote_open"]
    assert remote["reason"] == REASON
    assert remote["actor_name"] == "Olga" and remote["actor"].startswith("operator:")
    assert remote["how"] == "remote" and remote["compartment"] == story["free"]
    assert remote["request_id"] and remote["door_opened_at"] is not None
    assert remote["purpose"] == "inspect"  # what the operator said it was for (ADR 0120)
    assert by_kind["pickup"]["purpose"] is None

    pickup = by_kind["pickup"]
    assert (pickup["actor"], pickup["how"], pickup["reason"]) == (
        "purchaser:keypad",
        "keypad",
        "pickup",
    )
    assert pickup["order_ref"] == story["order"]["external_ref"]

    dropoff = by_kind["dropoff"]
    assert dropoff["actor"] == f"courier:{world.courier_code}"
    assert (dropoff["actor_name"], dropoff["how"]) == ("Sam", "courier_pin")
    assert by_kind["unexplained"]["how"] == "none"
    assert by_kind["unexplained"]["order_id"] is None

    stranger = await _openings(app_client, world.other_operator_token)
    assert [(o["kind"], o["site_id"]) for o in stranger] == [("remote_open", world.other_site_id)]
    everyone = await _openings(app_client, world.admin_token)
    assert len(everyone) == 5


async def test_search_narrows_by_each_filter(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    story = await _story(app_client, world, service)
    token = world.operator_token
    order = story["order"]

    async def kinds(**query: Any) -> list[str]:
        return [o["kind"] for o in await _openings(app_client, token, **query)]

    assert await kinds(kind="remote_open") == ["remote_open"]
    assert await kinds(kind="pickup") == ["pickup"]
    assert await kinds(actor="operator") == ["remote_open"]
    assert await kinds(actor=f"courier:{world.courier_code}") == ["dropoff"]
    assert await kinds(actor="courier:nobody") == []
    assert await kinds(actor="purchaser") == ["pickup"]
    assert await kinds(order=order["external_ref"]) == ["pickup", "dropoff"]
    assert await kinds(order=order["id"]) == ["pickup", "dropoff"]
    assert await kinds(compartment=story["free"]) == ["remote_open"]
    assert await kinds(site_id=world.site_id, kiosk_id=world.kiosk_id) == [
        "unexplained",
        "remote_open",
        "pickup",
        "dropoff",
    ]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await kinds(since=later) == []
    everything = await _openings(app_client, token)
    oldest_at = everything[-1]["at"]
    assert "dropoff" not in await kinds(since=everything[-2]["at"])
    assert await kinds(until=everything[-2]["at"]) == ["dropoff"]
    assert await kinds(until=oldest_at) == []

    # Another site's site or kiosk is refused; bad input is a clear 4xx and nothing else.
    for query in ({"site_id": world.other_site_id}, {"kiosk_id": story["other_kiosk"]}):
        refused = await app_client.get(
            "/api/v1/operator/openings", params=query, headers=_bearer(token)
        )
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    for query, error in (
        ({"kind": "teleport"}, "validation_error"),
        ({"since": later, "until": oldest_at}, "bad_time_range"),
        ({"cursor": "not-a-cursor"}, "bad_cursor"),
        ({"kiosk_id": 999999}, "not_found"),
    ):
        bad = await app_client.get(
            "/api/v1/operator/openings", params=query, headers=_bearer(token)
        )
        assert 400 <= bad.status_code < 500 and bad.json()["error"] == error, (query, bad.text)
    anonymous = await app_client.get("/api/v1/operator/openings")
    assert anonymous.status_code == 401


async def test_pages_follow_one_another_without_gaps_or_repeats(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await _story(app_client, world, service)
    whole = await _openings(app_client, world.admin_token)
    pages: list[list[int]] = []
    cursor: str | None = None
    while True:
        query: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        answer = await app_client.get(
            "/api/v1/operator/openings", params=query, headers=_bearer(world.admin_token)
        )
        body = answer.json()
        pages.append([o["id"] for o in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == [[o["id"] for o in whole][i : i + 2] for i in range(0, len(whole), 2)]


async def test_csv_export_has_every_match_with_the_reason_and_no_live_formula(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    await _story(app_client, world, service)
    answer = await app_client.get(
        "/api/v1/operator/openings.csv", headers=_bearer(world.operator_token)
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["kind"] for r in rows] == ["unexplained", "remote_open", "pickup", "dropoff"]
    remote = rows[1]
    assert (remote["reason"], remote["actor_name"], remote["how"]) == (REASON, "Olga", "remote")
    assert remote["purpose"] == "inspect" and rows[2]["purpose"] == ""
    assert remote["site"] == world.site_code and remote["kiosk"] == world.kiosk_code

    only_remote = await app_client.get(
        "/api/v1/operator/openings.csv",
        params={"kind": "remote_open"},
        headers=_bearer(world.admin_token),
    )
    reasons = [r["reason"] for r in csv.DictReader(io.StringIO(only_remote.text))]
    # A typed reason a spreadsheet would run as a formula is written as text.
    assert sorted(reasons) == sorted([REASON, "'" + FORMULA_REASON])

    refused = await app_client.get(
        "/api/v1/operator/openings.csv",
        params={"site_id": world.site_id},
        headers=_bearer(world.other_operator_token),
    )
    assert refused.status_code == 403


async def test_a_pickup_at_the_scanner_says_whether_a_qr_code_or_a_code_opened_it(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    by_qr, _ = await make_ready(app_client, world, service)
    by_code, _ = await make_ready(app_client, world, service)
    await event(service, world, "scan", text=token_of(by_qr))
    code = codes.fallback_code(service.settings.secret_key, token_of(by_code))
    await event(service, world, "scan", text=code)
    pickups = await _openings(app_client, world.operator_token, kind="pickup")
    assert {(o["order_ref"], o["actor"], o["how"]) for o in pickups} == {
        (by_qr["external_ref"], "purchaser:qr", "qr"),
        (by_code["external_ref"], "purchaser:scanner", "scanner"),
    }
