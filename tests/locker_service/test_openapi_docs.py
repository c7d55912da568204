"""The API reference an integrator reads: `/docs` works with no internet, the OpenAPI says who
may call what and how each operation refuses, and every error code is in docs/contracts/rest.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parents[2]


async def test_the_reference_page_and_its_assets_come_from_the_service(
    app_client: httpx.AsyncClient,
) -> None:
    page = await app_client.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text and "https://" not in page.text  # nothing from outside
    assets = re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page.text)
    assert {Path(a).name for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for asset in assets:
        answer = await app_client.get(asset)
        assert answer.status_code == 200, asset
        assert answer.content, asset
    assert (await app_client.get("/redoc")).status_code == 404  # no CDN-only page left


async def test_each_operation_says_who_may_call_it_and_how_it_refuses(
    app_client: httpx.AsyncClient,
) -> None:
    schema: dict[str, Any] = (await app_client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["merchantKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "A merchant's API key.",
    }
    assert schemes["kioskToken"]["scheme"] == schemes["operatorToken"]["scheme"] == "bearer"
    paths = schema["paths"]
    for path, item in paths.items():
        for method, operation in item.items():
            headers = {p["name"].lower() for p in operation.get("parameters", [])}
            assert not headers & {"authorization", "x-api-key"}, (path, method)
    assert paths["/api/v1/orders"]["post"]["security"] == [{"merchantKey": []}]
    pickup = paths["/api/v1/kiosk/pickup"]["post"]
    assert pickup["security"] == [{"kioskToken": []}]
    assert set(pickup["responses"]) >= {"200", "401", "403", "409", "422", "429", "503", "504"}
    assert "Retry-After" in pickup["responses"]["429"]["headers"]
    assert pickup["responses"]["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    opened = paths["/api/v1/operator/compartments/{compartment_id}/open"]["post"]
    assert opened["security"] == [{"operatorToken": []}]
    assert set(opened["responses"]) >= {"401", "403", "404", "409", "503", "504"}
    error = {"$ref": "#/components/schemas/Error"}
    created = paths["/api/v1/orders"]["post"]["responses"]
    assert created["422"]["content"]["application/json"]["schema"] == error  # not FastAPI's
    assert pickup["responses"]["422"]["content"]["application/json"]["schema"] == error
    assert "security" not in paths["/healthz"]["get"]  # open to all
    assert schema["components"]["schemas"]["Error"]["required"] == ["error", "message"]


def _codes_raised() -> set[str]:
    """Every error code the service's code names: class attributes and `code=` arguments."""
    found: set[str] = set()
    for source in (ROOT / "locker_service").rglob("*.py"):
        found |= set(re.findall(r'\bcode ?= ?"([a-z_]+)"', source.read_text()))
    handlers = (ROOT / "locker_service" / "api" / "errors.py").read_text()
    found |= set(re.findall(r'error_body\("([a-z_]+)"', handlers))
    found |= set(re.findall(r'\d{3}: "([a-z_]+)"', handlers))
    return found


def test_every_error_code_is_in_the_rest_contract() -> None:
    rest = (ROOT / "docs" / "contracts" / "rest.md").read_text()
    table = rest[rest.index("## Error codes") :]
    documented = set(re.findall(r"`([a-z_]+)`", table))
    raised = _codes_raised()
    assert {"invalid_code", "locked_out", "door_unlocked", "validation_error"} <= raised
    assert raised - documented == set()


def test_the_app_serves_every_route_as_its_router_built_it(service_app: FastAPI) -> None:
    """No route is built again per app (`serve_routes`): each of the app's routes is the very
    one its router made at import, so an app's first request costs what the next does."""
    from locker_service.main import API_ROUTERS
    from locker_service.web import audit_page, pages, stream_endpoint

    routers = [*API_ROUTERS, pages.router, audit_page.router, stream_endpoint.router]
    built = [id(route) for router in routers for route in router.routes]
    served = {id(route) for route in service_app.routes}
    assert built and all(route in served for route in built)
    paths = {getattr(route, "path", None) for route in service_app.routes}
    assert {"/api/v1/orders", "/api/v1/operator/stream", "/dashboard", "/healthz"} <= paths
