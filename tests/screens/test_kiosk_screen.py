"""The kiosk touch screen in a real browser: languages, touch targets, inactivity, accessibility.

Runs the service as a real process; the screen signs in with a real kiosk token.
"""

from __future__ import annotations

import json
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.screens.support import (
    Seed,
    ServiceProcess,
    serious_accessibility_violations,
    visible_button_sizes,
    wait_until,
)
from tests.support.scripted_kiosk import ScriptedKiosk
from tests.support.threaded_server import serve_in_background

pytestmark = [pytest.mark.browser, pytest.mark.slow]

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
    page.get_by_role("button", name="取餐").wait_for()  # "Back" keeps the person's language
    page.reload()  # a reloaded screen starts in the kiosk's own language, not the last person's
    page.get_by_role("button", name="Deliver food").wait_for()
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


def order_for(service: ServiceProcess, seed: Seed) -> str:
    site = service.api("GET", "/api/v1/operator/sites", seed.operator_token).json()[0]["code"]
    ref = f"NB-{uuid.uuid4().hex[:6]}"
    answer = service.api(
        "POST",
        "/api/v1/orders",
        headers={"X-API-Key": seed.merchant_key},
        json={
            "external_ref": ref,
            "site": site,
            "purchaser_name": "Pat",
            "purchaser_contact": "json://127.0.0.1:9/never",
        },
    )
    assert answer.status_code == 201, answer.text
    return ref


def drop_off(page: Any, courier: str, pin: str, order_ref: str) -> None:
    page.get_by_role("button", name="Deliver food").click()
    page.get_by_label("Type your courier ID.").fill(courier)
    page.get_by_role("button", name="Next").click()
    for digit in pin:
        page.get_by_role("button", name=digit, exact=True).click()
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Type the order reference, or scan the order label.").fill(order_ref)
    page.get_by_role("button", name="Open", exact=True).click()


def type_code(page: Any, code: str) -> None:
    for digit in code:
        page.get_by_role("button", name=digit, exact=True).click()
    page.get_by_role("button", name="Open", exact=True).click()


def test_every_refusal_is_said_plainly_and_nothing_opens(
    browser: Any,
    seeded_service: tuple[ServiceProcess, Seed],
    axe_source: str,
    screenshots: Path,
) -> None:
    service, seed = seeded_service
    ref = order_for(service, seed)
    page = kiosk_page(browser, service, seed)
    error = page.locator("#error-text")

    drop_off(page, seed.courier_code, "999999", ref)
    expect(error).to_have_text("Courier ID or PIN is wrong.")
    assert serious_accessibility_violations(page, axe_source) == []
    page.screenshot(path=screenshots / "kiosk-refused-pin.png")
    page.get_by_role("button", name="Start over").click()

    drop_off(page, seed.courier_code, seed.courier_pin, "NO-SUCH-ORDER")
    expect(error).to_have_text("No order with this reference is waiting at this locker.")
    page.get_by_role("button", name="Start over").click()

    # The kiosk link is off in this service: the compartment cannot be opened, and it says so.
    drop_off(page, seed.courier_code, seed.courier_pin, ref)
    expect(error).to_have_text("The locker is not reachable right now. Please try again shortly.")
    page.get_by_role("button", name="Start over").click()

    page.get_by_role("button", name="Collect food").click()
    type_code(page, "12345678")
    expect(error).to_have_text(
        "This code does not open anything here. Please check it and try again."
    )
    page.get_by_role("button", name="中文").click()
    expect(error).to_have_text("该取餐码无法在此开柜，请检查后重试。")
    page.get_by_role("button", name="English").click()
    # "Try again" goes back to an empty keypad; after enough wrong codes the kiosk locks out.
    # Past the 5 free failures each one's wait doubles from 2 s (ADR 0039): a try is refused as
    # soon as it comes within the wait, which on a starved machine (a try took 8 s in CI beside
    # other work) needs more tries; by the twelfth the wait is 2 minutes.
    for _ in range(12):
        page.get_by_role("button", name="Try again").click()
        expect(page.locator("#pickup-display")).to_have_text("")
        type_code(page, "87654321")
        expect(error).not_to_have_text("")
        if "Too many" in error.inner_text():
            break
    expect(error).to_have_text("Too many wrong attempts. Please wait a few minutes and try again.")
    page.screenshot(path=screenshots / "kiosk-refused-locked-out.png")
    orders = service.api("GET", "/api/v1/operator/orders", seed.operator_token).json()
    assert [o["state"] for o in orders] == ["created"]  # nothing was opened or assigned
    page.context.close()


