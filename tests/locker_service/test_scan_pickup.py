"""A scan at the kiosk's scanner is decided in one transaction with its event row: one commit
before the unlock leaves, and still exactly once per event id, throttled and frozen by the kill
switch like a typed code (8-digit codes from the scanner throttled like typed ones, QR tokens
never: docs/adr/0039)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select

from firmware_bridge import contract
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.kiosks.handler import StoryHandler
from locker_service.metrics import REGISTRY
from locker_service.models import DoorOpening, KioskEvent, Order, PickupAttempt
from locker_service.runtime import Runtime
from tests.locker_service.conftest import make_settings
from tests.locker_service.world import (
    FakeKiosk,
    World,
    make_ready,
    record_pickup_answers,
    token_of,
)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


def _scan(text: str) -> contract.Event:
    return contract.Event(event_id=uuid.uuid4().hex, type="scan", data={"text": text})


@pytest.fixture
def handler(runtime: Runtime) -> StoryHandler:
    return runtime.story


@pytest.fixture
def answers(service: ServiceContext) -> list[dict[str, object]]:
    return record_pickup_answers(service)


async def _count(service: ServiceContext, *where: Any, of: Any = PickupAttempt) -> int:
    async with service.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(of).where(*where)) or 0)


async def test_a_scan_commits_once_and_before_its_unlock(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    handler: StoryHandler,
) -> None:
    order, n = await make_ready(app_client, world, service)
    commits: list[int] = []
    for engine in {service.engine, service.attended_sessions.kw["bind"]}:  # its own on PostgreSQL
        sa_event.listen(engine.sync_engine, "commit", lambda _conn: commits.append(1))
    seen_at_unlock: dict[str, int] = {}
    answer = fake_kiosk.command

    async def command(*args: Any, **kwargs: Any) -> contract.Reply:
        if args[1] == "unlock":
            seen_at_unlock["commits"] = len(commits)
            seen_at_unlock["openings"] = await _count(
                service, DoorOpening.why == "pickup", of=DoorOpening
            )
        return await answer(*args, **kwargs)

    fake_kiosk.command = command  # type: ignore[method-assign]
    decisions = REGISTRY.get_sample_value("locker_scan_decision_seconds_count") or 0.0
    scan = _scan(token_of(order))
    await handler.on_event(world.kiosk_code, scan)
    assert fake_kiosk.unlocks()[-1] == n
    assert seen_at_unlock == {"commits": 1, "openings": 1}  # the event row, claim and opening
    assert REGISTRY.get_sample_value("locker_scan_decision_seconds_count") == decisions + 1
    async with service.sessionmaker() as session:
        stored = await session.get(Order, uuid.UUID(order["id"]))
        row = await session.scalar(select(KioskEvent).where(KioskEvent.event_id == scan.event_id))
    assert stored is not None and stored.code_used_at is not None
    assert row is not None and row.type == "scan"


async def test_a_redelivered_scan_opens_once(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    handler: StoryHandler,
    answers: list[dict[str, object]],
) -> None:
    order, n = await make_ready(app_client, world, service)
    scan = _scan(token_of(order))
    before = len(fake_kiosk.unlocks())
    await handler.on_event(world.kiosk_code, scan)
    await handler.on_event(world.kiosk_code, scan)  # MQTT at least once: the same event again
    assert fake_kiosk.unlocks()[before:] == [n]
    assert [a["ok"] for a in answers] == [True]  # the repeat is not even answered
    assert await _count(service, KioskEvent.event_id == scan.event_id, of=KioskEvent) == 1
    scanner = PickupAttempt.source == f"qr:{world.kiosk_code}"
    assert await _count(service, scanner) == 1


async def test_a_guessing_scanner_waits_but_a_qr_opens_at_once(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    handler: StoryHandler,
    answers: list[dict[str, object]],
) -> None:
    order, n = await make_ready(app_client, world, service)
    before = len(fake_kiosk.unlocks())
    free = service.settings.pickup_source_free_failures
    for i in range(free + 1):
        await handler.on_event(world.kiosk_code, _scan(f"{i:08d}"))  # wrong fallback codes
    # 8-digit codes from the scanner are guesses like typed ones: the next one waits...
    assert [a.get("error") for a in answers] == ["invalid_code"] * free + ["locked_out"]
    scanner = PickupAttempt.source == f"scanner:{world.kiosk_code}"
    assert await _count(service, scanner, PickupAttempt.ok.is_(False)) == free  # not the wait
    # ...but a QR token (256 bits) is checked, never throttled: her door opens at once.
    await handler.on_event(world.kiosk_code, _scan(token_of(order)))
    assert answers[-1]["ok"] is True
    assert fake_kiosk.unlocks()[before:] == [n]


async def test_a_frozen_site_opens_nothing_by_scan(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    handler: StoryHandler,
    answers: list[dict[str, object]],
) -> None:
    order, n = await make_ready(app_client, world, service)
    switch = f"/api/v1/operator/sites/{world.site_id}/kill-switch"
    engaged = await app_client.post(
        switch, json={"engaged": True, "reason": "mass opening seen"}, headers=world.operator()
    )
    assert engaged.status_code == 200
    before = len(fake_kiosk.unlocks())
    await handler.on_event(world.kiosk_code, _scan(token_of(order)))
    assert [a.get("error") for a in answers] == ["kill_switch_engaged"]
    assert fake_kiosk.unlocks()[before:] == []
    await app_client.post(
        switch, json={"engaged": False, "reason": "all clear"}, headers=world.operator()
    )
    await handler.on_event(world.kiosk_code, _scan(token_of(order)))
    assert [a.get("ok") for a in answers] == [False, True]
    assert fake_kiosk.unlocks()[before:] == [n]
