"""Keys and tokens (ADR 0074): several per merchant, kiosk and operator, created, listed with
their prefix and last use, rotated with an overlap, revoked and expiring; through the admin
API, a merchant's own API and `lockerctl keys`. Merchant keys are cached for a short time: a
key revoked elsewhere stops working within the TTL, an expired one at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update

from locker_service.api import deps
from locker_service.cache import AtMostEvery, TtlCache
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.credentials import rules
from locker_service.db import create_engine, session_scope
from locker_service.errors import Unauthorized, Unprocessable
from locker_service.models import Credential, utcnow
from locker_service.security import hash_token
from locker_service.sites import service as sites
from migrations import upgrade_async
from tests.locker_service.conftest import make_settings
from tests.locker_service.world import World
from tests.support.lockerctl import lockerctl_on

CACHE_S = 0.5


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, credential_cache_s=CACHE_S)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _order_status(client: httpx.AsyncClient, world: World, key: str) -> tuple[int, str]:
    answer = await client.post(
        "/api/v1/orders", json=world.order_body(), headers={"X-API-Key": key}
    )
    return answer.status_code, answer.json().get("error", "") if answer.status_code >= 400 else ""


async def _keys(client: httpx.AsyncClient, world: World, kind: str, owner_id: int) -> Any:
    listed = await client.get(
        "/api/v1/admin/keys",
        params={"kind": kind, "owner_id": owner_id},
        headers=_bearer(world.admin_token),
    )
    assert listed.status_code == 200, listed.text
    return listed.json()


async def test_a_rotated_key_works_until_revoked_then_401(
    app_client: httpx.AsyncClient, world: World
) -> None:
    [first] = await _keys(app_client, world, "merchant", world.merchant_id)
    assert first["prefix"] == world.merchant_key[:10] and first["status"] == "active"
    assert "secret" not in first and "key_hash" not in first

    rotated = await app_client.post(
        f"/api/v1/admin/keys/{first['id']}/rotate",
        json={"overlap_hours": 1},
        headers=_bearer(world.admin_token),
    )
    assert rotated.status_code == 201, rotated.text
    new_key = rotated.json()["secret"]
    assert new_key.startswith("mk_") and new_key != world.merchant_key
    old_end = datetime.fromisoformat(rotated.json()["replaces"]["expires_at"])
    assert timedelta(minutes=59) < old_end - utcnow() <= timedelta(hours=1)
    # Both work during the overlap.
    assert await _order_status(app_client, world, world.merchant_key) == (201, "")
    assert await _order_status(app_client, world, new_key) == (201, "")

    revoked = await app_client.post(
        f"/api/v1/admin/keys/{first['id']}/revoke", headers=_bearer(world.admin_token)
    )
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    # This replica forgets it at once; the new key goes on.
    assert await _order_status(app_client, world, world.merchant_key) == (401, "key_revoked")
    assert await _order_status(app_client, world, new_key) == (201, "")
    listed = await _keys(app_client, world, "merchant", world.merchant_id)
    assert [k["status"] for k in listed] == ["revoked", "active"]
    assert listed[1]["label"] == "first key"  # the replacement keeps the label

    again = await app_client.post(
        f"/api/v1/admin/keys/{first['id']}/rotate", json={}, headers=_bearer(world.admin_token)
    )
    assert again.status_code == 409 and again.json()["error"] == "key_not_active"


async def test_a_key_is_replaced_once_and_a_merchant_cannot_outlive_its_key_s_expiry(
    app_client: httpx.AsyncClient, world: World
) -> None:
    admin = _bearer(world.admin_token)
    in_a_week = utcnow() + timedelta(days=7)
    made = await app_client.post(
        "/api/v1/admin/keys",
        json={
            "kind": "merchant",
            "owner_id": world.merchant_id,
            "expires_at": in_a_week.isoformat(),
        },
        headers=admin,
    )
    key_id, key = made.json()["key"]["id"], made.json()["secret"]
    # The merchant rotates it, asking for a key that never ends: it ends with the old one.
    rotated = await app_client.post(
        f"/api/v1/keys/{key_id}/rotate", json={"overlap_hours": 1}, headers={"X-API-Key": key}
    )
    assert rotated.status_code == 201, rotated.text
    assert datetime.fromisoformat(rotated.json()["key"]["expires_at"]) == in_a_week
    assert rotated.json()["replaces"]["replaced_at"] is not None
    # The old key, still in its overlap, cannot make another one (a leaked copy, say).
    twice = await app_client.post(
        f"/api/v1/keys/{key_id}/rotate", json={}, headers={"X-API-Key": key}
    )
    assert twice.status_code == 409 and twice.json()["error"] == "key_replaced"
    # A time without its zone is refused, not guessed.
    naive = await app_client.post(
        "/api/v1/admin/keys",
        json={"kind": "merchant", "owner_id": world.merchant_id, "expires_at": "2030-01-01T00:00"},
        headers=admin,
    )
    assert naive.status_code == 422 and naive.json()["error"] == "validation_error"


async def test_a_key_revoked_elsewhere_stops_within_the_cache_time(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    assert await _order_status(app_client, world, world.merchant_key) == (201, "")  # cached
    async with service.sessionmaker() as session, session.begin():
        await session.execute(  # as another replica's revocation would
            update(Credential)
            .where(Credential.key_hash == hash_token(world.merchant_key))
            .values(revoked_at=utcnow())
        )
    await asyncio.sleep(CACHE_S + 0.2)
    assert await _order_status(app_client, world, world.merchant_key) == (401, "key_revoked")


async def test_an_expired_key_is_refused_the_moment_it_expires_even_cached(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service.merchant_keys.ttl_s = 3600.0  # the cache alone would keep it for an hour
    expires_at = utcnow() + timedelta(minutes=10)
    made = await app_client.post(
        "/api/v1/admin/keys",
        json={
            "kind": "merchant",
            "owner_id": world.merchant_id,
            "label": "till tomorrow",
            "expires_at": expires_at.isoformat(),
        },
        headers=_bearer(world.admin_token),
    )
    assert made.status_code == 201, made.text
    key = made.json()["secret"]
    assert await _order_status(app_client, world, key) == (201, "")
    # The service's clock at the key check reaches the expiry (no wall-clock wait: a busy
    # machine cannot make the first use above late).
    monkeypatch.setattr(deps, "utcnow", lambda: expires_at)
    assert await _order_status(app_client, world, key) == (401, "key_expired")
    assert await _order_status(app_client, world, world.merchant_key) == (201, "")


async def test_kiosk_and_operator_tokens_rotate_and_revoke_like_keys(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    async with service.sessionmaker() as session:
        operator_id = (
            await session.scalars(
                select(Credential.operator_id).where(
                    Credential.key_hash == hash_token(world.operator_token)
                )
            )
        ).one()
    for kind, owner_id, old, path in (
        ("kiosk", world.kiosk_id, world.kiosk_token, "/api/v1/kiosk/me"),
        ("operator", operator_id, world.operator_token, "/api/v1/operator/me"),
    ):
        [key] = await _keys(app_client, world, kind, owner_id)
        rotated = await app_client.post(
            f"/api/v1/admin/keys/{key['id']}/rotate",
            json={"overlap_hours": 0},  # the old one stops now
            headers=_bearer(world.admin_token),
        )
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()["secret"]
        assert new.startswith("kt_" if kind == "kiosk" else "ot_")
        assert (await app_client.get(path, headers=_bearer(new))).status_code == 200
        refused = await app_client.get(path, headers=_bearer(old))
        assert refused.status_code == 401 and refused.json()["error"] == "key_expired"
        listed = await _keys(app_client, world, kind, owner_id)
        assert [k["status"] for k in listed] == ["expired", "active"]
        assert listed[1]["last_used_at"] is not None  # used just now
        await app_client.post(
            f"/api/v1/admin/keys/{listed[1]['id']}/revoke", headers=_bearer(world.admin_token)
        )
        refused = await app_client.get(path, headers=_bearer(new))
        assert refused.status_code == 401 and refused.json()["error"] == "key_revoked"
    unknown = await app_client.get("/api/v1/kiosk/me", headers=_bearer("kt_nothing"))
    assert unknown.status_code == 401 and unknown.json()["error"] == "unauthorized"


async def test_only_admins_manage_keys_and_bad_requests_change_nothing(
    app_client: httpx.AsyncClient, world: World
) -> None:
    params = {"kind": "merchant", "owner_id": world.merchant_id}
    for token in (world.operator_token, world.viewer_token):
        refused = await app_client.get("/api/v1/admin/keys", params=params, headers=_bearer(token))
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    as_merchant = await app_client.get(
        "/api/v1/admin/keys", params=params, headers=world.merchant()
    )
    assert as_merchant.status_code == 401
    [key] = await _keys(app_client, world, "merchant", world.merchant_id)
    admin = _bearer(world.admin_token)
    past = await app_client.post(
        "/api/v1/admin/keys",
        json={**params, "expires_at": "2020-01-01T00:00:00Z"},
        headers=admin,
    )
    assert past.status_code == 422 and past.json()["error"] == "invalid_expiry"
    too_long = await app_client.post(
        f"/api/v1/admin/keys/{key['id']}/rotate", json={"overlap_hours": 10_000}, headers=admin
    )
    assert too_long.status_code == 422
    nobody = await app_client.post(
        "/api/v1/admin/keys", json={"kind": "kiosk", "owner_id": 999_999}, headers=admin
    )
    assert nobody.status_code == 404
    missing = await app_client.post("/api/v1/admin/keys/999999/revoke", headers=admin)
    assert missing.status_code == 404
    assert await _keys(app_client, world, "merchant", world.merchant_id) == [key]


async def test_a_merchant_manages_its_own_keys_and_no_one_else_s(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    async with session_scope(service.sessionmaker) as session:
        other = await sites.create_merchant(session, "Other Kitchen", [world.site_code])
    assert other.secret is not None
    [theirs] = (await app_client.get("/api/v1/keys", headers={"X-API-Key": other.secret})).json()
    mine = (await app_client.get("/api/v1/keys", headers=world.merchant())).json()
    assert [k["prefix"] for k in mine] == [world.merchant_key[:10]]
    assert mine[0]["last_used_at"] is not None  # this very call

    stolen = await app_client.post(f"/api/v1/keys/{theirs['id']}/revoke", headers=world.merchant())
    assert stolen.status_code == 404
    assert await _order_status(app_client, world, other.secret) == (201, "")

    rotated = await app_client.post(
        f"/api/v1/keys/{mine[0]['id']}/rotate", json={"overlap_hours": 2}, headers=world.merchant()
    )
    assert rotated.status_code == 201, rotated.text
    new_key = rotated.json()["secret"]
    revoke_old = await app_client.post(
        f"/api/v1/keys/{mine[0]['id']}/revoke", headers={"X-API-Key": new_key}
    )
    assert revoke_old.json()["status"] == "revoked"
    assert await _order_status(app_client, world, world.merchant_key) == (401, "key_revoked")
    assert await _order_status(app_client, world, new_key) == (201, "")


def test_lockerctl_keys(tmp_path: Path) -> None:
    _, run = lockerctl_on(tmp_path)

    run("create-site", "--code", "hq", "--name", "HQ")
    made = run("create-merchant", "--name", "Noodle Bar", "--site", "hq")
    merchant_id = made.split("(id ")[1].split(")")[0]
    first_key = made.split("API key (shown once): ")[1].strip()
    listed = run("keys", "list", "--merchant", merchant_id)
    assert first_key[:10] in listed and "active" in listed and "first key" in listed
    first_id = listed.split()[0]

    created = run(
        "keys", "create", "--merchant", merchant_id, "--label", "ci", "--expires-in-days", "7"
    )
    assert "key (shown once): mk_" in created and " ci" in created
    rotated = run("keys", "rotate", first_id, "--overlap-hours", "0")
    assert rotated.count("key (shown once): mk_") == 1 and "old: " in rotated
    assert "expired" in rotated.split("new: ")[0]
    revoked = run("keys", "revoke", first_id)
    assert "revoked" in revoked
    statuses = [
        line.split()[2] for line in run("keys", "list", "--merchant", merchant_id).splitlines()
    ]
    assert statuses == ["revoked", "active", "active"]

    run("create-kiosk", "--site", "hq", "--code", "lobby", "--name", "Lobby", "--layout", "S:1")
    assert "first key" in run("keys", "list", "--kiosk", "lobby")
    assert "error: give one of" in run("keys", "list", code=2)
    assert "no kiosk 'nowhere'" in run("keys", "list", "--kiosk", "nowhere", code=1)
    assert "no key 999" in run("keys", "revoke", "999", code=1)


async def test_migration_0012_keeps_every_principal_s_key(empty_database_url: str) -> None:
    url = empty_database_url
    await upgrade_async(url, "0011")
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            now = {"now": datetime(2026, 1, 2, tzinfo=UTC)}
            await connection.execute(
                text(
                    "INSERT INTO sites (code, name, timezone, kill_switch_engaged, created_at) "
                    "VALUES ('s', 'S', 'UTC', false, :now)"
                ),
                now,
            )
            await connection.execute(
                text(
                    "INSERT INTO merchants (name, api_key_hash, created_at) VALUES ('M', :h, :now)"
                ),
                {"h": hash_token("mk_old"), **now},
            )
            await connection.execute(
                text(
                    "INSERT INTO kiosks (site_id, code, name, token_hash, online, created_at) "
                    "SELECT id, 'k', 'K', :h, false, :now FROM sites"
                ),
                {"h": hash_token("kt_old"), **now},
            )
            await connection.execute(
                text(
                    "INSERT INTO operators (name, token_hash, role, created_at) "
                    "VALUES ('O', :h, 'admin', :now)"
                ),
                {"h": hash_token("ot_old"), **now},
            )
            await connection.execute(  # a contract: on SQLite the merchants table is copied
                text(
                    "INSERT INTO merchant_sites SELECT merchants.id, sites.id FROM merchants, sites"
                )
            )
        await upgrade_async(url)
        async with engine.connect() as connection:
            contracts = (
                await connection.execute(text("SELECT count(*) FROM merchant_sites"))
            ).scalar()
            rows = (
                await connection.execute(
                    text(
                        "SELECT merchant_id IS NOT NULL, kiosk_id IS NOT NULL, "
                        "operator_id IS NOT NULL, key_hash, label, revoked_at, expires_at "
                        "FROM credentials ORDER BY id"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert contracts == 1  # not emptied by the copy's ON DELETE CASCADE
    assert [tuple(r) for r in rows] == [
        (True, False, False, hash_token("mk_old"), "first key", None, None),
        (False, True, False, hash_token("kt_old"), "first key", None, None),
        (False, False, True, hash_token("ot_old"), "first key", None, None),
    ]


# -- plain rules -------------------------------------------------------------------------------


class _Key:
    def __init__(self, expires_at: datetime | None = None, revoked_at: datetime | None = None):
        self.expires_at = expires_at
        self.revoked_at = revoked_at


def test_a_key_is_valid_until_revoked_or_expired() -> None:
    now = datetime(2026, 12, 4, 12, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert rules.status(_Key(), now) == "active"
    assert rules.status(_Key(expires_at=now + hour), now) == "active"
    assert rules.status(_Key(expires_at=now), now) == "expired"
    assert rules.status(_Key(expires_at=now - hour, revoked_at=now - hour), now) == "revoked"
    with pytest.raises(Unauthorized) as refused:
        rules.refuse_unless_active(_Key(expires_at=now - hour), now)
    assert refused.value.code == "key_expired"
    rules.refuse_unless_active(_Key(), now)


def test_rotation_keeps_the_old_key_for_the_overlap_or_its_own_sooner_end() -> None:
    now = datetime(2026, 12, 4, 12, tzinfo=UTC)
    day = timedelta(days=1)
    assert rules.old_key_end(None, now, day) == now + day
    assert rules.old_key_end(now + timedelta(hours=2), now, day) == now + timedelta(hours=2)
    assert rules.old_key_end(None, now, timedelta(0)) == now
    for wrong in (timedelta(seconds=-1), rules.MAX_OVERLAP + timedelta(seconds=1)):
        with pytest.raises(Unprocessable):
            rules.old_key_end(None, now, wrong)


def test_a_use_is_written_at_most_once_a_period_per_key() -> None:
    now = [0.0]
    uses = AtMostEvery(60.0, clock=lambda: now[0])
    assert uses.due(1) and not uses.due(1) and uses.due(2)
    now[0] = 59.9
    assert not uses.due(1)
    now[0] = 60.0
    assert uses.due(1) and not uses.due(1)


async def test_the_cache_keeps_hits_only_and_for_its_ttl() -> None:
    now = [100.0]
    cache: TtlCache[str] = TtlCache(5.0, clock=lambda: now[0])
    calls: list[str] = []
    answer: str | None = None

    async def load() -> str | None:
        calls.append("db")
        return answer

    assert await cache.get("k", load) is None  # a miss is not remembered...
    answer = "merchant"
    assert await cache.get("k", load) == "merchant"  # ...so a new key works at once
    answer = None  # revoked in the database
    now[0] += 4.9
    assert await cache.get("k", load) == "merchant"  # still within the TTL
    now[0] += 0.2
    assert await cache.get("k", load) is None
    assert calls == ["db", "db", "db"]
    assert await cache.get("k", load) is None and len(calls) == 4


async def test_no_cache_when_the_ttl_is_zero() -> None:
    cache: TtlCache[str] = TtlCache(0.0)
    calls: list[int] = []

    async def load() -> str | None:
        calls.append(1)
        return "merchant"

    for _ in range(3):
        assert await cache.get("k", load) == "merchant"
    assert len(calls) == 3


async def test_a_live_stream_ends_once_its_key_is_revoked(
    world: World, service: ServiceContext
) -> None:
    """A dashboard's or kiosk screen's stream was let in once; it is checked again while open
    and ends with a `bye` once its key is revoked (or expires)."""
    from locker_service.api.deps import key_still_valid
    from locker_service.web.stream import event_stream

    async with service.sessionmaker() as session:
        key_id = (
            await session.scalars(
                select(Credential.id).where(Credential.key_hash == hash_token(world.kiosk_token))
            )
        ).one()

    async def allowed() -> bool:
        return await key_still_valid(service, key_id)

    events: list[str] = []
    with service.hub.subscription() as subscription:
        stream = event_stream(
            subscription, lambda _: True, heartbeat_s=0.05, still_allowed=allowed, recheck_s=0.05
        )
        async with asyncio.timeout(60):  # a bound for a broken build; the end is event-driven
            async for chunk in stream:
                events += [
                    line[7:] for line in chunk.decode().splitlines() if line.startswith("event: ")
                ]
                if events.count("hello") == 1 and "revoked" not in events:
                    events.append("revoked")
                    async with service.sessionmaker() as session, session.begin():
                        await session.execute(
                            update(Credential)
                            .where(Credential.id == key_id)
                            .values(revoked_at=utcnow())
                        )
    assert events[0] == "hello" and events[-1] == "bye"
