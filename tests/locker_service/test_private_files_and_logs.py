"""The SQLite database is its user's only, and no log record carries a pickup token."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import httpx
import pytest

from locker_service import log_redaction
from locker_service.db import create_engine
from tests.locker_service.world import World, create_order, token_of


async def test_the_sqlite_file_and_its_wal_are_0600_even_if_made_0644_before(
    tmp_path: Path,
) -> None:
    old_mask = os.umask(0o022)
    try:
        path = tmp_path / "locker.db"
        path.write_bytes(b"")
        path.chmod(0o644)  # as an older version left it
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            async with engine.begin() as connection:
                await connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        finally:
            await engine.dispose()
        fresh = tmp_path / "sub" / "new.db"
        engine = create_engine(f"sqlite+aiosqlite:///{fresh}")
        async with engine.begin() as connection:
            await connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            # While a connection is open, SQLite keeps its -wal and -shm files beside it.
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in fresh.parent.iterdir()}
        await engine.dispose()
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert modes["new.db"] == 0o600
    assert all(mode == 0o600 for mode in modes.values()), modes


@pytest.mark.parametrize(
    ("line", "logged"),
    [
        ("GET /p/abcDEF_-123 HTTP/1.1", "GET /p/<redacted> HTTP/1.1"),
        ("/api/v1/p/abc?x=1", "/api/v1/p/<redacted>?x=1"),
        ("http://h/p/abc/qr.png", "http://h/p/<redacted>/qr.png"),
        ("/pickup/abc", "/pickup/abc"),
    ],
)
def test_redact(line: str, logged: str) -> None:
    assert log_redaction.redact(line) == logged


async def test_no_log_record_of_a_purchaser_request_holds_her_token(
    app_client: httpx.AsyncClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    token = token_of(await create_order(app_client, world))
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="uvicorn.access")  # whatever set it before
    await app_client.get(f"/api/v1/p/{token}")
    # uvicorn's access logger, called as uvicorn calls it: five arguments, the path third.
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/p/{token}", "1.1", 200
    )
    logging.getLogger("locker_service.anything").warning("looked at %s", f"/api/v1/p/{token}")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in text
    assert '"GET /p/<redacted> HTTP/1.1" 200' in text
