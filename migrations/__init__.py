"""Alembic migrations of the locker service, shipped inside the package.

The schema is made only by these migrations (tests too). `upgrade_async` runs them on an open
connection of the service's own engine, so SQLite gets the same pragmas as at run time; replicas
starting together on PostgreSQL serialise on an advisory lock.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from locker_service.db import create_engine, is_sqlite

MIGRATIONS_DIR = Path(__file__).resolve().parent
MIGRATION_LOCK_ID = 0x10C6E8  # arbitrary, fixed: the advisory lock all replicas agree on
# The day partitions of temperature_readings (PostgreSQL, 0006) come and go at run time; the
# models know only their parent, so comparisons of schema and models leave them out.
_READING_PARTITION = re.compile(r"^temperature_readings_(p\d{8}|default)$")


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's `include_name` hook: everything but the readings' partitions."""
    return not (type_ == "table" and name is not None and _READING_PARTITION.match(name))


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def _upgrade_on(connection: Connection, config: Config, revision: str) -> None:
    if not is_sqlite(str(connection.engine.url)):
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade_async(
    database_url: str, revision: str = "head", *, secret_key: str | None = None
) -> None:
    """`secret_key` (the service's) lets a migration key hashes of data it rewrites (0004)."""
    config = alembic_config(database_url)
    config.attributes["secret_key"] = secret_key
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_on, config, revision)
    finally:
        await engine.dispose()


def upgrade(database_url: str, revision: str = "head", *, secret_key: str | None = None) -> None:
    asyncio.run(upgrade_async(database_url, revision, secret_key=secret_key))
