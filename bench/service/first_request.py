"""An app's first request: the service's routers served as they were built (`serve_routes`)
against the same routers included with `app.include_router` (the baseline), which builds every
route's handling again for each app on its first request.

Each round builds one app of each kind with the service's API routers and times its first
request and the next: a path no route matches (every route is tried) and `GET /api/v1/orders`
without a key (401). The suite builds an app per test; a replica pays the first request once.

    python -m bench.service.first_request [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

import httpx
from fastapi import APIRouter, FastAPI

from locker_service.api.errors import install_error_handlers
from locker_service.api.routing import serve_routes
from locker_service.main import API_ROUTERS


def included(app: FastAPI, *routers: APIRouter) -> None:
    for router in routers:
        app.include_router(router)


async def timed_requests(build: Callable[..., None]) -> tuple[float, float]:
    app = FastAPI()
    install_error_handlers(app)  # the 401 as the service answers it
    build(app, *API_ROUTERS)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        times = []
        for path in ("/nothing-here", "/api/v1/orders"):
            started = time.perf_counter()
            await client.get(path)
            times.append(time.perf_counter() - started)
    return times[0], times[1]


async def run(rounds: int) -> dict[str, list[tuple[float, float]]]:
    kinds: dict[str, Callable[..., None]] = {
        "include_router": included,
        "serve_routes": serve_routes,
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in kinds}
    for i in range(rounds):
        for name in sorted(kinds, reverse=bool(i % 2)):  # alternate which goes first
            results[name].append(await timed_requests(kinds[name]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    results = asyncio.run(run(args.rounds))
    routes = sum(len(r.routes) for r in API_ROUTERS)
    print(f"{routes} routes in {len(API_ROUTERS)} routers, {args.rounds} apps of each kind")
    for name, times in results.items():
        first = statistics.median(t[0] for t in times) * 1000
        second = statistics.median(t[1] for t in times) * 1000
        print(f"  {name:<15} first request {first:7.2f} ms  next {second:6.2f} ms (medians)")


if __name__ == "__main__":
    main()
