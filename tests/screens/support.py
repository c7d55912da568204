"""What the screen tests run: the service as a real process, seed data, browser helpers.

The service runs as `uvicorn` on a free port with its own SQLite file (and, when a test needs
live kiosk data, a private Mosquitto), exactly as a user starts it. Seed data (a site, a kiosk
with compartments, an operator, a merchant, a courier) is written once, before the service
starts, with the service's own models and credential hashing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.support.mosquitto import free_port
from tests.support.threaded_server import serve_in_background

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "screens"
SECRET_KEY = "screens-test-secret-" + "s" * 32
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVICE_START_TIMEOUT_S = 60.0  # migrations and imports on two shared, busy cores


@dataclass
class Seed:
    site_id: int
    site_name: str
    kiosk_id: int
    kiosk_code: str
    kiosk_token: str
    operator_token: str
    merchant_key: str
    courier_code: str
    courier_pin: str
    compartments: int


def wait_until(check: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
    """Poll `check` until it returns something true; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def in_thread(function: Callable[[], T]) -> T:
    """Run `function` in a thread of its own: Playwright's sync API keeps an event loop
    running in the test's thread, so `asyncio.run` cannot be called there."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function).result()


def seed_database(database_url: str, compartments: int = 6, kiosk_code: str | None = None) -> Seed:
    """Make the database (a copy of the migrated template, or migrated if it is not a new SQLite
    file) and write one site, kiosk, operator, merchant and courier."""
    return in_thread(lambda: _seed(database_url, compartments, kiosk_code))


def _seed(database_url: str, compartments: int, kiosk_code: str | None) -> Seed:
    from sqlalchemy import insert
    from sqlalchemy.engine import make_url

    from locker_service.credentials import store as keys
    from locker_service.db import create_engine, create_sessionmaker
    from locker_service.models import (
        Compartment,
        Courier,
        Kiosk,
        Merchant,
        Operator,
        Site,
        merchant_sites,
    )
    from locker_service.security import hash_pin, new_token
    from migrations import upgrade
    from tests.support.databases import migrated_sqlite_database

    sqlite_path = make_url(database_url).database if database_url.startswith("sqlite") else None
    if sqlite_path and not Path(sqlite_path).exists():
        migrated_sqlite_database(Path(sqlite_path))
    else:
        upgrade(database_url)
    suffix = uuid.uuid4().hex[:8]
    kiosk_code = kiosk_code or f"k-{suffix}"
    kiosk_token = new_token("kt")
    operator_token = new_token("ot")
    merchant_key = new_token("mk")
    courier_code, courier_pin = f"C{suffix[:4].upper()}", "246810"

    async def write() -> Seed:
        engine = create_engine(database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                site = Site(code=f"site-{suffix}", name="Harbour Tower", timezone="UTC")
                session.add(site)
                await session.flush()
                kiosk = Kiosk(
                    site_id=site.id,
                    code=kiosk_code,
                    name="Lobby A",
                )
                session.add(kiosk)
                await session.flush()
                session.add(keys.row_for(keys.Owner("kiosk", kiosk.id), kiosk_token))
                for n in range(1, compartments + 1):
                    size = "S" if n % 3 == 1 else "M" if n % 3 == 2 else "L"
                    session.add(Compartment(kiosk_id=kiosk.id, number=n, size=size, heated=True))
                admin = Operator(name="Olga", role="admin")
                merchant = Merchant(name="Noodle Bar")
                session.add_all([admin, merchant])
                await session.flush()
                session.add(keys.row_for(keys.Owner("operator", admin.id), operator_token))
                session.add(keys.row_for(keys.Owner("merchant", merchant.id), merchant_key))
                await session.execute(
                    insert(merchant_sites).values(merchant_id=merchant.id, site_id=kiosk.site_id)
                )
                session.add(
                    Courier(
                        code=courier_code,
                        name="Carl",
                        pin_hash=hash_pin(SECRET_KEY, courier_code, courier_pin),
                    )
                )
                await session.commit()
                return Seed(
                    site_id=site.id,
                    site_name=site.name,
                    kiosk_id=kiosk.id,
                    kiosk_code=kiosk_code,
                    kiosk_token=kiosk_token,
                    operator_token=operator_token,
                    merchant_key=merchant_key,
                    courier_code=courier_code,
                    courier_pin=courier_pin,
                    compartments=compartments,
                )
        finally:
            await engine.dispose()

    return asyncio.run(write())


class ServiceProcess:
    """`uvicorn locker_service.main:create_app --factory` on a free port, settings by env."""

    def __init__(self, database_url: str, workdir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "service.log"
        self.env = {
            **os.environ,
            "LOCKER_ENVIRONMENT": "test",
            "LOCKER_DATABASE_URL": database_url,
            "LOCKER_SECRET_KEY": SECRET_KEY,
            "LOCKER_PUBLIC_BASE_URL": self.url,
            "LOCKER_MIGRATE_ON_START": "true",
            "LOCKER_KIOSK_LINK_ENABLED": "false",
            # The purchaser's phone is a json:// webhook on this machine: allowed explicitly.
            "LOCKER_NOTIFY_CONTACT_SCHEMES": "json",
            "LOCKER_NOTIFY_CONTACT_ALLOWED_NETWORKS": "127.0.0.0/8",
            **env,
        }
        self.workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "locker_service.main:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                # Open live streams would otherwise hold a stopping service up until killed.
                "--timeout-graceful-shutdown",
                "2",
            ],
            env=self.env,
            cwd=REPO_ROOT,  # run from the checkout, as a developer does
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"service exited at start:\n{self.log}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"service did not answer /healthz in time:\n{self.log}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def api(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.request(method, self.url + path, headers=headers, timeout=30.0, **kwargs)


def serious_accessibility_violations(page: Any, axe_source: str) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now shown."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=axe_source)
    violations: list[dict[str, Any]] = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]


def press(page: Any, target: Any) -> None:
    """Press the mouse on the middle of `target` and hold it (release with page.mouse.up()), as
    a hand does that is still on the button when the page changes."""
    box = target.bounding_box()
    assert box is not None, "nothing to press on"
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()


def visible_button_sizes(page: Any, selector: str) -> list[tuple[str, float, float]]:
    """(text, width, height) of every visible button under `selector`, in CSS pixels."""
    sizes: list[tuple[str, float, float]] = page.eval_on_selector_all(
        f"{selector} button",
        """els => els.filter(e => e.offsetParent !== null).map(e => {
            const r = e.getBoundingClientRect();
            return [e.textContent.trim(), r.width, r.height];
        })""",
    )
    return sizes


class ManagedProcess:
    """A child process of the test with its output in a log file; stopped with SIGTERM."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = {**os.environ, **env}
        self.log_path = log_dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.argv, env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_http(self, url: str, timeout_s: float = SERVICE_START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log[-3000:]}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer {url}:\n{self.log[-3000:]}")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


