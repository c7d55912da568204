"""Test databases from a migrated template: `alembic upgrade head` runs once per test process
(per xdist worker), and each test gets a copy.

PostgreSQL: one template database per process, migrated on first use; each test's database is
`CREATE DATABASE x TEMPLATE tpl` (a copy in the server instead of ~1 s of migrations). A CREATE
or DROP DATABASE still waits 0.3-0.8 s on a busy server's disk, so the next test's copy is made
and the last test's dropped in background threads, off the tests' path. SQLite: one migrated
file per process, copied. Every name carries a random part,
because other test runs (other worktrees, other workers) share the server at the same time; the
templates are dropped when the process's test session ends (`drop_templates`).

The migrations themselves stay tested: the template is made by them, and
tests/locker_service/test_schema.py runs `alembic upgrade head` on an empty database of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from migrations import upgrade
from tests.conftest import PG_ADMIN_URL, unavailable

# PostgreSQL refuses a CREATE DATABASE from a template someone is connected to; the template is
# only ever connected to while it is migrated, before any copy is made.
_lock = threading.Lock()
_pg_template: str | None = None
_sqlite_template: Path | None = None
_sqlite_dir: Path | None = None
# Copies for the next tests and drops of finished ones, off the tests' path. The server runs a few
# of them at once faster than one after another (measured: 4 creates in 1.3 s at once, 2.2 s in
# a row), so two copies are kept ahead, and drops have a thread of their own.
SPARES = 2
_creating = ThreadPoolExecutor(max_workers=SPARES, thread_name_prefix="test-database-copies")
_dropping = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-database-drops")
_spares: list[Future[str]] = []
log = logging.getLogger(__name__)


async def _pg_admin_async(statement: str) -> None:
    url = make_url(PG_ADMIN_URL)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
        timeout=5,
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def pg_admin(statement: str) -> None:
    """Run one statement on the admin database (callable inside a running event loop too)."""
    _in_thread(lambda: asyncio.run(_pg_admin_async(statement)))


def pg_url(name: str) -> str:
    """The `postgresql+asyncpg://` URL of database `name` on the test server."""
    return (
        make_url(PG_ADMIN_URL)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )


def _unique(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"


def create_pg_database(prefix: str = "locker", template: str | None = None) -> str:
    """A new database with a unique name (a copy of `template`, else empty); returns its URL."""
    name = _unique(prefix)
    statement = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    try:
        pg_admin(statement)
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN_URL} is not usable: {exc}")
    return pg_url(name)


def drop_pg_database(database_url: str) -> None:
    """Drop it in the background: a DROP DATABASE waits on the server's disk (0.3-0.8 s on a busy
    machine), and nothing after a test's end needs it gone; `drop_templates` waits for it."""
    name = make_url(database_url).database
    _dropping.submit(_drop_quietly, str(name))


def _drop_quietly(name: str) -> None:
    try:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except (OSError, asyncpg.PostgresError) as exc:  # a leftover is harmless: names are unique
        log.warning("could not drop test database %s: %s", name, exc)


def _pg_template_name() -> str:
    global _pg_template
    with _lock:
        if _pg_template is None:
            url = create_pg_database("locker_tpl")
            try:
                _in_thread(lambda: upgrade(url))
            except BaseException:
                drop_pg_database(url)
                raise
            _pg_template = str(make_url(url).database)
        return _pg_template


def migrated_pg_database() -> str:
    """A migrated, empty PostgreSQL database of the caller's own; drop it with
    `drop_pg_database`.

    A CREATE DATABASE, even from a template, waits on the server's disk; so the next test's copy
    is made in the background while this test runs, and taken here when it is ready."""
    template = _pg_template_name()
    with _lock:
        spare = _spares.pop(0) if _spares else None
        while len(_spares) < SPARES:
            _spares.append(_creating.submit(_copy_of, template))
    if spare is not None:
        try:
            return spare.result()
        except Exception:  # made in the background: the error is raised again below, clearly
            pass
    return create_pg_database("locker", template=template)


def _copy_of(template: str) -> str:
    name = _unique("locker")
    pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return pg_url(name)


def _sqlite_template_path() -> Path:
    global _sqlite_template, _sqlite_dir
    with _lock:
        if _sqlite_template is None:
            _sqlite_dir = Path(tempfile.mkdtemp(prefix="locker-sqlite-template-"))
            path = _sqlite_dir / "template.db"
            _in_thread(lambda: upgrade(f"sqlite+aiosqlite:///{path}"))
            # The engine is disposed after migrating, so the WAL is checkpointed into the file;
            # a copy of the one file is then the whole database.
            assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
            _sqlite_template = path
        return _sqlite_template


def migrated_sqlite_database(path: Path) -> str:
    """Copy the migrated template to `path`; returns its `sqlite+aiosqlite://` URL."""
    shutil.copyfile(_sqlite_template_path(), path)
    return f"sqlite+aiosqlite:///{path}"


def migrated_database(backend: str, directory: Path) -> str:
    """A migrated, empty database on `backend` ("sqlite" in `directory`, or "postgres")."""
    if backend == "sqlite":
        return migrated_sqlite_database(directory / "locker.db")
    return migrated_pg_database()


def drop_templates() -> None:
    """Drop this process's templates (end of its test session)."""
    global _pg_template, _sqlite_template, _sqlite_dir
    with _lock:
        for spare in _spares:
            with contextlib.suppress(Exception):
                drop_pg_database(spare.result())
        _spares.clear()
        _dropping.submit(lambda: None).result()  # every drop asked for so far is done
        if _pg_template is not None:
            pg_admin(f'DROP DATABASE IF EXISTS "{_pg_template}" WITH (FORCE)')
            _pg_template = None
        if _sqlite_dir is not None:
            shutil.rmtree(_sqlite_dir, ignore_errors=True)
            _sqlite_dir = _sqlite_template = None


def _in_thread(function: Callable[[], None]) -> None:
    """Run a function that calls `asyncio.run` in a thread of its own, so that callers inside a
    running event loop (async fixtures, Playwright's sync API) can use it too."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            function()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