def test_a_refused_scan_at_the_scanner_is_explained_on_the_screen(
    browser: Any,
    live_service: tuple[ServiceProcess, Seed, ScriptedKiosk],
    screenshots: Path,
) -> None:
    service, seed, kiosk = live_service
    page = kiosk_page(browser, service, seed)
    page.wait_for_timeout(1000)  # the screen's own stream is open before the scan
    kiosk.scan("12345678")
    expect(page.locator("#error-text")).to_have_text(
        "This code does not open anything here. Please check it and try again.",
        timeout=10_000,
    )
    assert page.get_by_role("button", name="Try again").is_hidden()  # nothing to retype here
    page.screenshot(path=screenshots / "kiosk-scan-refused.png")
    page.get_by_role("button", name="Start over").click()
    page.get_by_role("button", name="Collect food").wait_for()
    page.context.close()


def test_a_kiosk_cut_off_from_its_service_says_so(
    browser: Any, seeded_service: tuple[ServiceProcess, Seed]
) -> None:
    service, seed = seeded_service
    page = kiosk_page(browser, service, seed)
    service.stop()
    page.get_by_role("button", name="Collect food").click()
    type_code(page, "12345678")
    expect(page.locator("#error-text")).to_have_text(
        "The locker cannot reach its service right now. Please try again shortly.",
        timeout=10_000,
    )
    page.context.close()


def test_start_screen_warns_when_openings_are_paused(
    browser: Any, seeded_service: tuple[ServiceProcess, Seed], axe_source: str, screenshots: Path
) -> None:
    service, seed = seeded_service
    page = kiosk_page(browser, service, seed)
    notice = page.locator("#kiosk-notice")
    # This service runs without its kiosk link: the kiosk is not online, and the screen says so.
    expect(notice).to_have_text(
        "This locker cannot reach its compartments right now. Please try later."
    )
    engaged = service.api(
        "POST",
        f"/api/v1/operator/sites/{seed.site_id}/kill-switch",
        seed.operator_token,
        json={"engaged": True, "reason": "suspected mass-open attempt"},
    )
    assert engaged.status_code == 200
    page.reload()
    expect(notice).to_have_text("Openings are paused at this site for now. Please ask the staff.")
    page.get_by_role("button", name="中文").click()
    expect(notice).to_have_text("本站点暂停开柜，请联系现场工作人员。")
    assert serious_accessibility_violations(page, axe_source) == []
    page.screenshot(path=screenshots / "kiosk-paused-zh.png")
    page.context.close()


