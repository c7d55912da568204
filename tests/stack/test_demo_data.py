"""Demo data of `lockerctl up` on a migrated database (SQLite and PostgreSQL): made once with
credentials that really authenticate, found again on the next run, grown when more kiosks are
asked for, and refused when the credentials file and the database do not belong together."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from locker_service import security
from locker_service.db import create_engine, create_sessionmaker
from locker_service.models import (
    Compartment,
    Courier,
    Credential,
    Kiosk,
    Merchant,
    Operator,
    Site,
)
from locker_service.stack.demo import (
    DEMO_FILE,
    DemoCredentials,
    DemoDataError,
    KioskCredentials,
    compartment_sizes,
    describe_demo_order,
    ensure_demo_data,
)
from tests.stack.pgdb import pg_database
from tests.support.databases import migrated_sqlite_database

SECRET = "s" * 48


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield migrated_sqlite_database(tmp_path / "locker.db")
    else:
        with pg_database(migrated=True) as url:
            yield url


async def _rows(url: str) -> dict[str, object]:
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as s:
            kiosks = (await s.scalars(select(Kiosk).order_by(Kiosk.code))).all()
            operator = (await s.scalars(select(Operator))).one()

            async def key_of(owner: Any, owner_id: int) -> str:
                return (await s.scalars(select(Credential.key_hash).where(owner == owner_id))).one()

            sizes = {
                k.code: [
                    c.size
                    for c in (
                        await s.scalars(
                            select(Compartment)
                            .where(Compartment.kiosk_id == k.id)
                            .order_by(Compartment.number)
                        )
                    ).all()
                ]
                for k in kiosks
            }
            return {
                "sites": await s.scalar(select(func.count()).select_from(Site)),
                "kiosks": {k.code: await key_of(Credential.kiosk_id, k.id) for k in kiosks},
                "sizes": sizes,
                "merchant": await key_of(
                    Credential.merchant_id, (await s.scalars(select(Merchant))).one().id
                ),
                "courier": (await s.scalars(select(Courier))).one(),
                "operator": operator,
                "operator_key": await key_of(Credential.operator_id, operator.id),
            }
    finally:
        await engine.dispose()


def test_first_run_creates_credentials_that_match_the_stored_hashes(
    tmp_path: Path, database_url: str
) -> None:
    creds = asyncio.run(ensure_demo_data(tmp_path, database_url, SECRET, compartments=12))
    assert creds.created_now
    rows = asyncio.run(_rows(database_url))
    assert rows["sites"] == 1
    assert rows["kiosks"] == {"demo-1": security.hash_token(creds.kiosks[0].token)}
    assert rows["sizes"] == {"demo-1": ["S"] * 3 + ["M"] * 6 + ["L"] * 3}
    assert rows["merchant"] == security.hash_token(creds.merchant_api_key)
    courier = rows["courier"]
    assert isinstance(courier, Courier)
    assert courier.pin_hash == security.hash_pin(SECRET, creds.courier_code, creds.courier_pin)
    operator = rows["operator"]
    assert isinstance(operator, Operator)
    assert rows["operator_key"] == security.hash_token(creds.operator_token)
    # Plain credentials only in the private file.
    mode = stat.S_IMODE((tmp_path / DEMO_FILE).stat().st_mode)
    assert mode == 0o600
    assert SECRET not in (tmp_path / DEMO_FILE).read_text()


def test_second_run_finds_the_same_credentials_and_adds_nothing(
    tmp_path: Path, database_url: str
) -> None:
    first = asyncio.run(ensure_demo_data(tmp_path, database_url, SECRET))
    again = asyncio.run(ensure_demo_data(tmp_path, database_url, SECRET))
    assert not again.created_now
    assert again == first
    assert len(asyncio.run(_rows(database_url))["kiosks"]) == 1  # type: ignore[arg-type]


def test_asking_for_more_kiosks_later_adds_them(tmp_path: Path, database_url: str) -> None:
    first = asyncio.run(ensure_demo_data(tmp_path, database_url, SECRET, kiosks=1))
    grown = asyncio.run(ensure_demo_data(tmp_path, database_url, SECRET, kiosks=2, compartments=8))
    assert grown.kiosks[0] == first.kiosks[0]
    assert [k.code for k in grown.kiosks] == ["demo-1", "demo-2"]
    rows = asyncio.run(_rows(database_url))
    assert rows["sizes"]["demo-2"] == ["S", "S", "M", "M", "M", "M", "L", "L"]  # type: ignore[index]
    assert DemoCredentials.from_json((tmp_path / DEMO_FILE).read_text()) == grown


def test_refuses_a_database_that_has_demo_data_without_its_credentials(
    tmp_path: Path, database_url: str
) -> None:
    asyncio.run(ensure_demo_data(tmp_path / "one", database_url, SECRET))
    with pytest.raises(DemoDataError, match="is missing, so its credentials are unknown"):
        asyncio.run(ensure_demo_data(tmp_path / "two", database_url, SECRET))


def test_refuses_credentials_of_another_database(tmp_path: Path) -> None:
    url_a = migrated_sqlite_database(tmp_path / "a.db")
    url_b = migrated_sqlite_database(tmp_path / "b.db")
    asyncio.run(ensure_demo_data(tmp_path, url_a, SECRET))
    with pytest.raises(DemoDataError, match="use another --data-dir"):
        asyncio.run(ensure_demo_data(tmp_path, url_b, SECRET))


@pytest.mark.parametrize(("count", "small", "large"), [(1, 0, 0), (4, 1, 1), (48, 12, 12)])
def test_compartment_layout(count: int, small: int, large: int) -> None:
    sizes = compartment_sizes(count)
    assert len(sizes) == count
    assert sizes.count("S") == small and sizes.count("L") == large
    assert sizes == sorted(sizes, key="SML".index)


def test_demo_order_instructions_give_working_links() -> None:
    creds = DemoCredentials(
        database="sqlite",
        site_code="demo",
        kiosks=[KioskCredentials(code="demo-1", token="kt_secret")],
        merchant_api_key="mk",
        courier_code="courier-1",
        courier_pin="123456",
        operator_token="ot",
    )
    order = {"id": "o-1", "state": "created", "external_ref": "R1", "purchaser_url": "/p/te_x"}
    text = describe_demo_order("http://127.0.0.1:8000/", order, creds)
    assert "http://127.0.0.1:8000/kiosk#token=kt_secret" in text  # the screen signs itself in
    assert "http://127.0.0.1:8000/p/te_x" in text
    assert "courier courier-1, PIN 123456, order reference R1" in text
