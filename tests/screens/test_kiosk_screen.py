"""The kiosk touch screen in a real browser: languages, touch targets, inactivity, accessibility.

Runs the service as a real process; the screen signs in with a real kiosk token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.screens.support import (
    Seed,
    ServiceProcess,
    serious_accessibility_violations,
    visible_button_sizes,
)

pytestmark = [pytest.mark.browser]

MIN_TOUCH_PX = 72  # the kiosk's own rule (app.css); WCAG 2.5.5 asks 44


def kiosk_page(browser: Any, service: ServiceProcess, seed: Seed, query: str = "") -> Any:
    context = browser.new_context(
        viewport={"width": 800, "height": 1280}, has_touch=True, bypass_csp=True, locale="en-GB"
    )
    page = context.new_page()
    page.goto(f"{service.url}/kiosk{query}#token={seed.kiosk_token}")
    page.get_by_role("button", name="Collect food").wait_for()
    return page


def test_start_and_keypad_in_english_and_chinese_with_big_targets(
    browser: Any,
    seeded_service: tuple[ServiceProcess, Seed],
    axe_source: str,
    screenshots: Path,
) -> None:
    service, seed = seeded_service
    page = kiosk_page(browser, service, seed)
    assert "#token" not in page.url  # the token left the address bar at once
    assert page.evaluate("localStorage.getItem('locker.kioskToken')") == seed.kiosk_token
    assert serious_accessibility_violations(page, axe_source) == []
    page.screenshot(path=screenshots / "kiosk-start-en.png")

    for text, width, height in visible_button_sizes(page, "#kiosk"):
        assert min(width, height) >= MIN_TOUCH_PX, f"{text!r} is {width}x{height} px"

    page.get_by_role("button", name="Collect food").click()
    page.get_by_role("heading", name="Pickup code").wait_for()
    for digit in "12345678":
        page.get_by_role("button", name=digit, exact=True).click()
    assert page.locator("#pickup-display").inner_text() == "1234 5678"
    assert page.get_by_role("button", name="Open", exact=True).is_enabled()
    page.get_by_role("button", name="Delete").click()
    assert page.locator("#pickup-display").inner_text() == "1234 567"
    assert page.get_by_role("button", name="Open", exact=True).is_disabled()
    for text, width, height in visible_button_sizes(page, "#screen-pickup"):
        assert min(width, height) >= MIN_TOUCH_PX, f"{text!r} is {width}x{height} px"
    assert serious_accessibility_violations(page, axe_source) == []

    page.get_by_role("button", name="中文").click()
    assert page.evaluate("document.documentElement.lang") == "zh-Hans"
    page.get_by_role("heading", name="取餐码").wait_for()
    assert page.get_by_role("button", name="开柜").is_visible()
    assert page.get_by_role("button", name="删除").is_visible()
    page.screenshot(path=screenshots / "kiosk-pickup-zh.png")
    assert serious_accessibility_violations(page, axe_source) == []

    page.get_by_role("button", name="返回").click()
    page.get_by_role("button", name="取餐").wait_for()
    page.reload()  # the language choice survives a reload of the kiosk screen
    page.get_by_role("button", name="存餐").wait_for()
    page.context.close()


def test_inactivity_returns_to_start_and_forgets_what_was_typed(
    browser: Any, seeded_service: tuple[ServiceProcess, Seed], screenshots: Path
) -> None:
    service, seed = seeded_service
    page = kiosk_page(browser, service, seed, "?idle_s=5")
    page.get_by_role("button", name="Deliver food").click()
    page.get_by_label("Type your courier ID.").fill(seed.courier_code)
    page.get_by_role("button", name="Next").click()
    for digit in "2468":
        page.get_by_role("button", name=digit, exact=True).click()
    expect(page.locator("#courier-pin-display")).to_have_text("••••")

    warning = page.locator("#idle-warning")
    warning.wait_for(state="visible", timeout=10_000)
    assert "Returning to the start" in warning.inner_text()
    page.screenshot(path=screenshots / "kiosk-idle-warning.png")
    page.get_by_role("button", name="Collect food").wait_for(timeout=10_000)
    assert warning.is_hidden()

    page.get_by_role("button", name="Deliver food").click()
    assert page.get_by_label("Type your courier ID.").input_value() == ""
    page.get_by_label("Type your courier ID.").fill("X")
    page.get_by_role("button", name="Next").click()
    assert page.locator("#courier-pin-display").inner_text() == ""
    page.context.close()


def test_a_screen_without_a_token_asks_for_one(
    browser: Any, seeded_service: tuple[ServiceProcess, Seed]
) -> None:
    service, seed = seeded_service
    context = browser.new_context(viewport={"width": 800, "height": 1280})
    page = context.new_page()
    page.goto(f"{service.url}/kiosk")
    page.get_by_role("heading", name="Set up this screen").wait_for()
    page.get_by_label("Kiosk token").fill(seed.kiosk_token)
    page.get_by_role("button", name="Save").click()
    page.get_by_role("button", name="Collect food").wait_for()
    context.close()
