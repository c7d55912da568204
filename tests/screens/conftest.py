"""Fixtures of the screen tests: headless Debian Chromium, axe-core, a seeded service process."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable
from tests.screens.support import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    Seed,
    ServiceProcess,
    seed_database,
    wait_until,
)
from tests.support.mosquitto import MosquittoProcess
from tests.support.scripted_kiosk import ScriptedKiosk


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that drives a browser is `browser` and `slow`, whatever its module says: the
    everyday selection (`-m "not slow"`, README) leaves out the screens, each a browser and
    most a service process of their own."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)


EXPECT_TIMEOUT_MS = 30_000
AXE_VERSION = "4.11.4"  # pinned: a new axe release may add rules and fail a page overnight
AXE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smart-food-locker"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for one test module. Not per session: Playwright's sync API keeps an
    event loop running in the main thread while it is open, which later asyncio tests (here and
    in other packages) cannot share."""
    if not os.path.exists(CHROMIUM):
        unavailable("Debian chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    # Playwright's assertions wait 5 s by default: a budget the two busy cores of CI missed
    # (Swagger UI drew its operations later than that beside other work). Here it only guards
    # against a hang; every assertion passes as soon as the page shows what it waits for.
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's browser script, fetched once from the npm registry into a user cache."""
    target = AXE_CACHE / f"axe-core-{AXE_VERSION}" / "axe.min.js"
    if not target.exists():
        npm = shutil.which("npm")
        if npm is None:
            unavailable("npm is needed once to fetch axe-core")
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(
                [str(npm), "pack", f"axe-core@{AXE_VERSION}", "--pack-destination", tmp],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if done.returncode != 0:
                unavailable(f"npm pack axe-core failed: {done.stderr.strip()[-300:]}")
            with tarfile.open(Path(tmp) / f"axe-core-{AXE_VERSION}.tgz") as archive:
                member = archive.extractfile("package/axe.min.js")
                assert member is not None
                target.parent.mkdir(parents=True, exist_ok=True)
                # Written aside and renamed: parallel workers may fetch it at the same time, and
                # none may read a half-written file.
                partial = target.with_name(f"{target.name}.{os.getpid()}.part")
                partial.write_bytes(member.read())
                partial.replace(target)
    return target.read_text()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def seeded_service(tmp_path: Path) -> Iterator[tuple[ServiceProcess, Seed]]:
    """The service on SQLite with seed data, kiosk link off (pages and REST only)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'locker.db'}"
    seed = seed_database(url)
    service = ServiceProcess(url, tmp_path, LOCKER_TIMERS_ENABLED="false").start()
    try:
        yield service, seed
    finally:
        service.stop()


@pytest.fixture
def live_service(
    tmp_path: Path, private_mosquitto: MosquittoProcess
) -> Iterator[tuple[ServiceProcess, Seed, ScriptedKiosk]]:
    """The service with its kiosk link on a private broker, and a scripted kiosk online."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'locker.db'}"
    seed = seed_database(url, compartments=6, kiosk_code=f"k-{uuid.uuid4().hex[:8]}")
    service = ServiceProcess(
        url,
        tmp_path,
        LOCKER_KIOSK_LINK_ENABLED="true",
        LOCKER_MQTT_URL=private_mosquitto.url,
    ).start()
    kiosk = ScriptedKiosk(
        private_mosquitto.host, private_mosquitto.port, seed.kiosk_code, compartments=6
    ).start()
    try:
        wait_until(
            lambda: service.api(
                "GET", f"/api/v1/operator/kiosks/{seed.kiosk_id}", seed.operator_token
            ).json()["online"],
            what="the kiosk to be seen online",
        )
        yield service, seed, kiosk
    finally:
        kiosk.stop()
        service.stop()
