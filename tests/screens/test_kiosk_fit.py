"""The kiosk screen fits the kiosks' landscape displays: every step, both languages, no scrolling.

At 1024x768 and 1280x800 every button and field of every step (start, courier ID, PIN, order,
the result, the purchaser's keypad, the refusals) lies inside the window, is not covered by
anything, keeps the kiosk's 72 px touch size, and the document does not scroll. The steps are
reached the way a courier and a purchaser reach them, against the service with a kiosk online.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.screens.support import Seed, ServiceProcess
from tests.support.scripted_kiosk import ScriptedKiosk

pytestmark = [pytest.mark.browser]

MIN_TOUCH_PX = 72  # the kiosk's own rule (app.css)
VIEWPORTS = [(1024, 768), (1280, 800)]  # the landscape kiosk displays we ship for

# Everything a person may touch on the step now shown: outside the window, under something
# else (the point at its centre hits another element), smaller than a touch target, or a
# document that scrolls. Fixed overlays are not "visible" to offsetParent, so they are checked
# as what may cover a control, not as controls.
PROBLEMS_JS = """
minTouch => {
  const problems = [];
  const vw = window.innerWidth, vh = window.innerHeight;
  const doc = document.scrollingElement;
  if (doc.scrollHeight > vh) problems.push(`the page scrolls: ${doc.scrollHeight} > ${vh} px`);
  if (doc.scrollWidth > vw) problems.push(`the page scrolls sideways: ${doc.scrollWidth} px`);
  const controls = document.querySelectorAll('#kiosk button, #kiosk input');
  for (const el of controls) {
    if (el.offsetParent === null) continue;
    const r = el.getBoundingClientRect();
    const name = el.textContent.trim() || el.id || el.dataset.key || el.tagName;
    if (r.top < 0 || r.left < 0 || r.bottom > vh || r.right > vw) {
      problems.push(`${name} lies outside the window: ${JSON.stringify(r)}`);
      continue;
    }
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    if (!el.contains(hit)) {
      problems.push(`${name} is covered by ${hit && (hit.id || hit.className)}`);
    }
    if (el.tagName === 'BUTTON' && Math.min(r.width, r.height) < minTouch) {
      problems.push(`${name} is ${Math.round(r.width)}x${Math.round(r.height)} px`);
    }
  }
  return problems;
}
"""

WORDS = {
    "en": {
        "wrong_pin": "Courier ID or PIN is wrong.",
        "no_order": "No order with this reference is waiting at this locker.",
        "bad_code": "This code does not open anything here. Please check it and try again.",
        "opened": "Compartment {n} is open",
    },
    "zh-Hans": {
        "wrong_pin": "骑手编号或密码错误。",
        "no_order": "本柜没有待存入的该订单。",
        "bad_code": "该取餐码无法在此开柜，请检查后重试。",
        "opened": "{n} 号柜门已打开",
    },
}


def assert_fits(page: Any, step: str) -> None:
    problems = page.evaluate(PROBLEMS_JS, MIN_TOUCH_PX)
    assert problems == [], f"{step}: {problems}"


def press(page: Any, screen: str, digits: str) -> None:
    for digit in digits:
        page.locator(f"#screen-{screen} .key[data-key='{digit}']").click()


def new_order(service: ServiceProcess, seed: Seed) -> str:
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


@pytest.mark.parametrize(("width", "height"), VIEWPORTS, ids=["1024x768", "1280x800"])
def test_every_step_fits_without_scrolling_in_both_languages(
    browser: Any,
    live_service: tuple[ServiceProcess, Seed, ScriptedKiosk],
    screenshots: Path,
    width: int,
    height: int,
) -> None:
    service, seed, _ = live_service
    context = browser.new_context(
        viewport={"width": width, "height": height}, has_touch=True, locale="en-GB"
    )
    page = context.new_page()
    page.goto(f"{service.url}/kiosk#token={seed.kiosk_token}")
    page.locator("#go-collect").wait_for()
    error = page.locator("#error-text")
    size = f"{width}x{height}"

    for lang, words in WORDS.items():
        page.locator(f"button.lang[data-lang='{lang}']").click()
        expect(page.locator("html")).to_have_attribute("lang", lang)
        assert_fits(page, f"start {lang} {size}")

        page.locator("#go-deliver").click()
        assert_fits(page, f"courier ID {lang} {size}")
        page.locator("#courier-id").fill(seed.courier_code)
        page.locator("#screen-courier-id button[type=submit]").click()
        press(page, "courier-pin", "999999")
        assert_fits(page, f"PIN {lang} {size}")
        page.locator("#courier-pin-next").click()
        page.locator("#courier-order").fill("NO-SUCH-ORDER")
        assert_fits(page, f"order {lang} {size}")
        page.locator("#courier-order-form button[type=submit]").click()
        expect(error).to_have_text(words["wrong_pin"])
        assert_fits(page, f"refusal: wrong PIN {lang} {size}")

        page.locator("#error-retry").click()
        press(page, "courier-pin", seed.courier_pin)
        page.locator("#courier-pin-next").click()
        page.locator("#courier-order-form button[type=submit]").click()
        expect(error).to_have_text(words["no_order"])
        assert_fits(page, f"refusal: unknown order {lang} {size}")

        page.locator("#error-retry").click()
        page.locator("#courier-order").fill(new_order(service, seed))
        page.locator("#courier-order-form button[type=submit]").click()
        expect(page.locator("#screen-opened")).to_be_visible()
        n = page.locator("#opened-number").inner_text()
        assert re.fullmatch(r"\d+", n), n
        expect(page.locator("#opened-title")).to_have_text(words["opened"].format(n=n))
        assert_fits(page, f"result {lang} {size}")
        page.screenshot(path=screenshots / f"kiosk-opened-{lang}-{size}.png")
        page.locator("#screen-opened button.primary").click()
        expect(page.locator("html")).to_have_attribute("lang", "en")  # "Done": the next person

        page.locator(f"button.lang[data-lang='{lang}']").click()
        page.locator("#go-collect").click()
        press(page, "pickup", "1234567")
        assert_fits(page, f"purchaser keypad {lang} {size}")
        page.screenshot(path=screenshots / f"kiosk-keypad-{lang}-{size}.png")
        press(page, "pickup", "8")
        page.locator("#pickup-open").click()
        expect(error).to_have_text(words["bad_code"])
        assert_fits(page, f"refusal: wrong code {lang} {size}")
        page.locator("#screen-error button[data-action=home]").click()
    context.close()


@pytest.mark.parametrize(("width", "height"), VIEWPORTS, ids=["1024x768", "1280x800"])
def test_the_start_screens_notice_covers_nothing_and_leaves_the_steps(
    browser: Any, seeded_service: tuple[ServiceProcess, Seed], width: int, height: int
) -> None:
    service, seed = seeded_service  # its kiosk link is off: the screen says so on the start
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-GB")
    page = context.new_page()
    page.goto(f"{service.url}/kiosk#token={seed.kiosk_token}")
    notice = page.locator("#kiosk-notice")
    expect(notice).to_be_visible()
    for lang in WORDS:
        page.locator(f"button.lang[data-lang='{lang}']").click()
        assert_fits(page, f"start with the notice {lang}")
    page.locator("#go-collect").click()
    expect(notice).to_be_hidden()  # laid over the bottom edge, it would cover Back and Open
    assert_fits(page, "purchaser keypad with the kiosk offline")
    page.locator("#screen-pickup button[data-action=home]").click()
    expect(notice).to_be_visible()
    context.close()
