"""The OpenAPI surface fuzzed: every /api/v1 operation gets odd path values and bodies built from
its own schema with hostile values mixed in. Nothing may answer 500, every error is
`{"error", "message"}`, and no made-up code opens a door."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from locker_service.context import ServiceContext
from locker_service.models import DoorOpening
from tests.locker_service.world import FakeKiosk, World, create_order

pytestmark = pytest.mark.slow  # fuzzes every operation

HOSTILE: list[Any] = [
    None,
    "",
    " ",
    "0",
    "-1",
    "00000000",
    "x" * 5000,
    "../../etc/passwd",
    "' OR 1=1 --",
    "\u0000",
    "😀",
    -1,
    0,
    1,
    2**63,
    1.5,
    -1e308,
    True,
    [],
    {},
    [1, "a"],
    {"a": {"b": []}},
]
EXAMPLES_PER_OPERATION = 25


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = spec["components"]["schemas"][name]
    return schema


def _plausible(schema: dict[str, Any], rng: random.Random) -> Any:
    kind = schema.get("type")
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "anyOf" in schema:
        return _plausible(rng.choice(schema["anyOf"]), rng)
    if kind == "string":
        return rng.choice(["a", "abcd", "12345678", "M", "hot", "purchaser lost phone"])
    if kind == "integer":
        return rng.choice([1, 2, 3, 999999])
    if kind == "number":
        return rng.choice([0.0, 65.0])
    if kind == "boolean":
        return rng.choice([True, False])
    return None


def _body(spec: dict[str, Any], schema: dict[str, Any], rng: random.Random) -> Any:
    schema = _resolve(spec, schema)
    if rng.random() < 0.1:
        return rng.choice(HOSTILE)
    body = {}
    for name, prop in schema.get("properties", {}).items():
        roll = rng.random()
        if roll < 0.15:
            continue  # leave it out
        body[name] = rng.choice(HOSTILE) if roll < 0.5 else _plausible(_resolve(spec, prop), rng)
    if rng.random() < 0.1:
        body["unexpected"] = rng.choice(HOSTILE)
    return body


def _path_value(rng: random.Random, real: list[str]) -> str:
    odd = ["0", "-1", "99999999", str(2**31), str(2**63), "abc", "%00", "x" * 300, "1.5"]
    return str(rng.choice([*real, *odd]))


@pytest.mark.parametrize("seed", [1])
async def test_no_operation_fails_with_a_server_error(
    app_client: httpx.AsyncClient,
    world: World,
    service: ServiceContext,
    fake_kiosk: FakeKiosk,
    seed: int,
) -> None:
    rng = random.Random(seed)
    order = await create_order(app_client, world)
    real_ids = [order["id"], str(world.kiosk_id), str(world.site_id), "1", "2"]
    spec = (await app_client.get("/openapi.json")).json()
    auth = {
        **world.merchant(),
        "Authorization": f"Bearer {world.admin_token}",
    }
    kiosk_auth = world.kiosk()
    tried = 0
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/v1/") or "stream" in path:
            continue
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            for _ in range(EXAMPLES_PER_OPERATION):
                url = path
                for part in [p for p in path.split("/") if p.startswith("{")]:
                    url = url.replace(part, _path_value(rng, real_ids))
                headers = kiosk_auth if path.startswith("/api/v1/kiosk/") else auth
                kwargs: dict[str, Any] = {"headers": headers}
                if schema is not None:
                    kwargs["json"] = _body(spec, schema, rng)
                answer = await app_client.request(method.upper(), url, **kwargs)
                tried += 1
                assert answer.status_code < 500, (method, url, kwargs.get("json"), answer.text)
                if answer.status_code >= 400:
                    assert set(answer.json()) == {"error", "message"}, answer.text
    assert tried > 200
    async with service.sessionmaker() as session:
        by_code = (
            await session.scalars(select(DoorOpening).where(DoorOpening.who.like("purchaser%")))
        ).all()
        remote = (
            await session.scalars(select(DoorOpening).where(DoorOpening.who.like("operator:%")))
        ).all()
    assert by_code == []
    assert len(fake_kiosk.unlocks()) == len(remote)  # only operators' (audited) openings


# -- schemathesis, on PostgreSQL, as every principal ----------------------------------------------

# Examples per operation and principal, in each of schemathesis' positive and negative modes:
# 21 operations x 8 principals x 2-3 strategies x 6: about 2,100 requests, about a minute here.
SCHEMATHESIS_EXAMPLES = 6
STREAMS = ("/api/v1/operator/stream", "/api/v1/kiosk/stream")  # never end: not fuzzed


def _principals(world: World, purchaser_token: str) -> dict[str, dict[str, str]]:
    """Headers of each kind of caller, named; the purchaser is known by the token in the path."""
    bearer = "authorization"  # as the operations name the header, so generation leaves it be
    return {
        "merchant": {"X-API-Key": world.merchant_key},
        "kiosk": {bearer: f"Bearer {world.kiosk_token}"},
        "admin": {bearer: f"Bearer {world.admin_token}"},
        "operator": {bearer: f"Bearer {world.operator_token}"},
        "viewer": {bearer: f"Bearer {world.viewer_token}"},
        "other-site operator": {bearer: f"Bearer {world.other_operator_token}"},
        "purchaser": {},  # with `purchaser_token` as every `{token}`
        "nobody": {},
    }


def _fuzz(
    operation: Any,
    strategies: list[Any],
    http: Any,
    base_url: str,
    who: str,
    failures: list[str],
) -> int:
    """Send SCHEMATHESIS_EXAMPLES cases per strategy; note each server error; how many sent."""
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hypothesis_settings
    from hypothesis import strategies as st

    sent = 0

    @hypothesis_settings(
        max_examples=SCHEMATHESIS_EXAMPLES * len(strategies),
        deadline=None,
        database=None,
        derandomize=True,  # the same cases on every run: a red CI run can be replayed
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies))
    def probe(case: Any) -> None:
        nonlocal sent
        answer = case.call(base_url=base_url, session=http)
        sent += 1
        if answer.status_code >= 500:
            failures.append(
                f"{who}: {case.method} {answer.request.url} -> {answer.status_code} "
                f"{answer.content[:200]!r}"
            )

    probe()
    return sent


@pytest.mark.postgres
@pytest.mark.slow
# About a minute of CPU, which stretches with the machine's load: with eight workers it outran
# the suite's 300 s guard against a hang. This guard is the same kind, not a budget.
@pytest.mark.timeout(900)
def test_schemathesis_finds_no_server_error(pg_database_url: str) -> None:
    import requests
    import schemathesis

    from locker_service.main import create_app
    from tests.locker_service.conftest import make_settings
    from tests.locker_service.world import seed
    from tests.support.threaded_server import ThreadedServer

    settings = make_settings(pg_database_url)
    app = create_app(settings)
    failures: list[str] = []
    sent = 0
    with ThreadedServer(app) as server:
        ctx: ServiceContext = app.state.ctx
        ctx.commander = FakeKiosk()
        world = server.run(seed(ctx.sessionmaker, settings))
        created = httpx.post(
            f"{server.url}/api/v1/orders", json=world.order_body(), headers=world.merchant()
        )
        assert created.status_code == 201, created.text
        order = created.json()
        purchaser_token = str(order["purchaser_url"]).rsplit("/p/", 1)[1]
        real_ids = {
            "order_id": order["id"],
            "kiosk_id": world.kiosk_id,
            "site_id": world.site_id,
            "compartment_id": 1,
            "alert_id": 1,
        }
        schema = schemathesis.openapi.from_dict(app.openapi())
        operations = [
            result.ok() for result in schema.get_all_operations() if result.ok().path not in STREAMS
        ]
        assert len(operations) >= 20
        # Rotating and revoking keys last, and the admin (who may revoke anyone's) after every
        # other principal: a fuzzed key id may be a principal's own key, and a principal whose
        # key was revoked would be fuzzed with 401s only.
        operations.sort(key=lambda o: "{key_id}" in o.path)
        with requests.Session() as http:
            for who, headers in sorted(
                _principals(world, purchaser_token).items(), key=lambda p: p[0] == "admin"
            ):
                for operation in operations:
                    names = {p.name for p in operation.path_parameters}
                    fixed = {k: v for k, v in real_ids.items() if k in names}
                    if who == "purchaser" and "token" in names:
                        fixed["token"] = purchaser_token
                    strategies = [
                        operation.as_strategy(mode, headers=headers or None)
                        for mode in schemathesis.GenerationMode
                    ]
                    if fixed:  # reach past "not found" as well
                        strategies.append(
                            operation.as_strategy(headers=headers or None, path_parameters=fixed)
                        )
                    sent += _fuzz(operation, strategies, http, server.url, who, failures)
    assert failures == [], "\n".join(failures[:20])
    print(f"\nschemathesis: {sent} requests, no server error")
    assert sent > 1500
