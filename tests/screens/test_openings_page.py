"""The dashboard's openings audit page in a real browser: a remote opening is listed with the
reason the operator typed, can be searched for, and is in the downloaded CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.screens.support import Seed, ServiceProcess, serious_accessibility_violations
from tests.support.scripted_kiosk import ScriptedKiosk

pytestmark = [pytest.mark.browser]

REASON = "purchaser locked her phone inside"


def test_the_audit_lists_a_remote_opening_with_its_reason_and_downloads_it(
    browser: Any,
    live_service: tuple[ServiceProcess, Seed, ScriptedKiosk],
    axe_source: str,
    screenshots: Path,
) -> None:
    service, seed, kiosk = live_service
    view = service.api("GET", f"/api/v1/operator/kiosks/{seed.kiosk_id}", seed.operator_token)
    compartment = next(c for c in view.json()["compartments"] if c["number"] == 3)
    opened = service.api(
        "POST",
        f"/api/v1/operator/compartments/{compartment['id']}/open",
        seed.operator_token,
        json={"reason": REASON, "purpose": "inspect"},
    )
    assert opened.status_code == 200, opened.text
    kiosk.open_door(3)
    kiosk.close_door(3)

    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, accept_downloads=True, bypass_csp=True
    )
    page = context.new_page()
    # Signed in on the dashboard, the operator follows its link to the audit.
    page.goto(f"{service.url}/dashboard#token={seed.operator_token}")
    page.get_by_role("link", name="Door openings").click()
    rows = page.locator("#audit-rows tr")
    remote = rows.filter(has_text=REASON)
    expect(remote).to_have_count(1)
    expect(remote).to_contain_text("Remote open")
    expect(remote).to_contain_text("Olga")
    expect(remote).to_contain_text(f"{seed.kiosk_code} · #3")
    expect(remote).to_contain_text("to look in: the food stays in")  # what it was for
    page.screenshot(path=screenshots / "openings-audit.png", full_page=True)
    assert serious_accessibility_violations(page, axe_source) == []

    page.get_by_label("Kind").select_option("dropoff")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#audit-rows")).to_contain_text("No openings match.")
    page.get_by_label("Kind").select_option("remote_open")
    page.get_by_label("Compartment").fill("3")
    page.get_by_role("button", name="Search").click()
    expect(rows.filter(has_text=REASON)).to_have_count(1)

    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    saved = Path(download.value.path())
    records = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert [(r["kind"], r["compartment"], r["reason"]) for r in records] == [
        ("remote_open", "3", REASON)
    ]
    assert records[0]["purpose"] == "inspect"
    assert records[0]["door_opened_at"]  # the kiosk reported the door, and the audit says so
    context.close()