def test_try_again_goes_back_to_the_step_that_was_refused_with_that_field_empty(
    browser: Any, seeded_service: tuple[ServiceProcess, Seed]
) -> None:
    service, seed = seeded_service
    ref = order_for(service, seed)
    page = kiosk_page(browser, service, seed)
    error = page.locator("#error-text")
    order_field = page.get_by_label("Type the order reference, or scan the order label.")

    drop_off(page, seed.courier_code, "999999", ref)
    expect(error).to_have_text("Courier ID or PIN is wrong.")
    page.get_by_role("button", name="Try again").click()
    page.get_by_role("heading", name="PIN", exact=True).wait_for()
    expect(page.locator("#courier-pin-display")).to_have_text("")  # the wrong PIN is gone
    next_step = page.get_by_role("button", name="Next")
    for digit in seed.courier_pin[:3]:  # shorter than any PIN: not sent to be refused
        page.get_by_role("button", name=digit, exact=True).click()
        expect(next_step).to_be_disabled()
    for digit in seed.courier_pin[3:]:
        page.get_by_role("button", name=digit, exact=True).click()
    expect(next_step).to_be_enabled()
    next_step.click()
    expect(order_field).to_have_value(ref)  # what was not refused is kept
    order_field.fill("NO-SUCH-ORDER")
    page.get_by_role("button", name="Open", exact=True).click()
    expect(error).to_have_text("No order with this reference is waiting at this locker.")

    page.get_by_role("button", name="Try again").click()
    page.get_by_role("heading", name="Order reference").wait_for()
    expect(order_field).to_have_value("")  # the unknown order is gone, the PIN is not
    order_field.fill(ref)
    page.get_by_role("button", name="Open", exact=True).click()
    # The kiosk link is off here: nothing typed was wrong, so everything is kept for one touch.
    expect(error).to_have_text("The locker is not reachable right now. Please try again shortly.")
    page.get_by_role("button", name="Try again").click()
    expect(order_field).to_have_value(ref)
    page.get_by_role("button", name="Open", exact=True).click()
    expect(error).to_have_text("The locker is not reachable right now. Please try again shortly.")
    page.context.close()


def test_inactivity_gives_the_next_person_the_kiosks_own_language(
    browser: Any, seeded_service: tuple[ServiceProcess, Seed]
) -> None:
    service, seed = seeded_service
    page = kiosk_page(browser, service, seed, "?idle_s=5")
    page.get_by_role("button", name="中文").click()
    page.get_by_role("button", name="取餐").click()
    page.get_by_role("heading", name="取餐码").wait_for()
    # Left on a step: the idle reset goes home in English, the kiosk's language.
    page.get_by_role("button", name="Collect food").wait_for(timeout=15_000)
    assert page.evaluate("document.documentElement.lang") == "en"

    # Chosen on the start screen and left there: reset too.
    page.get_by_role("button", name="中文").click()
    page.get_by_role("button", name="取餐").wait_for()
    page.get_by_role("button", name="Collect food").wait_for(timeout=15_000)
    page.context.close()

    # A kiosk set up in Chinese (`?lang=`) comes back to Chinese after an English-speaker.
    page = kiosk_page_in(browser, service, seed, "?lang=zh-Hans&idle_s=5", "取餐")
    page.get_by_role("button", name="English").click()
    page.get_by_role("button", name="Deliver food").click()
    page.get_by_role("heading", name="Courier ID").wait_for()
    page.get_by_role("button", name="取餐").wait_for(timeout=15_000)
    assert page.evaluate("document.documentElement.lang") == "zh-Hans"
    page.context.close()


def kiosk_page_in(browser: Any, service: ServiceProcess, seed: Seed, query: str, ready: str) -> Any:
    context = browser.new_context(
        viewport={"width": 1024, "height": 768}, has_touch=True, locale="en-GB"
    )
    page = context.new_page()
    page.goto(f"{service.url}/kiosk{query}#token={seed.kiosk_token}")
    page.get_by_role("button", name=ready).wait_for()
    return page


def test_a_frozen_site_refuses_a_courier_in_words_of_both_languages(
    browser: Any, seeded_service: tuple[ServiceProcess, Seed]
) -> None:
    service, seed = seeded_service
    ref = order_for(service, seed)
    engaged = service.api(
        "POST",
        f"/api/v1/operator/sites/{seed.site_id}/kill-switch",
        seed.operator_token,
        json={"engaged": True, "reason": "suspected mass-open attempt"},
    )
    assert engaged.status_code == 200
    page = kiosk_page(browser, service, seed)
    drop_off(page, seed.courier_code, seed.courier_pin, ref)
    error = page.locator("#error-text")
    expect(error).to_have_text(
        "Deliveries are paused at this site. Please keep the food and ask the staff."
    )
    page.get_by_role("button", name="中文").click()
    expect(error).to_have_text("本站点已暂停存餐，请保管好餐品并联系现场工作人员。")
    orders = service.api("GET", "/api/v1/operator/orders", seed.operator_token).json()
    assert [o["state"] for o in orders] == ["created"]  # nothing reserved, nothing opened
    page.context.close()


