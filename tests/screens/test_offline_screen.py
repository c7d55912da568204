"""The kiosk screen when the kiosk is cut off, in Chromium: the service's screen hands over to the
bridge's own offline screen, a typed code opens her compartment there, in both languages, and
the service's screen comes back with the link (docs/adr/0077)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.firmware_bridge.conftest import HER_CODE, running_screen_kiosk
from tests.firmware_bridge.harness import pulses
from tests.screens.support import Seed, ServiceProcess, serious_accessibility_violations
from tests.support.mosquitto import MosquittoProcess


def press_code(page: Any, code: str) -> None:
    for digit in code:
        page.locator("#keypad button", has_text=re.compile(f"^{digit}$")).click()


def test_cut_off_the_screen_hands_over_opens_by_typed_code_and_comes_back(
    browser: Any,
    seeded_service: tuple[ServiceProcess, Seed],
    private_mosquitto: MosquittoProcess,
    tmp_path: Path,
    axe_source: str,
    screenshots: Path,
) -> None:
    service, seed = seeded_service
    with running_screen_kiosk(private_mosquitto, tmp_path, service.url) as kiosk:
        assert kiosk.bridge.screen is not None
        bridge_origin = f"http://127.0.0.1:{kiosk.bridge.screen.port}"
        kiosk.supply()
        # The service's own CSP must let its page ask the bridge (no bypass here).
        context = browser.new_context(viewport={"width": 1024, "height": 768}, has_touch=True)
        page = context.new_page()
        service_screen = f"{service.url}/kiosk?lang=zh-Hans&offline_screen={bridge_origin}"
        page.goto(f"{service_screen}#token={seed.kiosk_token}")
        page.locator("#go-collect").wait_for()

        kiosk.cut_off()
        page.wait_for_url(re.compile(f"^{re.escape(bridge_origin)}/"), timeout=30_000)
        # The service's page said which language it was in.
        expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
        expect(page.locator("#offline-badge")).to_have_text("离线")
        expect(page.locator(".paused")).to_contain_text("暂停投递")
        page.locator("button.lang[data-lang='en']").click()
        expect(page.locator("#collect-title")).to_have_text("Collect your food")
        expect(page.locator(".paused")).to_have_text(
            "Deliveries are paused while the locker is offline. Couriers: please try again later."
        )

        press_code(page, "00000000")
        page.locator("#open").click()
        expect(page.locator("#result-hint")).to_have_text(
            "This code does not open anything here while the locker is offline. Please check it, "
            "or try again once the locker is back online."
        )
        page.locator("#done").click()
        press_code(page, HER_CODE)
        page.locator("#open").click()
        expect(page.locator("#result-title")).to_have_text("Compartment 2 is open")
        expect(page.locator("#result-number")).to_have_text("2")
        assert pulses(kiosk.sim, 2) == 1
        assert all(pulses(kiosk.sim, n) == 0 for n in range(1, 13) if n != 2)
        page.screenshot(path=screenshots / "offline-screen-opened-en.png")

        # A QR code at the scanner: this screen says what opened.
        page.locator("#done").click()
        kiosk.sim.world.scan(kiosk.their_token)
        expect(page.locator("#result-title")).to_have_text("Compartment 7 is open")

        # The link is back: the service's screen again, as it was set up.
        kiosk.broker.start()
        page.wait_for_url(re.compile(f"^{re.escape(service.url)}/kiosk"), timeout=30_000)
        page.locator("#go-collect").wait_for()
        assert "offline_screen=" in page.url
        context.close()

        audit = browser.new_context(viewport={"width": 1024, "height": 768}, bypass_csp=True)
        offline_page = audit.new_page()
        kiosk.cut_off()
        offline_page.goto(f"{bridge_origin}/")
        offline_page.locator("#keypad button").first.wait_for()
        assert serious_accessibility_violations(offline_page, axe_source) == []
        audit.close()


def test_the_service_screen_takes_only_the_kiosk_pcs_own_address(
    seeded_service: tuple[ServiceProcess, Seed],
) -> None:
    service, _ = seeded_service
    good = httpx.get(f"{service.url}/kiosk?offline_screen=http://127.0.0.1:8002", timeout=30)
    assert good.status_code == 200
    assert "connect-src 'self' http://127.0.0.1:8002;" in good.headers["content-security-policy"]
    for bad in (
        "http://evil.example:8002",
        "https://127.0.0.1:8002",
        "http://127.0.0.1",
        "http://127.0.0.1:8002/x; script-src *",
        "javascript:alert(1)",
    ):
        answer = httpx.get(f"{service.url}/kiosk", params={"offline_screen": bad}, timeout=30)
        assert answer.status_code == 400, bad
        assert "evil" not in answer.headers["content-security-policy"]
