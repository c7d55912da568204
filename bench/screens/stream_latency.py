"""How long a change takes to reach every open dashboard, with 1, 10 and 50 dashboards open.

Runs the service as a process (SQLite), opens N operator streams (`/api/v1/operator/stream`),
then toggles a site's kill switch through the API, 40 times per N, and measures from sending
the request to the moment each stream has the `site` event. The baseline, measured in the same
run and the same loop, is the API call's own round trip (the change committed and answered):
what the stream adds on top is the fan-out through the live hub and SSE.

    python -m bench.screens.stream_latency
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.screens.support import ServiceProcess, seed_database

ROUNDS = 40
DASHBOARDS = (1, 10, 50)
EVENT_TIMEOUT_S = 10.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def listen(
    client: httpx.AsyncClient,
    url: str,
    token: str,
    inbox: asyncio.Queue[float],
    ready: asyncio.Event,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with client.stream("GET", url, headers=headers) as answer:
        event = ""
        async for line in answer.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
                if event == "hello":
                    ready.set()
            elif line.startswith("data: ") and event == "site":
                json.loads(line[6:])
                inbox.put_nowait(time.perf_counter())


async def measure(
    service: ServiceProcess, token: str, site_id: int, n: int
) -> tuple[list[float], list[float], list[float]]:
    limits = httpx.Limits(max_connections=n + 5)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as client:
        inboxes = [asyncio.Queue[float]() for _ in range(n)]
        readies = [asyncio.Event() for _ in range(n)]
        url = f"{service.url}/api/v1/operator/stream"
        tasks = [
            asyncio.create_task(listen(client, url, token, inbox, ready))
            for inbox, ready in zip(inboxes, readies, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
        api_ms, first_ms, all_ms = [], [], []
        headers = {"Authorization": f"Bearer {token}"}
        for i in range(ROUNDS):
            start = time.perf_counter()
            answer = await client.post(
                f"{service.url}/api/v1/operator/sites/{site_id}/kill-switch",
                headers=headers,
                json={"engaged": i % 2 == 0, "reason": "benchmark round"},
            )
            answered = time.perf_counter()
            answer.raise_for_status()
            arrivals = [await asyncio.wait_for(q.get(), EVENT_TIMEOUT_S) for q in inboxes]
            api_ms.append((answered - start) * 1000)
            first_ms.append((min(arrivals) - start) * 1000)
            all_ms.append((max(arrivals) - start) * 1000)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return api_ms, first_ms, all_ms


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'locker.db'}"
        seed = seed_database(url)
        service = ServiceProcess(url, Path(tmp), LOCKER_TIMERS_ENABLED="false").start()
        try:
            print(f"{ROUNDS} kill-switch changes per row; milliseconds from request sent")
            print(
                f"{'dashboards':>10} | {'API answer p50/p99 (baseline)':>30} | "
                f"{'first stream p50/p99':>22} | {'all streams p50/p99':>21}"
            )
            for n in DASHBOARDS:
                api, first, every = asyncio.run(
                    measure(service, seed.operator_token, seed.site_id, n)
                )
                row = [
                    f"{statistics.median(api):6.1f} / {percentile(api, 99):6.1f}",
                    f"{statistics.median(first):6.1f} / {percentile(first, 99):6.1f}",
                    f"{statistics.median(every):6.1f} / {percentile(every, 99):6.1f}",
                ]
                print(f"{n:>10} | {row[0]:>30} | {row[1]:>22} | {row[2]:>21}")
        finally:
            service.stop()


if __name__ == "__main__":
    main()
