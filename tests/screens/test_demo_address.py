"""The demo panel's `sim=` address: only an http(s) origin with a host and a port reaches the
page's CSP header; anything else is a 400 page, never a 500 or an extra CSP directive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from locker_service.main import create_app
from locker_service.web.pages import simulator_origin
from tests.locker_service.conftest import make_settings


@pytest.mark.parametrize(
    ("sim", "origin"),
    [
        ("http://127.0.0.1:8001", "http://127.0.0.1:8001"),
        ("https://sim.example.com:443/", "https://sim.example.com:443"),
        ("http://[::1]:8001", "http://[::1]:8001"),
        ("http://127.0.0.1", None),  # no port
        ("ftp://127.0.0.1:21", None),
        ("http://127.0.0.1:8001; script-src *", None),
        ("http://127.0.0.1:8001/;script-src", None),
        ("http://a b:8001", None),
        ("http://x'y:8001", None),
        ("http://user@127.0.0.1:8001", None),
        ("http://127.0.0.1:99999", None),
        ("http://127.0.0.1:80x", None),
        ("http://ünïcode.example:8001", None),
        ("http://例え.jp:8001", None),
        ("http://127.0.0.1:8001?x=1", None),
        ("", None),
    ],
)
def test_simulator_origin(sim: str, origin: str | None) -> None:
    assert simulator_origin(sim) == origin


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://locker.test") as client:
        yield client


@pytest.mark.parametrize(
    "sim",
    ["http://127.0.0.1:8001 'unsafe-eval'; script-src *", "http://ü.example:8001", "javascript:1"],
)
async def test_a_bad_address_is_a_400_page_and_the_csp_is_the_plain_one(
    client: httpx.AsyncClient, sim: str
) -> None:
    answer = await client.get("/demo", params={"sim": sim})
    assert answer.status_code == 400
    csp = answer.headers["content-security-policy"]
    assert "connect-src 'self';" in csp
    assert "unsafe-eval" not in csp and "script-src *" not in csp


async def test_a_good_address_is_the_only_extra_source(client: httpx.AsyncClient) -> None:
    answer = await client.get("/demo", params={"sim": "http://127.0.0.1:8011"})
    assert answer.status_code == 200
    assert "connect-src 'self' http://127.0.0.1:8011;" in answer.headers["content-security-policy"]