def test_an_unconfirmed_drop_off_names_the_compartment_and_try_again_opens_it(
    browser: Any, live_service: tuple[ServiceProcess, Seed, ScriptedKiosk]
) -> None:
    """The kiosk takes the unlock and never says whether the lock released: the courier is
    told, in his language, which compartment to look at, and Try again opens that one."""
    service, seed, kiosk = live_service
    ref = order_for(service, seed)
    page = kiosk_page(browser, service, seed)
    error = page.locator("#error-text")
    kiosk.script("unlock", "accept_only")
    drop_off(page, seed.courier_code, seed.courier_pin, ref)
    # The answer waits for the command's deadline (10 s), measured by the service.
    expect(error).not_to_have_text("", timeout=60_000)
    [first] = [r.command for r in kiosk.received if r.command.action == "unlock"]
    n = first.compartment
    expect(error).to_have_text(
        f"The locker did not confirm that compartment {n} opened. If it is open, put the food "
        "in and close the door. If it is not, touch Try again: the same compartment opens."
    )
    page.get_by_role("button", name="中文").click()
    expect(error).to_contain_text(f"取餐柜未确认 {n} 号格口已打开")
    page.get_by_role("button", name="English").click()
    page.get_by_role("button", name="Try again").click()
    order_field = page.get_by_label("Type the order reference, or scan the order label.")
    expect(order_field).to_have_value(ref)  # nothing typed was wrong: one touch sends it again
    page.get_by_role("button", name="Open", exact=True).click()
    expect(page.locator("#opened-number")).to_have_text(str(n), timeout=15_000)
    unlocks = [r.command for r in kiosk.received if r.command.action == "unlock"]
    assert [c.compartment for c in unlocks] == [n, n]
    page.context.close()


def test_a_courier_who_shuts_his_door_on_nothing_is_told_at_the_screen(
    browser: Any, live_service: tuple[ServiceProcess, Seed, ScriptedKiosk]
) -> None:
    """He opens the compartment he was given and shuts it without the food: the screen says so
    at once, in his language, instead of "put the food in" until it times out, and Try again
    asks for his PIN to open one again."""
    service, seed, kiosk = live_service
    ref = order_for(service, seed)
    page = kiosk_page(browser, service, seed)
    drop_off(page, seed.courier_code, seed.courier_pin, ref)
    n = opened_compartment(page)
    kiosk.open_door(n)
    kiosk.close_door(n)  # nothing placed
    error = page.locator("#error-text")
    expect(error).to_have_text(
        f"Nothing was put in compartment {n}, so the order was not dropped off. To drop it off, "
        "touch Try again and type your PIN: a compartment opens again.",
        timeout=15_000,
    )
    page.get_by_role("button", name="中文").click()
    expect(error).to_contain_text(f"{n} 号格口内没有放入任何物品")
    page.get_by_role("button", name="English").click()
    try_again_with_his_pin(page, seed.courier_pin, ref, n)
    page.context.close()


