"""The dashboard's alert list in a real browser: human titles, counts and story-time durations,
and Acknowledge on screen at 1280x800 and 1024x768 however long the message.

The service runs as a process at LOCKER_TIME_SCALE=60; the alert is written into its database as
the story would leave it after a door opened 255 times with no command (raised five real
seconds ago: five minutes of the story).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from locker_service.db import create_engine, create_sessionmaker
from locker_service.models import Alert
from tests.screens.support import Seed, ServiceProcess, in_thread, seed_database

pytestmark = [pytest.mark.browser]

TIME_SCALE = 60
LOAD_TIMEOUT_MS = 10_000  # service -> browser on two busy cores
# A message no browser can break at a space: it must wrap inside its column, not push the button.
LONG_WORD = "compartment_3_lock_sensor_" * 8


def write_alert(database_url: str, site_id: int) -> None:
    async def write() -> None:
        engine = create_engine(database_url)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                raised = datetime.now(UTC) - timedelta(seconds=5)
                session.add(
                    Alert(
                        kind="door_opened_unexplained",
                        severity="critical",
                        message=f"Lobby compartment 3: door opened with no command {LONG_WORD}",
                        dedupe_key="door_unexplained:3",
                        site_id=site_id,
                        state="open",
                        raised_at=raised,
                        last_raised_at=raised,
                        count=255,
                    )
                )
        finally:
            await engine.dispose()

    in_thread(lambda: asyncio.run(write()))  # Playwright holds this thread's event loop


@pytest.fixture
def service_with_alert(tmp_path: Path) -> Iterator[tuple[ServiceProcess, Seed]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'locker.db'}"
    seed = seed_database(url)
    service = ServiceProcess(
        url, tmp_path, LOCKER_TIMERS_ENABLED="false", LOCKER_TIME_SCALE=str(TIME_SCALE)
    ).start()
    try:
        write_alert(url, seed.site_id)
        yield service, seed
    finally:
        service.stop()


@pytest.mark.parametrize("size", [(1280, 800), (1024, 768)], ids=["1280x800", "1024x768"])
def test_alert_list_shows_a_title_and_keeps_acknowledge_on_screen(
    browser: Any,
    service_with_alert: tuple[ServiceProcess, Seed],
    screenshots: Path,
    size: tuple[int, int],
) -> None:
    service, seed = service_with_alert
    width, height = size
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-GB")
    page = context.new_page()
    page.goto(f"{service.url}/dashboard#token={seed.operator_token}")
    item = page.locator("#alerts li").first
    expect(item).to_be_visible(timeout=LOAD_TIMEOUT_MS)
    title = item.locator(".alert-title")
    expect(title).to_have_text("Door opened without a command")
    facts = item.locator(".alert-facts").inner_text()
    assert "255 times" in facts
    minutes = re.search(r"for (\d+) min", facts)
    assert minutes, facts
    assert 5 <= int(minutes.group(1)) < 60, facts  # story time: 5 real s at 60x, not "0 min"

    ack = item.locator("button.alert-ack")
    ack.scroll_into_view_if_needed()
    expect(ack).to_be_visible()
    box = ack.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px"
    page.screenshot(path=screenshots / f"dashboard-alerts-{width}x{height}.png")

    ack.click()
    expect(item.locator(".alert-facts")).to_contain_text("acknowledged", timeout=LOAD_TIMEOUT_MS)
    expect(item.locator("button.alert-ack")).to_be_hidden()
    context.close()


def test_alert_titles_follow_a_chinese_browser(
    browser: Any, service_with_alert: tuple[ServiceProcess, Seed]
) -> None:
    service, seed = service_with_alert
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = context.new_page()
    page.goto(f"{service.url}/dashboard#token={seed.operator_token}")
    item = page.locator("#alerts li").first
    expect(item.locator(".alert-title")).to_have_text(
        "柜门在无指令时被打开", timeout=LOAD_TIMEOUT_MS
    )
    expect(item.locator(".alert-facts")).to_contain_text("255 次")
    expect(item.locator("button.alert-ack")).to_have_text("确认")
    context.close()


def test_a_locked_out_courier_is_lifted_from_his_alert(
    browser: Any, service_with_alert: tuple[ServiceProcess, Seed]
) -> None:
    """Wrong PINs lock a courier out; the operator reads who and where, calls him, and lifts
    the lockout from the alert with how she knows it is him."""
    service, seed = service_with_alert
    wrong = "9" * len(seed.courier_pin) if seed.courier_pin[0] != "9" else "1" * 6
    for _ in range(5):  # LOCKER_COURIER_FREE_FAILURES' default
        answer = service.api(
            "POST",
            "/api/v1/kiosk/dropoff",
            seed.kiosk_token,
            json={"courier_code": seed.courier_code, "pin": wrong, "order_ref": "R-1"},
        )
        assert answer.status_code == 403, answer.text
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
    page = context.new_page()
    page.goto(f"{service.url}/dashboard#token={seed.operator_token}")
    item = page.locator("#alerts li").filter(has_text="A courier is locked out")
    expect(item).to_contain_text(seed.courier_code, timeout=LOAD_TIMEOUT_MS)
    item.get_by_label("How you know it is him (required)").fill("called him, he is here")
    item.get_by_role("button", name="Lift the lockout").click()
    expect(item).to_have_count(0, timeout=LOAD_TIMEOUT_MS)  # resolved: off the list
    alerts = service.api("GET", "/api/v1/operator/alerts", seed.operator_token).json()
    [lifted] = [a for a in alerts if a["kind"] == "courier_locked_out"]
    assert lifted["state"] == "resolved"
    assert lifted["corrective_action"] == "lockout lifted: called him, he is here"
    context.close()