class WebhookInbox:
    """A local HTTP receiver standing in for the purchaser's phone: Apprise `json://` posts."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        inbox = self
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                payload = json.loads(self.rfile.read(length) or b"{}")
                with inbox._lock:
                    inbox.messages.append(payload)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"json://127.0.0.1:{self.port}/purchaser"
        serve_in_background(self._server)

    def wait_for(self, needle: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                for message in self.messages:
                    if needle in str(message.get("message", "")):
                        return message
            time.sleep(0.2)
        raise AssertionError(f"no message containing {needle!r}; got {self.messages!r}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def add_site_with_operator(database_url: str, role: str = "operator") -> tuple[int, str]:
    """A second site and an operator scoped to it alone; returns (site id, operator token)."""
    from locker_service.credentials import store as keys
    from locker_service.db import create_engine, create_sessionmaker
    from locker_service.models import Operator, Site, operator_sites
    from locker_service.security import new_token

    token = new_token("ot")

    async def write() -> int:
        engine = create_engine(database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                site = Site(code=f"site-{uuid.uuid4().hex[:8]}", name="River Court")
                operator = Operator(name="Sam", role=role)
                session.add_all([site, operator])
                await session.flush()
                session.add(keys.row_for(keys.Owner("operator", operator.id), token))
                await session.execute(
                    operator_sites.insert().values(operator_id=operator.id, site_id=site.id)
                )
                await session.commit()
                return site.id
        finally:
            await engine.dispose()

    return in_thread(lambda: asyncio.run(write())), token
