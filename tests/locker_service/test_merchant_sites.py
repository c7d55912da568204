"""Contracts between merchants and sites (ADR 0068): a merchant orders only into the sites it
is allowed; `lockerctl create-merchant --site` and `lockerctl allow-site` set them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import func, select
from typer.testing import CliRunner

from locker_service.cli import app
from locker_service.context import ServiceContext
from locker_service.db import create_engine, create_sessionmaker, session_scope
from locker_service.models import Order, Site, merchant_sites
from locker_service.sites import service as sites
from tests.locker_service.world import World


async def _orders(ctx: ServiceContext) -> int:
    async with ctx.sessionmaker() as session:
        return int(await session.scalar(select(func.count(Order.id))) or 0)


async def test_a_merchant_orders_only_into_its_sites(
    app_client: httpx.AsyncClient, world: World, service: ServiceContext
) -> None:
    async with service.sessionmaker() as session:
        other_code = await session.scalar(select(Site.code).where(Site.id == world.other_site_id))
    assert other_code is not None
    before = await _orders(service)
    refused = await app_client.post(
        "/api/v1/orders", json=world.order_body(site=other_code), headers=world.merchant()
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "site_not_allowed"
    assert other_code in refused.json()["message"]
    assert await _orders(service) == before  # nothing written

    async with session_scope(service.sessionmaker) as session:
        await sites.set_merchant_site(session, world.merchant_id, other_code, allowed=True)
    service.merchant_sites.forget(str(world.merchant_id))  # as the cache's few seconds run out
    allowed = await app_client.post(
        "/api/v1/orders", json=world.order_body(site=other_code), headers=world.merchant()
    )
    assert allowed.status_code == 201, allowed.text

    async with session_scope(service.sessionmaker) as session:
        await sites.set_merchant_site(session, world.merchant_id, other_code, allowed=False)
    service.merchant_sites.forget(str(world.merchant_id))
    again = await app_client.post(
        "/api/v1/orders", json=world.order_body(site=other_code), headers=world.merchant()
    )
    assert again.status_code == 403
    # The order placed while it was allowed goes on: the merchant still reads it.
    read = await app_client.get(f"/api/v1/orders/{allowed.json()['id']}", headers=world.merchant())
    assert read.status_code == 200


def _pairs(database_url: str) -> set[tuple[str, str]]:
    async def read() -> set[tuple[str, str]]:
        from locker_service.models import Merchant

        engine = create_engine(database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                rows = await session.execute(
                    select(Merchant.name, Site.code)
                    .join(merchant_sites, merchant_sites.c.merchant_id == Merchant.id)
                    .join(Site, Site.id == merchant_sites.c.site_id)
                )
                return {(name, code) for name, code in rows.all()}
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_lockerctl_sets_a_merchant_s_sites(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'locker.db'}"
    runner = CliRunner()
    for code in ("hq", "annex"):
        made = runner.invoke(
            app, ["create-site", "--code", code, "--name", code, "--database-url", url]
        )
        assert made.exit_code == 0, made.output
    made = runner.invoke(
        app, ["create-merchant", "--name", "Noodle Bar", "--site", "hq", "--database-url", url]
    )
    assert made.exit_code == 0, made.output
    assert "ordering into: hq" in made.output and "API key (shown once)" in made.output
    assert _pairs(url) == {("Noodle Bar", "hq")}
    merchant_id = made.output.split("(id ")[1].split(")")[0]
    allow = ["allow-site", "--merchant", merchant_id, "--site", "annex", "--database-url", url]
    assert runner.invoke(app, allow).exit_code == 0
    assert _pairs(url) == {("Noodle Bar", "hq"), ("Noodle Bar", "annex")}
    revoked = runner.invoke(app, [*allow[:4], "hq", "--revoke", "--database-url", url])
    assert revoked.exit_code == 0 and "may no longer order into hq" in revoked.output
    assert _pairs(url) == {("Noodle Bar", "annex")}
    unknown = runner.invoke(app, [*allow[:4], "nowhere", "--database-url", url])
    assert unknown.exit_code == 1
