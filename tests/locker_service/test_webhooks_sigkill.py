"""The service SIGKILLed in the middle of a webhook delivery loses nothing: the receiver holds
the first POST open, the service dies under it, and the restarted service sends the same
message again (same `webhook-id`, a valid signature) once the claim's lease has run out."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.locker_service.served import merchant_service
from tests.support.threaded_server import serve_in_background

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WAIT_S = 120.0  # a delivery and a cold restart on two busy cores


class HoldingReceiver:
    """Records every POST; holds the first one open until `release()`."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.first_arrived = threading.Event()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if not receiver.first_arrived.is_set():
                    receiver.first_arrived.set()
                    receiver._release.wait(WAIT_S)
                try:
                    self.send_response(204)
                    self.end_headers()
                except OSError:
                    pass  # the sender died while we held its request

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/locker"
        serve_in_background(self.server)

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


async def test_a_delivery_cut_by_sigkill_is_sent_again_after_the_restart(tmp_path: Path) -> None:
    # A claim whose sender died is taken again after the lease.
    service, world = await merchant_service(tmp_path, LOCKER_WEBHOOK_LEASE_S="2")
    receiver = HoldingReceiver()
    await service.start()
    try:
        async with httpx.AsyncClient(
            base_url=service.url, headers=world.merchant(), timeout=30
        ) as api:
            endpoint = await api.post(
                "/api/v1/webhooks", json={"url": receiver.url, "events": ["order.cancelled"]}
            )
            assert endpoint.status_code == 201, endpoint.text
            secret = endpoint.json()["secret"]
            order = await api.post(
                "/api/v1/orders",
                json=world.order_body("cut-1", purchaser_contact="mailto://mia@example.com"),
            )
            assert order.status_code == 201, order.text
            cancelled = await api.post(f"/api/v1/orders/{order.json()['id']}/cancel")
            assert cancelled.status_code == 200, cancelled.text

            # The delivery is in flight, held by the receiver: the service dies under it.
            arrived = await asyncio.to_thread(receiver.first_arrived.wait, WAIT_S)
            assert arrived, "no delivery came\n" + service.log()
            service.kill()
            receiver.release()
            await service.start()

            deadline = time.monotonic() + WAIT_S
            while len(receiver.posts) < 2:
                assert time.monotonic() < deadline, "not sent again\n" + service.log()
                await asyncio.sleep(0.2)
            (first_headers, first_body), (again_headers, again_body) = receiver.posts[:2]
            assert again_headers["webhook-id"] == first_headers["webhook-id"]  # the same message
            assert again_body == first_body
            Webhook(secret).verify(again_body, again_headers)  # raises if the signature is bad
            assert json.loads(again_body)["type"] == "order.cancelled"

            async def delivered() -> list[Any]:
                params = {"status": "delivered"}
                answer = await api.get("/api/v1/webhooks/deliveries", params=params)
                found: list[Any] = answer.json()
                return found

            while not (done := await delivered()):
                assert time.monotonic() < deadline, "never marked delivered\n" + service.log()
                await asyncio.sleep(0.2)
            assert [d["message_id"] for d in done] == [first_headers["webhook-id"]]
    finally:
        service.kill()
        receiver.close()
