"""The OpenAPI document as an integrator reads it: who may call each operation (security
schemes, instead of an optional, undescribed `authorization` header), the one error body, and
the refusals each operation can answer besides 200 and 422 (the codes: docs/contracts/rest.md).

FastAPI builds the document from the routes; `install` post-processes it once, on first read.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

DESCRIPTION = """\
Orders from merchants, drop-offs and pickups at kiosks, and the operators' view of the lockers.

Every refusal is `{"error": code, "message": text}` with a stable `code`: the table of codes,
their statuses and what to do is docs/contracts/rest.md in the repository. A 429 carries
`Retry-After` (seconds). Order and compartment states and their steps: docs/contracts/lifecycles.md.
"""

SCHEMES: dict[str, dict[str, Any]] = {
    "kioskToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A kiosk's token (`lockerctl up` prints the demo kiosk's).",
    },
    "operatorToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "An operator's, viewer's or admin's token, scoped to sites.",
    },
    "merchantKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "A merchant's API key.",
    },
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "a stable code, e.g. `invalid_code`"},
        "message": {"type": "string", "description": "for people; may change"},
        "compartment": {
            "type": "integer",
            "description": "the compartment a person must look at (`dropoff_unconfirmed`, "
            "`dropoff_in_progress`)",
        },
        "kiosk": {
            "type": "string",
            "description": "the kiosk, by its name, where that compartment is "
            "(`dropoff_in_progress`)",
        },
    },
}

_REFUSALS = {
    "401": "No or unknown credential (`unauthorized`).",
    "403": "Not allowed for this caller, or not at this site.",
    "404": "No such resource within the caller's scope.",
    "409": "The state does not allow it now (`invalid_transition` and others).",
    "422": "The input does not validate (`validation_error`) or is not acceptable here.",
    "429": "Throttled: wait `Retry-After` seconds.",
    "503": "The kiosk or the database cannot be reached now; nothing was done.",
    "504": "The kiosk took the command but gave no final answer in time.",
}
_CREDENTIAL_HEADERS = {"authorization", "x-api-key"}
_MUTATING = {"post", "put", "patch", "delete"}
# Throttled, and each opens a door through the kiosk (as does an operator's `.../open`).
_AT_THE_KIOSK = ("/api/v1/kiosk/pickup", "/api/v1/kiosk/dropoff")


def _scheme_of(path: str, header: str) -> str:
    if header == "x-api-key":
        return "merchantKey"
    return "kioskToken" if path.startswith("/api/v1/kiosk") else "operatorToken"


def _refusal(status: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _REFUSALS[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if status == "429":
        response["headers"] = {
            "Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}
        }
    return response


def _document_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    parameters = operation.get("parameters", [])
    credentials = [
        p["name"].lower()
        for p in parameters
        if p.get("in") == "header" and p["name"].lower() in _CREDENTIAL_HEADERS
    ]
    kept = [
        p
        for p in parameters
        if not (p.get("in") == "header" and p["name"].lower() in _CREDENTIAL_HEADERS)
    ]
    if kept:
        operation["parameters"] = kept
    else:
        operation.pop("parameters", None)
    statuses: list[str] = []
    if credentials:
        operation["security"] = [{_scheme_of(path, header): []} for header in credentials]
        statuses += ["401", "403"]
    if "{" in path:
        statuses.append("404")
    if method in _MUTATING:
        statuses.append("409")
    if path.startswith(_AT_THE_KIOSK):
        statuses.append("429")
    if method in _MUTATING and (path.startswith(_AT_THE_KIOSK) or path.endswith("/open")):
        statuses += ["503", "504"]
    responses = operation.setdefault("responses", {})
    for status in statuses:
        responses.setdefault(status, _refusal(status))
    if "422" in responses or "requestBody" in operation or operation.get("parameters"):
        # The service's own body, not FastAPI's `{"detail": [...]}` (api/errors.py).
        responses["422"] = _refusal("422")


def document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of `app`, with security schemes and refusals."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=DESCRIPTION, routes=app.routes
    )
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(SCHEMES)
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if isinstance(operation, dict):
                _document_operation(path, method, operation)
    app.openapi_schema = schema
    return schema


def install(app: FastAPI) -> None:
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
