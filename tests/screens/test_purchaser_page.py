"""The purchaser's page `/p/{token}` in a phone-sized browser: status, codes, language, a11y.

The order is made through the merchant API of a real service process; the states after
`created` are reached by the service's own story in the full-story test, so here the page is
checked as a purchaser sees it right after ordering, and for a link that is not valid.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.screens.support import Seed, ServiceProcess, serious_accessibility_violations

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True}


def create_order(service: ServiceProcess, seed: Seed, site_code: str) -> dict[str, Any]:
    answer = service.api(
        "POST",
        "/api/v1/orders",
        headers={"X-API-Key": seed.merchant_key},
        json={
            "external_ref": f"NB-{uuid.uuid4().hex[:6]}",
            "site": site_code,
            "purchaser_name": "Pat Purchaser",
            "purchaser_contact": "json://127.0.0.1:9/never",
            "size": "M",
            "temperature_class": "hot",
        },
    )
    assert answer.status_code == 201, answer.text
    order: dict[str, Any] = answer.json()
    return order


def site_code(service: ServiceProcess, seed: Seed) -> str:
    sites = service.api("GET", "/api/v1/operator/sites", seed.operator_token).json()
    return str(sites[0]["code"])


def test_page_after_ordering_in_both_languages_on_a_phone(
    browser: Any,
    seeded_service: tuple[ServiceProcess, Seed],
    axe_source: str,
    screenshots: Path,
) -> None:
    service, seed = seeded_service
    order = create_order(service, seed, site_code(service, seed))
    path = "/p/" + order["purchaser_url"].rsplit("/p/", 1)[1]

    context = browser.new_context(**PHONE, bypass_csp=True, locale="en-GB")
    page = context.new_page()
    response = page.goto(service.url + path)
    assert response is not None and response.status == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    page.get_by_role("heading", name="Your food order").wait_for()
    assert page.locator("#status").inner_text() == "Order received, waiting for the courier"
    assert page.locator("#site").inner_text() == seed.site_name
    assert order["external_ref"] in page.content()
    # No code and no QR before the food is ready: they would open nothing yet.
    assert page.locator("img.qr").count() == 0
    assert page.locator("#fallback-code").count() == 0
    # Readable on a phone: nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert serious_accessibility_violations(page, axe_source) == []
    page.screenshot(path=screenshots / "purchaser-created-en.png", full_page=True)

    page.get_by_role("link", name="中文").click()
    page.get_by_role("heading", name="您的外卖订单").wait_for()
    assert page.evaluate("document.documentElement.lang") == "zh-Hans"
    assert page.locator("#status").inner_text() == "已接单，等待骑手送达"
    assert serious_accessibility_violations(page, axe_source) == []
    context.close()

    chinese_phone = browser.new_context(**PHONE, locale="zh-CN")
    page = chinese_phone.new_page()
    page.set_extra_http_headers({"Accept-Language": "zh-CN,zh;q=0.9"})
    page.goto(service.url + path)
    page.get_by_role("heading", name="您的外卖订单").wait_for()

    # The merchant cancels: the page says so, in her language, and stops asking.
    cancelled = service.api(
        "POST",
        f"/api/v1/orders/{order['id']}/cancel",
        headers={"X-API-Key": seed.merchant_key},
    )
    assert cancelled.status_code == 200, cancelled.text
    page.reload()
    assert page.locator("#status").inner_text() == "已取消"
    assert page.locator("#status").get_attribute("class") == "status status-cancelled"
    chinese_phone.close()


def test_an_invalid_link_gets_a_clear_page_and_no_qr(
    browser: Any, seeded_service: tuple[ServiceProcess, Seed], axe_source: str
) -> None:
    service, _seed = seeded_service
    context = browser.new_context(**PHONE, bypass_csp=True)
    page = context.new_page()
    for token in ["not-a-token", "A" * 43, "x" * 500]:
        response = page.goto(f"{service.url}/p/{token}")
        assert response is not None and response.status == 404
        page.get_by_role("heading", name="Order not found").wait_for()
    assert serious_accessibility_violations(page, axe_source) == []
    assert service.api("GET", f"/p/{'A' * 43}/qr.png").status_code == 404
    context.close()
