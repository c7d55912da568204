"""The dashboard's HACCP page in a real browser: yesterday's sealed day of the site is listed
with its chain intact, and downloads as a PDF and a CSV that hold its readings."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from pypdf import PdfReader

from locker_service.haccp.record import check_chain, parse_export
from tests.screens.support import Seed, ServiceProcess, in_thread, serious_accessibility_violations
from tests.support.scripted_kiosk import ScriptedKiosk

pytestmark = [pytest.mark.browser]


def _yesterday_sealed(database_url: str, seed: Seed) -> str:
    """Yesterday's readings of compartment 2 (the site is on UTC), then its day sealed as
    the service would an hour after midnight."""
    from locker_service.db import create_engine, create_sessionmaker
    from locker_service.haccp.service import seal_due
    from locker_service.models import utcnow
    from locker_service.telemetry.repository import insert_readings
    from locker_service.telemetry.rollups import ReadingRow
    from tests.locker_service.conftest import make_settings

    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    noon = today - timedelta(hours=12)
    rows = [
        ReadingRow(seed.kiosk_id, 2, noon + timedelta(seconds=20 * i), 64.0 + i / 10, 65.0, True)
        for i in range(9)
    ]

    async def run() -> None:
        engine = create_engine(database_url)
        try:
            await insert_readings(engine, rows)
            settings = make_settings(database_url)
            await seal_due(create_sessionmaker(engine), settings, today + timedelta(hours=2))
        finally:
            await engine.dispose()

    in_thread(lambda: asyncio.run(run()))
    return (today - timedelta(days=1)).date().isoformat()


def test_a_sealed_day_is_listed_and_downloads_as_pdf_and_csv(
    browser: Any,
    live_service: tuple[ServiceProcess, Seed, ScriptedKiosk],
    axe_source: str,
    screenshots: Path,
) -> None:
    service, seed, _ = live_service
    database_url = service.env["LOCKER_DATABASE_URL"]
    day = _yesterday_sealed(database_url, seed)

    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, accept_downloads=True, bypass_csp=True
    )
    page = context.new_page()
    page.goto(f"{service.url}/dashboard#token={seed.operator_token}")
    page.get_by_role("link", name="HACCP records").click()
    rows = page.locator("#haccp-rows tr")
    expect(rows.filter(has_text=day)).to_have_count(1)
    expect(page.locator("#haccp-chain")).to_contain_text("Chain intact")
    expect(page.get_by_label("From")).to_have_value(day)
    page.screenshot(path=screenshots / "haccp-records.png", full_page=True)
    assert serious_accessibility_violations(page, axe_source) == []

    with page.expect_download() as pdf_download:
        page.get_by_role("button", name="Download PDF").click()
    words = "\n".join(
        p.extract_text()
        for p in PdfReader(io.BytesIO(Path(pdf_download.value.path()).read_bytes())).pages
    )
    assert f"HACCP record: {seed.site_name}" in words and day in words
    assert f"{seed.kiosk_code} 2 {day}T12:00:00+00:00 64.0 64.2 64.1 65.0 3" in words

    with page.expect_download() as csv_download:
        page.get_by_role("button", name="Download CSV").click()
    days = parse_export(Path(csv_download.value.path()).read_text(encoding="utf-8"))
    assert [str(d.day) for d in days] == [day] and check_chain(days) == []
    assert f"reading,{seed.kiosk_code},2,{day}T12:02:00+00:00,64.6,64.8,64.7,65.0,3" in days[0].text
    context.close()
