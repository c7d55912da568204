"""`lockerctl serve` in a process of its own on a seeded SQLite database, with no kiosk link: what
a merchant's platform talks to (the integrators' guide, webhooks across a SIGKILL)."""

from __future__ import annotations

import os
from pathlib import Path

from locker_service.db import create_engine, create_sessionmaker
from tests.locker_service.conftest import make_settings
from tests.locker_service.test_sigkill import ServiceProcess
from tests.locker_service.world import World, seed
from tests.support.databases import migrated_database
from tests.support.mosquitto import free_port


async def merchant_service(tmp_path: Path, **env: str) -> tuple[ServiceProcess, World]:
    """The service (not started yet) and its seeded world; webhooks may reach this machine.
    `env`: more LOCKER_* settings."""
    database_url = migrated_database("sqlite", tmp_path)
    settings = make_settings(database_url)
    engine = create_engine(database_url)
    world = await seed(create_sessionmaker(engine), settings)
    await engine.dispose()
    port = free_port()
    values = {
        **os.environ,
        "LOCKER_ENVIRONMENT": "test",
        "LOCKER_DATABASE_URL": database_url,
        "LOCKER_SECRET_KEY": settings.secret_key,
        "LOCKER_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "LOCKER_KIOSK_LINK_ENABLED": "false",
        "LOCKER_NOTIFY_ENABLED": "true",
        "LOCKER_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
        "LOCKER_WEBHOOK_POLL_S": "0.2",
        **env,
    }
    return ServiceProcess(values, port, tmp_path / "service.log"), world
