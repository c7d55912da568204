"""The API reference in a browser with no way out to the internet: `/docs` draws every operation
from the service's own copy of Swagger UI (it was blank: "SwaggerUIBundle is not defined")."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.screens.support import Seed, ServiceProcess


def test_the_reference_renders_with_nothing_loaded_from_outside(
    browser: Any, seeded_service: tuple[ServiceProcess, Seed]
) -> None:
    service, _seed = seeded_service
    context = browser.new_context()
    outside: list[str] = []

    def only_the_service(route: Any) -> None:
        if route.request.url.startswith(service.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_service)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{service.url}/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.get_by_text("/api/v1/kiosk/pickup", exact=True)).to_be_visible()
    expect(page.locator(".auth-wrapper .authorize")).to_be_visible()  # the security schemes
    assert outside == [] and errors == []
    context.close()
