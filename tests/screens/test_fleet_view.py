"""The fleet view in a real browser over 10,000 kiosks x 12 compartments in PostgreSQL, and
live from a kiosk over a real Mosquitto.

The operator opens `/dashboard/fleet`: the four troubled kiosks lead the list in the order of
their trouble (offline, a fault, food below the floor, an open alert), every row shows its
badges, the trouble filter leaves only them, a search finds one kiosk among ten thousand, the
pager walks on, and a click opens that kiosk's live grid in the dashboard. A kiosk that goes
offline turns its row red through the live stream, sooner than the page's periodic re-read,
and back when it returns. Timings are the
benchmark's business (`bench/fleet/fleet_view.py`), not this test's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from migrations import upgrade
from tests.screens.fleet_seed import (
    COMPARTMENTS,
    FAULTY,
    KIOSKS,
    OFFLINE,
    WARM,
    Fleet,
    kiosk_code,
    kiosk_name,
    seed_fleet,
)
from tests.screens.support import (
    Seed,
    ServiceProcess,
    in_thread,
    press,
    serious_accessibility_violations,
)
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.scripted_kiosk import ScriptedKiosk

pytestmark = [pytest.mark.browser]

PAGE_TIMEOUT_MS = 15_000  # a page of the fleet from a busy shared PostgreSQL on two cores
LIVE_TIMEOUT_MS = 10_000  # broker -> service -> SSE -> browser; under the 30 s periodic re-read


@pytest.fixture
def fleet_service(tmp_path: Path) -> Iterator[tuple[ServiceProcess, Fleet]]:
    # In threads of their own: the browser's event loop already runs in this one.
    url = in_thread(create_pg_database)
    try:
        in_thread(lambda: upgrade(url))
        fleet = in_thread(lambda: seed_fleet(url))
        service = ServiceProcess(url, tmp_path, LOCKER_TIMERS_ENABLED="false").start()
        try:
            yield service, fleet
        finally:
            service.stop()
    finally:
        in_thread(lambda: drop_pg_database(url))


def rows(page: Any) -> Any:
    return page.locator("#fleet-rows tr")


def names_shown(page: Any, count: int) -> list[str]:
    names: list[str] = page.eval_on_selector_all(
        f"#fleet-rows tr:nth-child(-n+{count}) td:first-child a",
        "els => els.map(e => e.textContent)",
    )
    return names


@pytest.mark.postgres
@pytest.mark.slow
def test_troubled_kiosks_first_filter_search_and_click_through(
    browser: Any,
    fleet_service: tuple[ServiceProcess, Fleet],
    axe_source: str,
    screenshots: Path,
) -> None:
    service, fleet = fleet_service
    context = browser.new_context(viewport={"width": 1366, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.goto(f"{service.url}/dashboard/fleet#token={fleet.operator_token}")

    # First paint: a page of 50 rows out of ten thousand, the troubled four on top.
    expect(rows(page)).to_have_count(50, timeout=PAGE_TIMEOUT_MS)
    assert names_shown(page, 5) == [*fleet.troubled, kiosk_name(1)]
    expect(page.locator("#fleet-counts")).to_contain_text(f"{KIOSKS} kiosks · 1 offline")
    expect(page.locator("#fleet-range")).to_have_text(f"1–50 of {KIOSKS}")
    offline = page.locator(f'tr[data-kiosk="{kiosk_code(OFFLINE)}"]')
    expect(offline.locator('[data-field="status"] .badge')).to_have_text("offline")
    expect(offline).to_contain_text("1 critical")
    faulty = page.locator(f'tr[data-kiosk="{kiosk_code(FAULTY)}"]')
    expect(faulty.locator('[data-field="faults"]')).to_have_text("1 in fault")
    warm = page.locator(f'tr[data-kiosk="{kiosk_code(WARM)}"]')
    expect(warm.locator('[data-field="at-risk"]')).to_have_text("1 at risk")
    expect(page.locator(f'tr[data-kiosk="{kiosk_code(1)}"]')).to_contain_text(
        f"{COMPARTMENTS} / {COMPARTMENTS}"
    )
    assert serious_accessibility_violations(page, axe_source) == []
    page.screenshot(path=screenshots / "fleet.png")

    # The pager walks on in the same order.
    page.locator("#fleet-next").click()
    expect(page.locator("#fleet-range")).to_have_text(f"51–100 of {KIOSKS}")
    expect(rows(page).first.locator("td").first).to_contain_text(kiosk_name(47))
    page.locator("#fleet-prev").click()
    expect(page.locator("#fleet-range")).to_have_text(f"1–50 of {KIOSKS}")

    # Trouble only: the four and nothing else.
    page.locator("#fleet-trouble").check()
    expect(rows(page)).to_have_count(4, timeout=PAGE_TIMEOUT_MS)
    assert names_shown(page, 4) == fleet.troubled
    page.locator("#fleet-trouble").uncheck()
    expect(rows(page)).to_have_count(50, timeout=PAGE_TIMEOUT_MS)

    # A search by code finds the one kiosk among ten thousand.
    page.locator("#fleet-q").fill(kiosk_code(WARM))
    expect(rows(page)).to_have_count(1, timeout=PAGE_TIMEOUT_MS)
    expect(page.locator("#fleet-range")).to_have_text("1–1 of 1")
    # And by site: a hundred kiosks a site.
    page.locator("#fleet-q").fill("Site 042")
    expect(page.locator("#fleet-range")).to_have_text("1–50 of 100", timeout=PAGE_TIMEOUT_MS)

    # One click to the kiosk's live grid.
    page.locator("#fleet-q").fill(kiosk_code(WARM))
    expect(rows(page)).to_have_count(1, timeout=PAGE_TIMEOUT_MS)
    page.locator(f'tr[data-kiosk="{kiosk_code(WARM)}"] a').click()
    page.wait_for_url("**/dashboard?**")
    expect(page.locator("#grid .cell")).to_have_count(COMPARTMENTS, timeout=PAGE_TIMEOUT_MS)
    expect(page.locator("#kiosk-title")).to_have_text(f"{kiosk_name(WARM)} ({kiosk_code(WARM)})")
    expect(page.locator('#grid [data-number="5"]')).to_contain_text("awaiting pickup")
    context.close()


@pytest.mark.mosquitto
def test_a_kiosk_going_offline_and_back_shows_live(
    browser: Any, live_service: tuple[ServiceProcess, Seed, ScriptedKiosk]
) -> None:
    service, seed, kiosk = live_service
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.goto(f"{service.url}/dashboard/fleet#token={seed.operator_token}")
    row = page.locator(f'tr[data-kiosk="{seed.kiosk_code}"]')
    status = row.locator('[data-field="status"] .badge')
    expect(status).to_have_text("online", timeout=PAGE_TIMEOUT_MS)
    expect(page.locator("#conn")).to_have_text("live", timeout=LIVE_TIMEOUT_MS)

    kiosk.publish_status("offline")
    expect(status).to_have_text("offline", timeout=LIVE_TIMEOUT_MS)
    expect(row).to_contain_text("1 critical", timeout=LIVE_TIMEOUT_MS)  # its offline alert
    expect(page.locator("#fleet-counts")).to_contain_text("1 offline")

    kiosk.publish_status("online")
    expect(status).to_have_text("online", timeout=LIVE_TIMEOUT_MS)
    expect(row).not_to_contain_text("critical", timeout=LIVE_TIMEOUT_MS)  # resolved

    # The operator presses on the kiosk as the fleet is re-read (its new alert) and releases
    # after: the re-read must not swallow her click.
    press(page, row.locator("a"))
    kiosk.publish_status("offline")
    expect(row).to_contain_text("1 critical", timeout=LIVE_TIMEOUT_MS)  # shown by the re-read
    page.mouse.up()
    page.wait_for_url("**/dashboard?**", timeout=PAGE_TIMEOUT_MS)
    expect(page.locator("#kiosk-title")).to_contain_text(seed.kiosk_code, timeout=PAGE_TIMEOUT_MS)
    context.close()
