"""Orders created per second on PostgreSQL, beside a bare FastAPI endpoint in the same run.

Goal (issue 4): the service reaches at least 40 % of the bare endpoint's rate.

Both are served by uvicorn (one process, same options) as child processes; the load is
`--concurrency` HTTP/1.1 clients with keep-alive posting distinct orders for `--seconds` each,
after a warm-up. The service runs as deployed (`create_app`, PostgreSQL via asyncpg, timers on)
with the kiosk link and the notification worker off: creating an order touches neither.

    python -m bench.service.orders_api [--seconds 10] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import insert

from bench.service.telemetry_ingest import create_database, drop_database, percentile
from locker_service.credentials import store as keys
from locker_service.db import create_engine, create_sessionmaker
from locker_service.models import Merchant, Site, merchant_sites
from migrations import upgrade_async
from tests.support.mosquitto import free_port, wait_for_port

WARMUP_S = 2.0
REQUEST_TIMEOUT_S = 30.0  # a stalled server shows up as errors, not as a hung benchmark


def start_uvicorn(
    target: str, port: int, env: dict[str, str], factory: bool
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "uvicorn", target,
        "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    if factory:
        args.append("--factory")
    proc = subprocess.Popen(args, env={**os.environ, **env})
    wait_for_port("127.0.0.1", port, timeout_s=30)
    return proc


def order_body(tag: str, site: str) -> dict[str, Any]:
    return {
        "external_ref": f"bench-{tag}-{uuid.uuid4().hex[:12]}",
        "site": site,
        "purchaser_name": "Li Na",
        "purchaser_contact": "li.na@example.com",
        "size": "M",
        "temperature_class": "hot",
    }


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client: the load generator must cost far less CPU than the
    servers it measures (httpx spends more per request than the bare endpoint does)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"{head}Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value.strip())
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def load(
    port: int, headers: dict[str, str], site: str, seconds: float, concurrency: int
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    connections = [await RawConnection.open(port) for _ in range(concurrency)]

    async def worker(connection: RawConnection, until: float, record: bool) -> None:
        nonlocal errors
        tag = uuid.uuid4().hex[:6]
        while time.perf_counter() < until:
            body = json.dumps(order_body(tag, site)).encode()
            started = time.perf_counter()
            try:
                status, _ = await asyncio.wait_for(
                    connection.post("/api/v1/orders", headers, body), REQUEST_TIMEOUT_S
                )
            except TimeoutError:
                errors += 1
                return  # the connection is in an unknown state: this client stops
            if status != 201:
                errors += 1
            elif record:
                latencies.append(time.perf_counter() - started)

    try:
        warm_until = time.perf_counter() + WARMUP_S
        await asyncio.gather(*(worker(c, warm_until, False) for c in connections))
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(worker(c, until, True) for c in connections))
        elapsed = time.perf_counter() - started
    finally:
        for c in connections:
            c.close()
    return {
        "rate": len(latencies) / elapsed,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "errors": errors,
    }


async def run(seconds: float, concurrency: int) -> dict[str, Any]:
    url, name = await create_database()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await upgrade_async(url)
        engine = create_engine(url)
        api_key = f"mk_{uuid.uuid4().hex}"
        site_code = f"bench-{uuid.uuid4().hex[:6]}"
        async with create_sessionmaker(engine)() as session, session.begin():
            site = Site(code=site_code, name="Bench Tower")
            merchant = Merchant(name="Bench Kitchen")
            session.add_all([site, merchant])
            await session.flush()
            session.add(keys.row_for(keys.Owner("merchant", merchant.id), api_key))
            await session.execute(
                insert(merchant_sites).values(merchant_id=merchant.id, site_id=site.id)
            )
        await engine.dispose()

        service_port = free_port()
        procs.append(
            start_uvicorn(
                "locker_service.main:create_app",
                service_port,
                {
                    "LOCKER_DATABASE_URL": url,
                    "LOCKER_ENVIRONMENT": "test",
                    "LOCKER_SECRET_KEY": "bench-" + "k" * 40,
                    "LOCKER_MIGRATE_ON_START": "false",
                    "LOCKER_KIOSK_LINK_ENABLED": "false",
                    "LOCKER_NOTIFY_ENABLED": "false",
                },
                factory=True,
            )
        )
        service = f"http://127.0.0.1:{service_port}"
        headers = {"X-API-Key": api_key}
        async with httpx.AsyncClient(base_url=service, headers=headers) as client:
            sample = await client.post("/api/v1/orders", json=order_body("sample", site_code))
            sample.raise_for_status()
        bare_port = free_port()
        procs.append(
            start_uvicorn(
                "bench.service.bare_app:app",
                bare_port,
                {"BENCH_ORDER_ANSWER": json.dumps(sample.json())},
                factory=False,
            )
        )
        bare = await load(bare_port, headers, site_code, seconds, concurrency)
        real = await load(service_port, headers, site_code, seconds, concurrency)
        return {"bare": bare, "service": real}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        await drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    r = asyncio.run(run(args.seconds, args.concurrency))
    print(
        f"orders API, {args.concurrency} concurrent clients, {args.seconds:g} s each "
        f"({os.cpu_count()} CPUs, load generator on the same machine)"
    )
    for label, key in (("baseline bare FastAPI", "bare"), ("service on PostgreSQL", "service")):
        m = r[key]
        print(
            f"  {label:<24} {m['rate']:>8,.0f} orders/s   p50 {m['p50'] * 1000:6.1f} ms   "
            f"p99 {m['p99'] * 1000:6.1f} ms   errors {m['errors']:.0f}"
        )
    ratio = r["service"]["rate"] / r["bare"]["rate"]
    print(f"  service / bare = {ratio:.0%} (goal >= 40 %: {'met' if ratio >= 0.4 else 'NOT met'})")


if __name__ == "__main__":
    main()
