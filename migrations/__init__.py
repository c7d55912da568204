"""Alembic migrations of the locker service, shipped inside the package.

The schema is made only by these migrations (tests too). `upgrade_async` runs them on an open
connection of the service's own engine, so SQLite gets the same pragmas as at run time; replicas
starting together on PostgreSQL serialise on an advisory lock.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
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


async def in_migration(database_url: str, work: Callable[[Connection], None]) -> None:
    """Run `work` (Alembic's) in one transaction on an engine of its own.

    SQLite alters a table by copying it and dropping the old one, and a drop deletes the old
    table's rows first: with foreign keys on, that runs the ON DELETE CASCADE of the tables
    pointing at it (a merchant's sites and keys would be emptied) or fails on those without.
    So on SQLite foreign keys are off for the migration (the pragma cannot change inside a
    transaction) and `PRAGMA foreign_key_check` must find nothing before it commits: SQLite's
    own procedure for rebuilding a table.
    """
    sqlite = is_sqlite(database_url)

    def checked(connection: Connection) -> None:
        work(connection)
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise RuntimeError(f"the migration left rows with no parent: {broken[:10]}")

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            if sqlite:
                raw = (await connection.get_raw_connection()).driver_connection
                await raw.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            async with connection.begin():
                await connection.run_sync(checked)
            if sqlite:
                await raw.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
    finally:
        await engine.dispose()


async def upgrade_async(
    database_url: str, revision: str = "head", *, secret_key: str | None = None
) -> None:
    """`secret_key` (the service's) lets a migration key hashes of data it rewrites (0004)."""
    config = alembic_config(database_url)
    config.attributes["secret_key"] = secret_key
    await in_migration(database_url, lambda c: _upgrade_on(c, config, revision))


def upgrade(database_url: str, revision: str = "head", *, secret_key: str | None = None) -> None:
    asyncio.run(upgrade_async(database_url, revision, secret_key=secret_key))


def downgrade(database_url: str, revision: str) -> None:
    """Go back to `revision` (the tests of a migration's way back)."""
    config = alembic_config(database_url)

    def back(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    asyncio.run(in_migration(database_url, back))