def test_a_courier_who_shuts_his_door_on_nothing_after_his_screen_went_home_is_told(
    browser: Any, live_service: tuple[ServiceProcess, Seed, ScriptedKiosk]
) -> None:
    """His result screen goes back to the start after a few seconds, while he has minutes to
    put the food in: shut on nothing after that, the free screen still tells him, in his
    language, and Try again asks only for his PIN."""
    service, seed, kiosk = live_service
    ref = order_for(service, seed)
    page = kiosk_page(browser, service, seed, "?result_s=3")
    page.get_by_role("button", name="中文").click()
    drop_off_by_ids(page, seed.courier_code, seed.courier_pin, ref)
    n = opened_compartment(page)
    expect(page.locator("#screen-start")).to_be_visible(timeout=15_000)  # gone home
    expect(page.get_by_role("button", name="Collect food")).to_be_visible()  # and to English
    kiosk.open_door(n)
    kiosk.close_door(n)  # nothing placed
    error = page.locator("#error-text")
    expect(error).to_contain_text(f"{n} 号格口内没有放入任何物品", timeout=15_000)
    page.get_by_role("button", name="English").click()
    try_again_with_his_pin(page, seed.courier_pin, ref, n)
    page.context.close()


def test_a_door_shut_on_nothing_does_not_interrupt_the_next_person(
    browser: Any, live_service: tuple[ServiceProcess, Seed, ScriptedKiosk]
) -> None:
    """Someone else has started at the screen by then: the courier's news is not put over her
    screen (the drop-off's door timer frees his compartment)."""
    service, seed, kiosk = live_service
    ref = order_for(service, seed)
    page = kiosk_page(browser, service, seed, "?result_s=3")
    drop_off(page, seed.courier_code, seed.courier_pin, ref)
    n = opened_compartment(page)
    expect(page.locator("#screen-start")).to_be_visible(timeout=15_000)
    page.get_by_role("button", name="Collect food").click()
    for digit in "1234":  # she is typing her code
        page.get_by_role("button", name=digit, exact=True).click()
    page.evaluate(  # every text the error screen shows from now on
        """() => {
          window.shown = [];
          const text = document.getElementById("error-text");
          // Each text set is a node of its own: two set in one task are both seen.
          new MutationObserver((records) => records.forEach((r) =>
            r.addedNodes.forEach((node) => window.shown.push(node.textContent))
          )).observe(text, { childList: true });
        }"""
    )
    kiosk.open_door(n)
    kiosk.close_door(n)  # nothing placed
    # Her QR read after it: the screen hears of the two in this order, and shows hers.
    kiosk.scan("NOT-A-TOKEN")
    expect(page.locator("#error-text")).to_have_text(
        "This code does not open anything here. Please check it and try again.", timeout=15_000
    )
    shown = page.evaluate("() => window.shown")
    assert not any("Nothing was put" in text for text in shown), shown
    page.context.close()


def opened_compartment(page: Any) -> int:
    """The compartment the screen says is open, once it says so."""
    number = page.locator("#opened-number")
    expect(number).not_to_have_text("", timeout=15_000)
    return int(number.inner_text())


def try_again_with_his_pin(page: Any, pin: str, ref: str, n: int) -> None:
    """Try again after a door shut on nothing: only his PIN is asked, and the same compartment
    opens (the order waits again)."""
    page.get_by_role("button", name="Try again").click()
    expect(page.locator("#courier-pin-display")).to_have_text("")
    for digit in pin:
        page.get_by_role("button", name=digit, exact=True).click()
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_label("Type the order reference, or scan the order label.")).to_have_value(
        ref
    )
    page.get_by_role("button", name="Open", exact=True).click()
    expect(page.locator("#opened-number")).to_have_text(str(n), timeout=15_000)


def drop_off_by_ids(page: Any, courier: str, pin: str, order_ref: str) -> None:
    """`drop_off` in whatever language the screen is in."""
    page.locator("#go-deliver").click()
    page.locator("#courier-id").fill(courier)
    page.locator("#screen-courier-id button[type=submit]").click()
    for digit in pin:
        page.get_by_role("button", name=digit, exact=True).click()
    page.locator("#courier-pin-next").click()
    page.locator("#courier-order").fill(order_ref)
    page.locator("#screen-courier-order button[type=submit]").click()


