"""The demo panel against a real `lockerctl sim`: the lobby, a fault and the scanner, as a
visitor plays them, reach the simulator's physical truth."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.screens.support import ManagedProcess, Seed, ServiceProcess, wait_until
from tests.support.mosquitto import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOCKERCTL = str(Path(sys.executable).parent / "lockerctl")


def test_panel_changes_the_simulated_world(
    browser: Any,
    seeded_service: tuple[ServiceProcess, Seed],
    tmp_path: Path,
    screenshots: Path,
) -> None:
    service, _seed = seeded_service
    sim_url = f"http://127.0.0.1:{free_port()}"
    sim = ManagedProcess(
        "sim",
        [
            LOCKERCTL,
            "sim",
            "--compartments",
            "4",
            "--http-port",
            sim_url.rsplit(":", 1)[1],
            "--pty-dir",
            str(tmp_path / "pty"),
        ],
        tmp_path,
        {},
    )
    try:
        sim.start().wait_http(sim_url + "/healthz")

        def truth() -> dict[str, Any]:
            answer: dict[str, Any] = httpx.get(sim_url + "/truth").json()
            return answer

        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        page = context.new_page()
        page.goto(f"{service.url}/demo?sim={sim_url}")
        expect(page.locator("#sim-grid .sim-cell")).to_have_count(4)
        expect(page.locator("#sim-conn")).to_contain_text("simulator: bank1")

        page.get_by_label("Lobby temperature °C").fill("31.5")
        page.get_by_role("button", name="Set").first.click()
        wait_until(lambda: truth()["lobby_temp_c"] == 31.5, 10, "the lobby to warm up")

        card = page.locator('#sim-grid [data-number="3"]')
        card.get_by_role("button", name="Jam lock").click()
        wait_until(lambda: truth()["compartments"][2]["jammed_lock"], 10, "the lock to jam")
        expect(card.get_by_role("button", name="Free lock")).to_be_visible()
        card.get_by_label("Temperature sensor of compartment 3").select_option("short")
        wait_until(
            lambda: truth()["compartments"][2]["sensor_fault"] == "short", 10, "a shorted sensor"
        )

        # A locked door does not open for a visitor; the panel says so instead of pretending.
        card.get_by_role("button", name="Open door").click()
        expect(page.locator("#demo-log")).to_contain_text("#3 door opened: refused")
        assert truth()["compartments"][2]["door_open"] is False
        card.get_by_role("button", name="Force open").click()
        wait_until(lambda: truth()["compartments"][2]["door_open"], 10, "a forced door")

        page.locator("#scan-text").fill("12345678")
        page.get_by_role("button", name="Scan", exact=True).click()
        expect(page.locator("#demo-log")).to_contain_text('scanned "12345678"')
        page.screenshot(path=screenshots / "demo-panel.png", full_page=True)
        context.close()
    finally:
        sim.stop()
