"""X-Forwarded-For is believed only from LOCKER_TRUSTED_PROXIES, with uvicorn as `lockerctl
serve` runs it: a throttled caller cannot get a fresh pickup bucket by naming another address."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from locker_service.admin import proxy_options
from locker_service.main import create_app
from migrations import upgrade
from tests.locker_service.conftest import make_settings
from tests.locker_service.world import seed
from tests.support.threaded_server import ThreadedServer

WRONG_CODE = {"code": "00000000"}


def _after_lockout(tmp_path: Path, trusted_proxies: str) -> list[int]:
    """Statuses of: the source's failures up to its lockout, then one try with another
    X-Forwarded-For address."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'locker.db'}"
    upgrade(url)
    settings = make_settings(url, trusted_proxies=trusted_proxies)
    app = create_app(settings)
    with ThreadedServer(app, **proxy_options(settings)) as server:
        world = server.run(seed(app.state.ctx.sessionmaker, settings))
        statuses = []
        with httpx.Client(base_url=server.url, headers=world.kiosk()) as client:
            for _ in range(settings.pickup_source_free_failures + 1):
                statuses.append(client.post("/api/v1/kiosk/pickup", json=WRONG_CODE).status_code)
            other = client.post(
                "/api/v1/kiosk/pickup",
                json=WRONG_CODE,
                headers={"X-Forwarded-For": "203.0.113.77"},
            )
            statuses.append(other.status_code)
    return statuses


def test_a_throttled_source_gets_no_fresh_bucket_from_a_forwarded_header(
    tmp_path: Path,
) -> None:
    statuses = _after_lockout(tmp_path, trusted_proxies="")
    assert statuses[:5] == [403] * 5  # wrong code, wrong code, ...
    assert statuses[5:] == [429, 429]  # made to wait, and still when naming another address


def test_a_configured_proxy_is_believed(tmp_path: Path) -> None:
    """The header works when the peer is a trusted proxy: without the setting it would too."""
    statuses = _after_lockout(tmp_path, trusted_proxies="127.0.0.1")
    assert statuses[5:] == [429, 403]  # the forwarded client is a caller of its own


@pytest.mark.parametrize("value", ["", " "])
def test_no_trusted_proxy_turns_proxy_headers_off(value: str) -> None:
    settings = make_settings("sqlite+aiosqlite://", trusted_proxies=value)
    assert proxy_options(settings) == {"proxy_headers": False}