class BridgeScreen:
    """Stands in for the bridge's own screen on the kiosk PC (docs/adr/0077): `/state` says
    whether the kiosk is cut off, as the bridge's does; `/` is its page."""

    def __init__(self) -> None:
        self.offline = False
        self.asked_offline = 0  # `/state` answers that said offline
        screen = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/state"):
                    body = json.dumps({"offline": screen.offline}).encode()
                    screen.asked_offline += screen.offline
                    content = "application/json"
                else:
                    body = b"<!doctype html><title>bridge screen</title><p>offline screen</p>"
                    content = "text/html"
                self.send_response(200)
                self.send_header("Content-Type", content)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_a_kiosk_cut_off_with_his_door_open_hands_over_only_once_he_is_done(
    browser: Any, live_service: tuple[ServiceProcess, Seed, ScriptedKiosk]
) -> None:
    """The link goes while the courier's compartment stands open: his screen keeps saying it
    is open and to put the food in (the bridge's offline screen would say deliveries are
    paused), and hands over to the bridge's screen once he touches Done."""
    service, seed, kiosk = live_service
    bridge = BridgeScreen()
    serve_in_background(bridge.server)
    try:
        ref = order_for(service, seed)
        page = kiosk_page(browser, service, seed, f"?offline_screen={bridge.origin}")
        drop_off(page, seed.courier_code, seed.courier_pin, ref)
        number = page.locator("#opened-number")
        expect(number).not_to_have_text("", timeout=15_000)
        n = number.inner_text()
        kiosk.open_door(int(n))  # his door stands open
        bridge.offline = True
        # Asked twice since it went offline: the screen has looked and stayed.
        wait_until(lambda: bridge.asked_offline >= 2, timeout_s=60, what="two looks at /state")
        assert page.url.startswith(service.url)
        expect(number).to_have_text(n)
        expect(page.locator("#opened-hint")).to_have_text("Put the food in and close the door.")
        page.get_by_role("button", name="Done").click()
        page.wait_for_url(f"{bridge.origin}/**", timeout=30_000)
        expect(page.locator("p")).to_have_text("offline screen")
        page.context.close()
    finally:
        bridge.server.shutdown()
        bridge.server.server_close()


def test_a_kiosk_cut_off_mid_request_hands_over_once_the_answer_is_overdue(
    browser: Any, live_service: tuple[ServiceProcess, Seed, ScriptedKiosk]
) -> None:
    """The link goes while his drop-off's answer is on its way and it never comes (a fetch has
    no deadline of its own): "Opening..." stays while an answer may still come, and the screen
    hands over to the bridge's once it is overdue (30 s, on the page's clock)."""
    service, seed, _ = live_service
    bridge = BridgeScreen()
    serve_in_background(bridge.server)
    context = browser.new_context(
        viewport={"width": 800, "height": 1280}, has_touch=True, bypass_csp=True, locale="en-GB"
    )
    try:
        ref = order_for(service, seed)
        page = context.new_page()
        page.clock.install()  # the page's time flows as it does, and can be moved on
        page.route("**/kiosk/dropoff", lambda route: None)  # the answer never comes
        page.goto(f"{service.url}/kiosk?offline_screen={bridge.origin}#token={seed.kiosk_token}")
        page.get_by_role("button", name="Collect food").wait_for()
        drop_off(page, seed.courier_code, seed.courier_pin, ref)
        expect(page.locator("#screen-busy")).to_be_visible()
        bridge.offline = True
        wait_until(lambda: bridge.asked_offline >= 2, timeout_s=60, what="two looks at /state")
        assert page.url.startswith(service.url)
        expect(page.locator("#screen-busy")).to_be_visible()
        page.clock.fast_forward("00:31")
        page.wait_for_url(f"{bridge.origin}/**", timeout=30_000)
    finally:
        context.close()
        bridge.server.shutdown()
        bridge.server.server_close()
