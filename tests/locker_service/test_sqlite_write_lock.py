"""SQLite's one write lock is never kept by a connection the pool has let go.

Every SQLite transaction here is `BEGIN IMMEDIATE`, so a connection that keeps its transaction
after the pool closed it keeps every writer of every replica out for the whole busy timeout. A
cancellation that cuts a transaction short (a worker stopped mid-handler) makes the pool close
the connection while some frame may still refer to an unfinished cursor; `sqlite3` then leaves
the connection open, transaction and all, until that cursor is collected.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from locker_service.db import create_engine, create_sessionmaker, session_scope


def write_lock_free(path: Path) -> bool:
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc), exc
        return False
    finally:
        other.close()


async def make_table(path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    async with session_scope(create_sessionmaker(engine)) as session:
        await session.execute(text("CREATE TABLE meals (id INTEGER PRIMARY KEY, name TEXT)"))
        for n in range(10):
            await session.execute(text("INSERT INTO meals (name) VALUES (:n)"), {"n": f"m{n}"})
    await engine.dispose()


async def test_a_connection_closed_mid_statement_gives_the_write_lock_back(tmp_path: Path) -> None:
    path = tmp_path / "locker.db"
    await make_table(path)
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.connect() as conn:
            await conn.begin()  # BEGIN IMMEDIATE: the write lock
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            cursor = await driver.execute("SELECT name FROM meals")
            assert await cursor.fetchone() is not None  # the statement is left unfinished
            assert not write_lock_free(path)
            await conn.invalidate()  # what the pool does to a connection a cancellation cut
            # `cursor` is still referred to here, as a cancelled task's frames would.
            assert write_lock_free(path)
            del cursor
    finally:
        await engine.dispose()
