"""The operator dashboard in a real browser, live from a kiosk over a real Mosquitto.

The service runs as a process with its kiosk link on a private broker; a scripted kiosk plays
the locker bank at the MQTT boundary. The operator watches a temperature change arrive through
the SSE stream (no re-read of the kiosk for it), sees an unexplained door opening raise an
alert and acknowledges it, takes a compartment out of and back into service, opens one
remotely with a reason, and freezes the site with the kill switch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.screens.support import Seed, ServiceProcess, press, serious_accessibility_violations
from tests.support.scripted_kiosk import ScriptedKiosk

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]

LIVE_TIMEOUT_MS = 10_000  # broker -> service -> SSE -> browser on two busy cores


def cell(page: Any, n: int) -> Any:
    return page.locator(f'#grid [data-number="{n}"]')


def open_detail(page: Any, n: int) -> None:
    """Click a compartment and wait for its chart, as a person waits for the panel to fill."""
    cell(page, n).click()
    detail_shown(page, n)


def detail_shown(page: Any, n: int) -> None:
    expect(page.locator("#detail-title")).to_contain_text(f"Compartment {n} ")
    page.locator("#chart canvas").wait_for(timeout=LIVE_TIMEOUT_MS)


def test_operator_watches_live_and_acts(
    browser: Any,
    live_service: tuple[ServiceProcess, Seed, ScriptedKiosk],
    axe_source: str,
    screenshots: Path,
) -> None:
    service, seed, kiosk = live_service
    context = browser.new_context(viewport={"width": 1366, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    kiosk_reads: list[str] = []
    page.on(
        "request",
        lambda r: kiosk_reads.append(r.url) if "/api/v1/operator/kiosks/" in r.url else None,
    )
    page.goto(f"{service.url}/dashboard#token={seed.operator_token}")
    expect(page.locator("#grid .cell")).to_have_count(6, timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#kiosk-online")).to_have_text("online")
    expect(page.locator("#conn")).to_have_text("live", timeout=LIVE_TIMEOUT_MS)
    time.sleep(1.0)  # let the first full read settle before counting re-reads

    # A temperature change arrives live, through the stream, without re-reading the kiosk.
    reads_before = len(kiosk_reads)
    kiosk.set_temperature(3, 63.4)
    kiosk.publish_telemetry()
    expect(cell(page, 3).locator('[data-field="temp"]')).to_have_text(
        "63.4 °C", timeout=LIVE_TIMEOUT_MS
    )
    # She presses on the compartment as the next reading arrives and releases after it is shown:
    # the live update must not swallow her click.
    press(page, cell(page, 3))
    kiosk.set_temperature(3, 58.1)
    kiosk.publish_telemetry()
    expect(cell(page, 3).locator('[data-field="temp"]')).to_have_text(
        "58.1 °C", timeout=LIVE_TIMEOUT_MS
    )
    page.mouse.up()
    assert len(kiosk_reads) == reads_before, "the change came by re-reading, not by the stream"

    # The compartment's chart: history from the service, floor and setpoint drawn.
    detail_shown(page, 3)
    legend = page.locator("#chart .u-legend").inner_text()
    assert "temperature °C" in legend and "floor °C" in legend and "setpoint °C" in legend
    assert serious_accessibility_violations(page, axe_source) == []
    page.screenshot(path=screenshots / "dashboard-live.png", full_page=True)

    # A door opened with no command behind it raises an alert; the operator acknowledges it.
    kiosk.open_door(5, force=True)
    alert = page.locator("#alerts li").filter(has_text="#5").or_(page.locator("#alerts li").first)
    alert.first.wait_for(timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#alert-count")).not_to_have_text("0")
    alert.first.get_by_role("button", name="Acknowledge").click()
    expect(alert.first).to_contain_text("acknowledged", timeout=LIVE_TIMEOUT_MS)
    kiosk.close_door(5)

    # Out of service and back, each with a reason.
    open_detail(page, 2)
    page.get_by_placeholder("Reason (required)").first.fill("hinge squeaks, check it")
    page.get_by_role("button", name="Out of service").click()
    expect(page.locator("#action-result")).to_contain_text(
        "taken out of service", timeout=LIVE_TIMEOUT_MS
    )
    expect(cell(page, 2)).to_contain_text("out of service", timeout=LIVE_TIMEOUT_MS)
    page.get_by_placeholder("Reason (required)").first.fill("hinge fixed")
    page.get_by_role("button", name="Back in service").click()
    expect(cell(page, 2)).to_contain_text("available", timeout=LIVE_TIMEOUT_MS)

    # Remote open: it says what it is for (ADR 0120), and the kiosk really gets the unlock for
    # that compartment.
    commands_before = len(kiosk.received)
    open_detail(page, 1)
    page.get_by_placeholder("Reason (required)").first.fill("sticky latch, check it")
    page.get_by_role("button", name="Open remotely").click()
    expect(page.locator("#action-result")).to_contain_text("Say what the opening is for.")
    page.get_by_label("What the opening is for").select_option("inspect")
    page.get_by_role("button", name="Open remotely").click()
    expect(page.locator("#action-result")).to_contain_text(
        "Compartment 1 opened: the food stays in", timeout=LIVE_TIMEOUT_MS
    )
    unlocks = [
        r.command
        for r in kiosk.received[commands_before:]
        if r.command.action == "unlock" and r.command.compartment == 1
    ]
    assert len(unlocks) == 1

    # A new UV-C lamp fitted: recorded with the operator's note, its hours start again.
    expect(page.locator("#detail-facts")).to_contain_text("UV lamp 0.0 h")
    page.get_by_placeholder("Reason (required)").first.fill("new 8 W tube")
    page.get_by_role("button", name="New UV lamp fitted").click()
    expect(page.locator("#action-result")).to_contain_text(
        "Compartment 1 has a new UV-C lamp", timeout=LIVE_TIMEOUT_MS
    )
    expect(page.locator("#detail-facts")).to_contain_text("UV lamp 0.0 h since ")
    kiosk_detail = service.api(
        "GET", f"/api/v1/operator/kiosks/{seed.kiosk_id}", seed.operator_token
    ).json()
    [first] = [c for c in kiosk_detail["compartments"] if c["number"] == 1]
    assert first["lamp_fitted_by"].startswith("new 8 W tube (operator ")

    # The kill switch freezes the site; the service agrees.
    page.locator("#kill-reason").fill("suspected mass-open attempt")
    page.get_by_role("button", name="Freeze all openings").click()
    expect(page.locator("#kill-state")).to_contain_text("ENGAGED")
    sites = service.api("GET", "/api/v1/operator/sites", seed.operator_token).json()
    assert sites[0]["kill_switch_engaged"] is True
    page.screenshot(path=screenshots / "dashboard-kill-switch.png", full_page=True)
    page.locator("#kill-reason").fill("all clear")
    page.get_by_role("button", name="Release the kill switch").click()
    expect(page.locator("#kill-state")).to_contain_text("work normally")

    # On a tablet held upright: one column, nothing wider than the screen.
    page.set_viewport_size({"width": 768, "height": 1024})
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth") <= 768
    page.screenshot(path=screenshots / "dashboard-tablet.png", full_page=True)
    context.close()


def test_a_wrong_token_is_refused_and_the_sign_in_form_comes_back(
    browser: Any, seeded_service: tuple[ServiceProcess, Seed]
) -> None:
    service, _seed = seeded_service
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{service.url}/dashboard")
    page.get_by_label("Operator token").fill("ot_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_have_text("Your token was not accepted.")
    assert page.locator("#app").is_hidden()
    context.close()


def test_an_admin_freezes_every_site_from_the_dashboard(
    browser: Any, live_service: tuple[ServiceProcess, Seed, ScriptedKiosk]
) -> None:
    service, seed, _ = live_service  # the seeded operator is an admin
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{service.url}/dashboard#token={seed.operator_token}")
    expect(page.locator("#conn")).to_have_text("live", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#freeze-all")).to_be_visible()
    page.locator("#freeze-all-reason").fill("attack seen at several sites")
    page.get_by_role("button", name="Freeze every site").click()
    expect(page.locator("#freeze-all-state")).to_contain_text("ENGAGED at every site")
    expect(page.locator("#kill-state")).to_contain_text("ENGAGED", timeout=LIVE_TIMEOUT_MS)
    sites = service.api("GET", "/api/v1/operator/sites", seed.operator_token).json()
    assert sites and all(s["kill_switch_engaged"] for s in sites)
    alerts = service.api("GET", "/api/v1/operator/alerts", seed.operator_token).json()
    assert "kill_switch_all" in [a["kind"] for a in alerts]
    page.locator("#freeze-all-reason").fill("all clear")
    page.get_by_role("button", name="Release every site").click()
    expect(page.locator("#freeze-all-state")).to_contain_text("Released at every site")
    expect(page.locator("#kill-state")).to_contain_text("work normally", timeout=LIVE_TIMEOUT_MS)
    context.close()
