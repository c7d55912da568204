"""A PostgreSQL database of a test's own on the shared server: created with a unique name,
dropped afterwards (other test runs use the same server at the same time)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.databases import create_pg_database, drop_pg_database, migrated_pg_database


@contextmanager
def pg_database(migrated: bool = False) -> Iterator[str]:
    """Yields a `postgresql+asyncpg://` URL of a fresh database: empty (for a system that
    migrates it on start, as `lockerctl up` does), or `migrated` (a copy of the template)."""
    url = migrated_pg_database() if migrated else create_pg_database("locker_stack")
    try:
        yield url
    finally:
        drop_pg_database(url)
