"""Database engine and sessions: SQLite (WAL) by default, PostgreSQL through asyncpg.

Engines are made in `lifespan`, never at import. On SQLite every transaction starts with
`BEGIN IMMEDIATE`: SQLite's deferred transactions that read and then write can fail at once with
"database is locked" when two of them race, whereas an immediate one waits its turn (busy_timeout),
which is what compare-and-set needs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS = 30_000  # writers queue behind each other; 30 s covers any burst we make
# The database holds credential hashes, order contacts and audit trails: readable by the service's
# user only. SQLite gives its -wal and -shm files the database file's mode.
PRIVATE_FILE_MODE = 0o600
PRIVATE_UMASK = 0o077  # files and directories a process makes are its user's only


class _SQLiteConnection(sqlite3.Connection):
    """A SQLite connection that ends its transaction before it closes.

    `sqlite3.Connection.close()` leaves a connection that still has an unfinished statement
    (a cursor some frame still refers to, such as the traceback of a task cancelled mid-query)
    open as a zombie until that statement is finalised, and with it its transaction: with
    `BEGIN IMMEDIATE`, the database's one write lock, which every other writer then waits out
    for its whole busy timeout. The pool closes such a connection when a cancellation cuts a
    transaction short (a replica or worker stopped mid-handler); rolling back first releases
    the lock at once, whatever still refers to the cursor.
    """

    def close(self) -> None:
        if self.in_transaction:
            # On failure, closing anyway: the close still ends it once its statements are done.
            with contextlib.suppress(sqlite3.Error):
                self.rollback()
        super().close()


# SQLSTATEs of a database that is away rather than of a statement it refused: the connection
# exceptions (class 08), the server shutting down or starting up (57P01-57P03), and a standby not
# promoted yet answering a write (25006).
AWAY_SQLSTATES = ("08", "57P01", "57P02", "57P03", "25006")


def database_away(exc: BaseException) -> bool:
    """Narrower than `database_unreachable`, for handing a kiosk's message to the story again in
    its place (ADR 0085): a connection refused, cut or timed out, no pooled connection free in
    time, a server shutting down or starting up, a standby not promoted yet, SQLite's writer lock
    held past its busy timeout. Not a statement the database refused, nor one of the faults of
    ours that drivers report through the same classes (SQLite's "no such table", asyncpg's
    "another operation is in progress"): those would fail the same way again."""
    if isinstance(
        exc, (PoolTimeoutError, DisconnectionError, ConnectionError, TimeoutError, socket.gaierror)
    ):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(AWAY_SQLSTATES):
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


def database_unreachable(exc: BaseException) -> bool:
    """Broader than `database_away`, for telling an HTTP client to try again (503) rather than
    reporting a fault (500): the database away, or any error of the classes its absence comes
    through (any OSError, any OperationalError or InterfaceError). Nothing was stored, and a
    retry may succeed."""
    return database_away(exc) or isinstance(exc, (OSError, OperationalError, InterfaceError))


def make_private(path: Path) -> None:
    """Create `path` if missing, and make it readable and writable by this user only."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    os.close(fd)
    os.chmod(path, PRIVATE_FILE_MODE)  # one created before (by an older version) as well


def normalise_url(url: str) -> URL:
    """Accept plain `postgresql://` and `sqlite://` URLs and pick the async drivers."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed


def is_sqlite(url: str | URL) -> bool:
    return make_url(str(url) if isinstance(url, URL) else url).get_backend_name() == "sqlite"


def create_engine(
    database_url: str, *, idle_in_transaction_s: float = 0.0, **kwargs: Any
) -> AsyncEngine:
    """`idle_in_transaction_s` (PostgreSQL; 0: never): the server ends a session that has sat
    inside a transaction this long without a statement, so a frozen process frees its locks."""
    url = normalise_url(database_url)
    if url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        kwargs.setdefault("pool_pre_ping", True)
        if idle_in_transaction_s > 0:
            connect_args = dict(kwargs.get("connect_args", {}))
            connect_args["server_settings"] = {
                **connect_args.get("server_settings", {}),
                # In ms; 0 would mean never.
                "idle_in_transaction_session_timeout": str(
                    max(1, int(idle_in_transaction_s * 1000))
                ),
            }
            kwargs["connect_args"] = connect_args
        return create_async_engine(url, **kwargs)

    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        make_private(Path(url.database))
    kwargs.setdefault(
        "connect_args",
        {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "factory": _SQLiteConnection},
    )
    engine = create_async_engine(url, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so `_on_begin` decides how they start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL is durable across app crashes
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session whose transaction commits on success and rolls back on error (background work)."""
    async with sessionmaker() as session, session.begin():
        yield session


def rowcount(result: object) -> int:
    """Rows an UPDATE/DELETE matched (compare-and-set checks this is 1)."""
    count = getattr(result, "rowcount", None)
    if not isinstance(count, int):
        raise TypeError(f"{type(result).__name__} carries no row count")
    return count
