"""`lockerctl set-oncall`: an admin sets a site's on-call lists from the shell, checked like the
API checks them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from locker_service.cli import app
from locker_service.db import create_engine, create_sessionmaker
from locker_service.models import SiteOncall


def lists(database_url: str) -> list[tuple[str, str]]:
    async def read() -> list[tuple[str, str]]:
        engine = create_engine(database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                rows = (await session.scalars(select(SiteOncall))).all()
                return [(row.urls, row.escalation_urls) for row in rows]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_set_oncall_writes_checked_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'locker.db'}"
    monkeypatch.setenv("LOCKER_ONCALL_SCHEMES", "mailtos,jsons")
    runner = CliRunner()
    made = runner.invoke(
        app, ["create-site", "--code", "hq", "--name", "HQ", "--database-url", url]
    )
    assert made.exit_code == 0, made.output

    refused = runner.invoke(
        app,
        ["set-oncall", "--site", "hq", "--url", "jsons://127.0.0.1/hook", "--database-url", url],
    )
    assert refused.exit_code == 1
    assert "internal address" in refused.output
    refused = runner.invoke(
        app,
        ["set-oncall", "--site", "hq", "--url", "json://93.184.216.34/x", "--database-url", url],
    )
    assert refused.exit_code == 1 and "not accepted" in refused.output
    assert lists(url) == []

    done = runner.invoke(
        app,
        [
            "set-oncall", "--site", "hq",
            "--url", "mailtos://ops:pw@93.184.216.34?to=ops@example.com",
            "--escalation-url", "jsons://93.184.216.34/page",
            "--database-url", url,
        ],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "1 on-call URL(s), 1 escalation URL(s)" in done.output
    assert lists(url) == [
        ("mailtos://ops:pw@93.184.216.34?to=ops@example.com", "jsons://93.184.216.34/page")
    ]
    unknown = runner.invoke(app, ["set-oncall", "--site", "nope", "--database-url", url])
    assert unknown.exit_code == 1 and "no site nope" in unknown.output
